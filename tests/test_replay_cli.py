"""`onajimi replay` as an operator runs it: the text, --json, --format, exit codes."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

from tests.conftest import CONF
from tests.test_cli import ONAJIMI, assert_one_line_error, run
from tests.test_replay_logs import DECISIONS, FIXTURE

SHIPPED = str(CONF / "gateway.toml")


def test_the_text_says_what_became_of_the_fixture() -> None:
    result = run("replay", str(FIXTURE), "-c", SHIPPED)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"onajimi replay: {FIXTURE} (postfix) with {SHIPPED}\n")
    assert "log: 31 lines: 18 used, 11 ignored, 2 unreadable (lines 30, 31)" in out
    assert "mail the log accepted: 4 messages" in out
    counts = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.startswith("  ") and line.split()[0] in ("delayed", "waiting", "refused")
    }
    assert counts == {"delayed": "1", "waiting": "1", "refused": "0"}
    delayed = next(line for line in out.splitlines() if "<carol@example.com>" in line)
    assert "198.51.100.7 p1234-ip45.dyn.example.jp" in delayed and "+6m00s" in delayed
    waiting = next(line for line in out.splitlines() if "<frank@example.com>" in line)
    assert "defer/s25r_rule0" in waiting and "none after 5m00s" in waiting
    assert "  onajimi allow add p1234-ip45.dyn.example.jp " in out
    assert "store at the end: 5 records (familiar 1, pending 1, strikes 1, trace 2)" in out


def test_json_has_every_figure(tmp_path: Path) -> None:
    result = run("replay", str(FIXTURE), "-c", SHIPPED, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["config"] == SHIPPED
    assert data["log"]["unreadable"] == 2 and data["log"]["unreadable_lines"] == [30, 31]
    assert data["messages"]["accepted_in_log"] == 4
    assert data["messages"]["added_delay"] == {"p50": 360.0, "p90": 360.0, "max": 360.0}
    (delayed,) = data["delayed"]
    assert (delayed["client"], delayed["to"], delayed["added"]) == (
        "198.51.100.7",
        ["carol@example.com"],
        360.0,
    )
    (waiting,) = data["waiting"]
    assert waiting["client"] == "192.0.2.99" and waiting["accepted"] is None
    assert data["clients"]["total"] == 4 and data["clients"]["refused"] == 1


def test_a_decision_log_from_standard_input() -> None:
    result = subprocess.run(
        [*ONAJIMI, "replay", "-", "--format", "onajimi", "-c", SHIPPED, "--json"],
        input=DECISIONS.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["log"]["format"] == "onajimi" and data["log"]["unreadable"] == 1
    assert data["messages"]["on time"] == 2


def test_a_compressed_log_is_read_as_such(tmp_path: Path) -> None:
    packed = tmp_path / "maillog.1.gz"
    packed.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    result = run("replay", str(packed), "-c", SHIPPED, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["log"]["lines"] == 31


def test_a_log_that_cannot_be_read_is_one_line_and_status_2(tmp_path: Path) -> None:
    missing = run("replay", str(tmp_path / "nope.log"), "-c", SHIPPED)
    assert_one_line_error(missing, "nope.log: cannot open the log: No such file or directory")
    directory = run("replay", str(tmp_path), "-c", SHIPPED)
    assert_one_line_error(directory, f"{tmp_path}: cannot ")
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"not gzip at all")
    assert_one_line_error(run("replay", str(broken), "-c", SHIPPED), "cannot read the log")


def test_usage_errors_are_status_2(tmp_path: Path) -> None:
    assert_one_line_error(run("replay", str(FIXTURE), "--format", "exim"), "invalid choice")
    assert_one_line_error(run("replay"), "LOG")
    bad = tmp_path / "bad.toml"
    bad.write_text('[relay]\naccept_domains = ["example.com"]\n[policy]\nno_such_key = 1\n')
    assert_one_line_error(run("replay", str(FIXTURE), "-c", str(bad)), "no_such_key")


def test_garbage_is_counted_never_fatal(tmp_path: Path) -> None:
    log = tmp_path / "garbage.log"
    log.write_bytes(b"\xff\xfe binary\x00junk\n" * 3 + FIXTURE.read_bytes()[:200])
    result = run("replay", str(log), "-c", SHIPPED, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["log"]["unreadable"] >= 3
