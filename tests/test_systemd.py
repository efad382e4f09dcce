"""The shipped systemd unit (conf/onajimi.service): systemd itself checks it, and what it
runs works as it says (ONAJIMI_CONFIG names the configuration for every command)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "conf" / "onajimi.service"
ONAJIMI = Path(sys.executable).parent / "onajimi"


def settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_unit_runs_unprivileged_with_only_the_port_25_capability() -> None:
    unit = settings(UNIT.read_text())
    assert unit["User"] == ["onajimi"] and unit["NoNewPrivileges"] == ["yes"]
    assert unit["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert unit["StateDirectory"] == ["onajimi"] and unit["ProtectSystem"] == ["strict"]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert unit["RestartPreventExitStatus"] == ["2"]  # a bad config: restarting will not help


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = UNIT.read_text().replace("/opt/onajimi/bin/onajimi", str(ONAJIMI))
    (tmp_path / "onajimi.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "onajimi.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_onajimi_config_names_the_configuration_of_every_command(tmp_path: Path) -> None:
    env = {**os.environ, "ONAJIMI_CONFIG": str(ROOT / "conf" / "gateway.toml")}
    ok = subprocess.run([ONAJIMI, "check"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    env["ONAJIMI_CONFIG"] = str(tmp_path / "missing.toml")
    bad = subprocess.run([ONAJIMI, "check"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "missing.toml" in bad.stderr
