"""Shared fixtures: an injected clock, settings built in memory, a real DNS server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings, settings_from_mapping
from tests.dnsserver import DnsServer

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in overrides.items():
        result.setdefault(section, {}).update(values)
    return result


def make_settings(overrides: dict[str, Any] | None = None, base_dir: Path = CONF) -> Settings:
    """Settings as the shipped conf/ would give, with a memory store and overrides."""
    raw = merge(
        {"relay": {"accept_domains": ["example.com"]}, "store": {"url": "memory:"}},
        overrides or {},
    )
    return settings_from_mapping(raw, "test.toml", base_dir)


@pytest.fixture
def dns_server():
    with DnsServer() as server:
        yield server


@pytest.fixture
async def env(request):
    """A running gateway; `@pytest.mark.gateway(overrides)` adjusts its settings."""
    from tests.gatewayenv import start_env

    marker = request.node.get_closest_marker("gateway")
    overrides = marker.args[0] if marker else None
    environment = await start_env(overrides)
    yield environment
    await environment.close()


def pytest_configure(config):
    config.addinivalue_line("markers", "gateway(overrides): settings overrides for the env fixture")
    config.addinivalue_line(
        "markers", "unit: pure (no network, no process): make unit runs it under tests/nosocket.py"
    )
    config.addinivalue_line("markers", "slow: pure but long: left out of make unit")


def _running(kind: str):
    """A private redis-server ("server") or Redis Cluster ("cluster") for a session
    fixture to yield; skipped when Debian's redis-server is not installed."""
    from tests.redisserver import RedisCluster, RedisServer

    if not RedisServer.available():
        pytest.skip("redis-server is not installed (make test installs it from Debian)")
    started = RedisCluster().start() if kind == "cluster" else RedisServer().start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def redis_server():
    yield from _running("server")


@pytest.fixture
def redis_url(redis_server) -> str:
    """An empty Redis for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster of three masters on loopback, for the whole session (~2 s to start)."""
    yield from _running("cluster")


@pytest.fixture
def redis_cluster_url(redis_cluster) -> str:
    """An empty Redis Cluster for this test (every node restarted by an earlier test is
    back and serving)."""
    redis_cluster.wait_ok()
    redis_cluster.flush()
    return redis_cluster.url


def pytest_collection_modifyitems(config, items) -> None:
    """OpenSMTPD's real-time scenarios are waited for last: they run beside everything
    else (see pytest_collection_finish)."""
    late = [item for item in items if item.originalname == "test_opensmtpd"]
    if late:
        items[:] = [item for item in items if item not in late] + late


def pytest_collection_finish(session) -> None:
    """Start OpenSMTPD's scenarios (tests/realsenders.py) in a process of their own when
    they are among the tests to run: its retry timer is 400 s, so they run in real time,
    beside the rest of the suite."""
    if not any(item.originalname == "test_opensmtpd" for item in session.items):
        return
    import subprocess
    import sys
    import tempfile

    out = Path(tempfile.mkdtemp(prefix="onajimi-opensmtpd-runs-")) / "results.json"
    log = (out.parent / "runner.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.realsenders", str(out)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    session.config.opensmtpd_runner = (process, out)


def pytest_unconfigure(config) -> None:
    runner = getattr(config, "opensmtpd_runner", None)
    if runner is not None and runner[0].poll() is None:
        runner[0].terminate()
        runner[0].wait(timeout=30)


def pytest_terminal_summary(terminalreporter) -> None:
    """The real-sender scenarios' figures (tests/realsenders.py), when they ran."""
    import sys

    module = sys.modules.get("tests.realsenders")
    rows = getattr(module, "RESULTS", None)
    if not rows:
        return
    terminalreporter.section("real senders through the gateway")
    header = ("scenario", "sent", "delivered", "duplicates", "attempts", "delay", "421s")
    terminalreporter.write_line(
        f"{header[0]:<52} {header[1]:>5} {header[2]:>9} {header[3]:>10} {header[4]:>8}"
        f" {header[5]:>17} {header[6]:>5}  kind= of the attempts judged"
    )
    for row in rows:
        delay = f"{row['delay_median']:.1f} / {row['delay_max']:.1f} s" if row["delay_max"] else "-"
        terminalreporter.write_line(
            f"{row['scenario']:<52} {row['sent']:>5} {row['delivered']:>9} {row['duplicates']:>10}"
            f" {row['attempts']:>8} {delay:>17} {row['refusals_421']:>5}  {row.get('kinds', '')}"
        )
