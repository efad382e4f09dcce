"""`onajimi run` as a process: start-up errors, SIGTERM, SIGHUP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.backend import FakeBackend
from tests.conftest import CONF
from tests.dnsserver import DnsServer
from tests.gatewayenv import populate, write_gateway_config
from tests.smtpclient import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(
    directory: Path, *, port: int, backend: int, dns: str, store: str = "sqlite://state/state.db"
) -> Path:
    """A config next to copies of the shipped list files (so a test can edit them)."""
    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        shutil.copy(CONF / name, directory / name)
    return write_gateway_config(
        directory / "gateway.toml",
        port=port,
        backend=backend,
        dns=dns,
        store=store,
        lists=directory,
    )


async def start(
    config: Path, *prefix: str, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`onajimi run -c config`, optionally under a command prefix (e.g. setpriv).

    With the default, the caller must read stderr (wait_for_line) or the gateway's log
    lines fill the pipe and block it; pass DEVNULL when nobody will."""
    command = [*prefix, sys.executable, "-m", "gateway", "run", "-c", str(config)]
    return await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
    )


async def wait_for_line(
    process: asyncio.subprocess.Process, fragment: str, timeout: float = 15
) -> str:
    async def read() -> str:
        while True:
            raw = await process.stderr.readline()
            if not raw:
                raise AssertionError(f"process ended before logging {fragment!r}")
            line = raw.decode()
            if fragment in line:
                return line

    return await asyncio.wait_for(read(), timeout)


@pytest.fixture
async def services():
    dns = DnsServer().start()
    populate(dns)
    backend = await FakeBackend().start()
    yield dns, backend
    await backend.stop()
    dns.stop()


async def one_line_error(config: Path, fragment: str, *prefix: str) -> None:
    process = await start(config, *prefix)
    _, err = await asyncio.wait_for(process.communicate(), 30)
    lines = [line for line in err.decode().splitlines() if not line.startswith("ts=")]
    assert process.returncode == 2, err.decode()
    assert len(lines) == 1 and fragment in lines[0], err.decode()
    assert "Traceback" not in err.decode()


async def test_bad_config_exits_2(tmp_path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[relay]\naccept_domains = []\n")
    await one_line_error(config, "relay.accept_domains: must not be empty")


async def test_port_in_use_exits_2_naming_the_address(tmp_path, services) -> None:
    dns, backend = services
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port=port, backend=backend.port, dns=dns.address)
        await one_line_error(config, f"cannot listen on 127.0.0.1:{port}: address already in use")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
async def test_privileged_port_without_root_exits_2(tmp_path, services) -> None:
    dns, backend = services
    # pytest's temp root is private to root: the unprivileged user needs a readable place.
    directory = Path(tempfile.mkdtemp(prefix="onajimi-unprivileged-"))
    try:
        directory.chmod(0o777)
        config = write_config(directory, port=25, backend=backend.port, dns=dns.address)
        prefix = ()
        if os.geteuid() == 0:
            prefix = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
        await one_line_error(
            config,
            "cannot listen on 127.0.0.1:25: permission denied "
            "(ports below 1024 need root or CAP_NET_BIND_SERVICE)",
            *prefix,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_unusable_store_exits_2(tmp_path, services) -> None:
    dns, backend = services
    (tmp_path / "state").write_text("a file where a directory should be")
    config = write_config(tmp_path, port=free_port(), backend=backend.port, dns=dns.address)
    await one_line_error(config, "store.url sqlite://")


@contextlib.asynccontextmanager
async def running(directory: Path, services):
    """`onajimi run` on a free port until the block ends (killed if still running)."""
    dns, backend = services
    port = free_port()
    config = write_config(directory, port=port, backend=backend.port, dns=dns.address)
    process = await start(config)
    try:
        await wait_for_line(process, "onajimi listening on")
        yield process, port, config
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_lets_open_sessions_finish(tmp_path, services) -> None:
    backend = services[1]
    async with running(tmp_path, services) as (process, port, _):
        client = await Client.connect(port, source="127.0.0.2")
        await client.ehlo()
        await client.cmd("MAIL FROM:<a@sender.example>")
        assert (await client.cmd("RCPT TO:<bob@example.com>")).code == 250
        process.send_signal(signal.SIGTERM)
        await wait_for_line(process, "stopping")
        with pytest.raises(OSError):  # no new connections
            await Client.connect(port, source="127.0.0.3", timeout=2)
        assert (await client.data(b"Subject: last\r\n\r\nmade it\r\n")).code == 250
        await client.cmd("QUIT")
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert len(backend.messages) == 1


async def test_sighup_reloads_lists_and_survives_a_broken_config(tmp_path, services) -> None:
    async with running(tmp_path, services) as (process, port, config):
        before = await Client.connect(port, source="127.0.0.2")
        assert before.greeting.code == 220
        (tmp_path / "deny.txt").write_text("127.0.0.2\n")
        process.send_signal(signal.SIGHUP)
        await wait_for_line(process, "configuration reloaded")
        denied = await Client.connect(port, source="127.0.0.2")
        assert denied.greeting.code == 554
        await denied.close()
        await before.ehlo()  # the session opened before the reload is untouched
        assert (await before.cmd("NOOP")).code == 250
        await before.close()

        config.write_text(config.read_text().replace("[relay]", "[relay]\nbogus = 1"))
        process.send_signal(signal.SIGHUP)
        line = await wait_for_line(process, "reload failed")
        assert "relay.bogus: unknown setting" in line
        still = await Client.connect(port, source="127.0.0.2")
        assert still.greeting.code == 554  # the running configuration stayed
        await still.close()


@pytest.mark.parametrize(("soft", "connections", "expected"), [(256, 500, 1256), (4096, 500, 4096)])
def test_open_files_limit_is_lifted_for_max_connections(soft, connections, expected) -> None:
    """In a child (rlimits are per process): a low soft limit is raised, a high one kept."""
    code = (
        "import resource;"
        "from gateway.cli.run import raise_open_files_limit as lift;"
        f"lift({connections});"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )

    def lower() -> None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True
    )
    assert int(out.stdout) == expected
