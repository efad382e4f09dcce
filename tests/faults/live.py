"""A real `onajimi run` process for the fault suite: uvloop, its own log, its metrics.

Faults are judged on the gateway an operator runs, not on an object in the test's event
loop: the event loop differs (uvloop here), and so does what reaches the log. Every line
the process writes is kept, so a test can assert that none of them is a traceback or an
error nobody asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.backend import FakeBackend
from tests.conftest import CONF
from tests.dnsserver import DnsServer
from tests.gatewayenv import populate, write_gateway_config
from tests.smtpclient import Client
from tests.test_run import free_port, start
from tests.waiting import eventually

# What a healthy gateway never logs, whatever its clients and backend do.
PROBLEMS = re.compile(r"Traceback|level=error|level=critical|Task exception|never retrieved")


@dataclass
class LiveGateway:
    process: asyncio.subprocess.Process
    port: int
    metrics_port: int
    config: Path
    backend: FakeBackend
    dns: DnsServer
    lines: list[str] = field(default_factory=list)

    async def client(self, source: str = "127.0.0.2", **kwargs) -> Client:
        return await Client.connect(self.port, source=source, **kwargs)

    async def metrics(self) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.metrics_port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        body = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return body.decode()

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples matching `labels` (0 when there is none)."""
        total = 0.0
        for line in (await self.metrics()).splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            head, _, rest = sample.partition("{")
            if head != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    async def sessions_settle(self, timeout: float = 15.0) -> None:
        """Until onajimi_sessions_active is back to 0."""
        await eventually(lambda: self.metric("onajimi_sessions_active"), lambda v: v == 0, timeout)

    def problems(self) -> list[str]:
        return [line for line in self.lines if PROBLEMS.search(line)]

    async def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, as an operator stops it; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)


async def _collect(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    while True:
        raw = await process.stderr.readline()
        if not raw:
            return
        lines.append(raw.decode(errors="replace").rstrip("\n"))


@contextlib.asynccontextmanager
async def live_gateway(
    directory: Path,
    *,
    backend: FakeBackend | None = None,
    policy: str = "",
    relay: str = "",
    backend_extra: str = "connect_timeout = 1\ncommand_timeout = 1",
    extra: str = "",
    store: str | None = None,
    listen: str = "",
    tls: str = 'mode = "off"',
) -> AsyncIterator[LiveGateway]:
    """`onajimi run` against a fake backend and the test DNS, until the block ends."""
    dns = DnsServer().start()
    populate(dns)
    own_backend = backend is None
    backend = backend or await FakeBackend().start()
    port, metrics_port = free_port(), free_port()
    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        shutil.copy(CONF / name, directory / name)
    config = write_gateway_config(
        directory / "gateway.toml",
        port=port,
        backend=backend.port,
        dns=dns.address,
        store=store or f"sqlite://{directory / 'state.db'}",
        lists=directory,
        policy=policy,
        relay=relay,
        backend_extra=backend_extra,
        metrics=f"127.0.0.1:{metrics_port}",
        extra=extra,
        listen=listen,
        tls=tls,
    )
    process = await start(config)
    live = LiveGateway(process, port, metrics_port, config, backend, dns)
    reader = asyncio.get_running_loop().create_task(_collect(process, live.lines))
    try:
        await eventually(lambda: any("onajimi listening on" in line for line in live.lines))
        yield live
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader
        if own_backend:
            await backend.stop()
        dns.stop()
