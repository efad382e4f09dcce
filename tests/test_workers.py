"""`server.workers = 2`: both workers serve, one metrics endpoint adds them up, SIGHUP
reloads both, a killed worker comes back, SIGTERM stops all."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from gateway.supervisor import remove_stale_metrics_dirs
from tests.backend import FakeBackend
from tests.conftest import CONF
from tests.dnsserver import DnsServer
from tests.gatewayenv import populate, write_gateway_config
from tests.redisserver import free_port
from tests.smtpclient import Client
from tests.test_observability import http_get, samples
from tests.waiting import eventually


def workers_of(pid: int) -> list[psutil.Process]:
    """Live worker processes of a supervisor (a killed one is a zombie until reaped)."""
    found = []
    for child in psutil.Process(pid).children():
        try:
            if "--worker" in child.cmdline():
                found.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return found


def listens(worker: psutil.Process, port: int) -> bool:
    try:
        sockets = worker.net_connections(kind="tcp")
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return False
    return any(s.status == psutil.CONN_LISTEN and s.laddr.port == port for s in sockets)


def both_listening(pid: int, port: int) -> bool:
    """Each worker binds its own SO_REUSEPORT socket once it has started, so one worker
    answering does not mean both do: a listening socket in each is the readiness sign."""
    workers = workers_of(pid)
    return len(workers) == 2 and all(listens(w, port) for w in workers)


@pytest.fixture
async def supervised(tmp_path):
    dns = DnsServer().start()
    populate(dns)
    backend = await FakeBackend().start()
    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        shutil.copy(CONF / name, tmp_path / name)
    port, metrics = free_port(), free_port()
    config = write_gateway_config(
        tmp_path / "gateway.toml",
        port=port,
        backend=backend.port,
        dns=dns.address,
        store=f"sqlite://{tmp_path / 'state.db'}",
        lists=tmp_path,
        extra="[server]\nworkers = 2\n",
        metrics=f"127.0.0.1:{metrics}",
    )
    # Started as operators start it (the console script), from a directory that holds a
    # `gateway` directory of its own (../shared/peers does): workers must import the
    # real package, not that one.
    (tmp_path / "gateway").mkdir()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("onajimi")),
        *("run", "-c", str(config)),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    await eventually(lambda: both_listening(process.pid, port), timeout=30)
    yield process, port, metrics, tmp_path
    if process.returncode is None:
        process.terminate()  # a clean stop, which removes its metrics directory
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
    await backend.stop()
    dns.stop()


async def test_two_workers_serve_and_metrics_add_up(supervised) -> None:
    process, port, metrics, _ = supervised
    workers = workers_of(process.pid)
    assert len(workers) == 2
    clients = [await Client.connect(port, source=f"127.0.0.{20 + i}") for i in range(40)]
    assert all(c.greeting.code == 220 for c in clients)

    def serving(worker: psutil.Process) -> int:
        return sum(
            1
            for c in worker.net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
        )

    counts = [serving(w) for w in workers]
    assert all(n > 0 for n in counts) and sum(counts) == 40, counts  # the kernel spread them
    for c in clients:
        await c.close()
    _, body = await http_get(metrics, "/metrics")
    got = samples(body)
    assert got[("onajimi_connections_total", ())] == 40  # counted by both workers
    status, text = await http_get(metrics, "/healthz")
    assert status == 200, text


async def test_sighup_reloads_both_workers(supervised) -> None:
    process, port, _, directory = supervised
    (directory / "deny.txt").write_text("127.0.0.2\n")
    process.send_signal(signal.SIGHUP)

    async def greetings() -> set[int]:
        codes = set()
        for _ in range(20):  # spread over both workers by the kernel
            client = await Client.connect(port, source="127.0.0.2")
            codes.add(client.greeting.code)
            await client.close()
        return codes

    await eventually(greetings, lambda codes: codes == {554})  # each reloads on its own time


async def test_a_killed_worker_is_restarted_and_sigterm_stops_all(supervised) -> None:
    process, port, _, _ = supervised
    victim = workers_of(process.pid)[0]
    victim.kill()
    await eventually(
        lambda: (
            both_listening(process.pid, port)
            and victim.pid not in {w.pid for w in workers_of(process.pid)}
        ),
        timeout=30,
    )
    survivors = workers_of(process.pid)
    client = await Client.connect(port, source="127.0.0.2")
    assert client.greeting.code == 220
    await client.close()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 45) == 0
    for worker in survivors:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


async def test_workers_do_not_outlive_a_killed_supervisor(supervised) -> None:
    process, port, _, _ = supervised
    workers = workers_of(process.pid)
    process.kill()  # SIGKILL: no chance to stop them itself
    await process.wait()

    def all_gone() -> bool:
        return all(not w.is_running() or w.status() == psutil.STATUS_ZOMBIE for w in workers)

    await eventually(all_gone)  # nobody left holding port 25
    with pytest.raises(OSError):
        await Client.connect(port, source="127.0.0.2", timeout=2)


def test_metrics_dirs_of_dead_supervisors_are_removed(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f"onajimi-metrics-{gone.stdout.strip()}-abc"
    alive = tmp_path / f"onajimi-metrics-{os.getpid()}-def"
    other = tmp_path / "onajimi-metrics-notapid"
    for path in (dead, alive, other):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"x")
    remove_stale_metrics_dirs()
    assert not dead.exists() and alive.exists() and other.exists()
