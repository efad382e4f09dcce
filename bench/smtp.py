"""Load on `onajimi run` over loopback: how cheaply it turns strangers away, and what it
adds to real mail compared with sending straight to the backend.

Processes: the gateway (`python -m gateway run`, pinned to the first CPU) on one side;
the load generator (this process), the sink backend and the DNS server on the other
CPU. Gateway CPU time comes from its own process counters, so the figures are what the
gateway costs, whatever the load generator costs.

Rows:
* first-time host deferred at RCPT: each session from a new 127.x address whose PTR
  name is a dynamic-pool name (S25R rule 1), so every session costs a PTR and an A
  lookup, a store read at connect and a store write at RCPT;
* a clean (familiar) host relaying 1,000-byte messages to the sink, and the same load
  sent straight to the sink, in the same run.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.report import Row
from gateway.supervisor import die_with_parent
from tests.gatewayenv import write_gateway_config

CONCURRENCY = 50
SECONDS = 5.0
_HEADERS = b"Subject: bench\r\nFrom: a@sender.example\r\nTo: b@example.com\r\n\r\n"
_LINE = b"x" * 78 + b"\r\n"
# Exactly 1,000 bytes, every line ended by CRLF (a cut line would never end the DATA).
MESSAGE = _HEADERS + _LINE * ((1000 - len(_HEADERS)) // len(_LINE))
MESSAGE += b"y" * (1000 - len(MESSAGE) - 2) + b"\r\n"
assert len(MESSAGE) == 1000
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpus() -> tuple[set[int], set[int]]:
    """(gateway CPUs, everything else). On one CPU, they share."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


def spawn(args: list[str], cpu: set[int], stderr=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        preexec_fn=lambda: _prepare_child(cpu),
    )


def _prepare_child(cpu: set[int]) -> None:
    """In the child: its CPUs, and death with the benchmark (an interrupted run leaves
    no gateway, sink or DNS server behind)."""
    os.sched_setaffinity(0, cpu)
    die_with_parent()


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on port {port}")


def gateway_config(
    tmp: Path, port: int, sink: int, dns: int, name: str = "gateway", extra: str = ""
) -> Path:
    return write_gateway_config(
        tmp / f"bench-{name}.toml",
        port=port,
        backend=sink,
        dns=f"127.0.0.1:{dns}",
        store=f"sqlite://{tmp / f'bench-{name}.db'}",
        lists=REPO / "conf",
        extra="[limits]\nmax_connections_per_client = 1000\n" + extra,
    )


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


async def session(
    port: int, source: str, commands: tuple[bytes, ...], last: bytes, expect: bytes
) -> float:
    """Connect, read the greeting, send `commands` one by one, then `last`; its reply must
    start with `expect`; QUIT. Returns the session's duration."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    await _reply(reader)
    for command in commands:
        writer.write(command)
        await _reply(reader)
    writer.write(last)
    reply = await _reply(reader)
    if not reply.startswith(expect):
        raise RuntimeError(f"expected {expect!r}, got {reply!r}")
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()
    return time.perf_counter() - started


EHLO, MAIL, RCPT = (
    b"EHLO mta.bench\r\n",
    b"MAIL FROM:<a@sender.example>\r\n",
    b"RCPT TO:<b@example.com>\r\n",
)
deferral_session = functools.partial(session, commands=(EHLO, MAIL), last=RCPT, expect=b"450")
relay_session = functools.partial(
    session, commands=(EHLO, MAIL, RCPT, b"DATA\r\n"), last=MESSAGE + b".\r\n", expect=b"250"
)


class NewAddresses:
    """127.1.0.1, 127.1.0.2, ...: a never-seen client for every session."""

    def __init__(self, start: int = 1) -> None:
        self.n = start

    def __call__(self) -> str:
        self.n += 1
        n = self.n
        return f"127.{1 + (n >> 16) % 250}.{(n >> 8) & 255}.{n & 255 or 1}"


async def drive(session, port: int, source, seconds: float = SECONDS, limit: int = 200_000):
    """CONCURRENCY workers looping `session` for `seconds` (at most `limit` sessions)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline and len(latencies) + errors < limit:
            try:
                latencies.append(await session(port, source()))
            except (OSError, RuntimeError, ConnectionError):
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies, errors, time.perf_counter() - started


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time of a process and its children (a supervisor's workers)."""
    total = 0.0
    for p in (process, *process.children(recursive=True)):
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


class GatewayProcess:
    """`onajimi run` for the benchmark: started, measured by its own CPU counters, stopped."""

    def __init__(self, tmp: Path, name: str, sink: int, dns: int, cpus: set[int], extra: str = ""):
        self.port = free_port()
        config = gateway_config(tmp, self.port, sink, dns, name=name, extra=extra)
        self.log = (tmp / f"{name}.log").open("w")
        self.process = spawn(["-m", "gateway", "run", "-c", str(config)], cpus, stderr=self.log)
        wait_port(self.port)
        self.proc = psutil.Process(self.process.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.proc)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(40)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


async def deferral_rows(gateway: GatewayProcess, label: str = "") -> list[Row]:
    """First-time hosts deferred at RCPT: sessions/s, gateway CPU per session, latency."""
    await drive(deferral_session, gateway.port, NewAddresses(900_000), seconds=1.0)  # warm-up
    before = gateway.cpu()
    latencies, errors, elapsed = await drive(deferral_session, gateway.port, NewAddresses())
    cpu = gateway.cpu() - before
    n = len(latencies)
    return [
        Row(
            "smtp",
            f"first-time host deferred at RCPT{label}",
            n / elapsed,
            "sessions/s",
            note=f"{errors} errors; {CONCURRENCY} concurrent, new address + PTR/A each",
        ),
        Row(
            "smtp",
            "  gateway CPU per deferred session",
            1000 * cpu / max(n, 1),
            "ms",
            higher_is_better=False,
        ),
        Row(
            "smtp",
            "  latency p50",
            1000 * statistics.median(latencies) if latencies else 0,
            "ms",
            higher_is_better=False,
            note=f"p99 {1000 * percentile(latencies, 0.99):.1f} ms",
        ),
    ]


async def relay_rows(gateway: GatewayProcess, sink_port: int) -> list[Row]:
    """A clean host relaying 1,000-byte messages, against the same load sent to the sink."""
    clean = lambda: "127.0.0.2"  # noqa: E731 - mail-2.bench.example, a clean server
    await drive(relay_session, gateway.port, clean, seconds=1.0)
    before = gateway.cpu()
    through, errors_g, elapsed_g = await drive(relay_session, gateway.port, clean)
    cpu = gateway.cpu() - before
    direct, errors_d, elapsed_d = await drive(relay_session, sink_port, clean)
    if errors_d:
        raise RuntimeError(
            f"{errors_d} errors sending straight to the sink: the comparison is void"
        )
    rate_g, rate_d = len(through) / elapsed_g, len(direct) / elapsed_d
    return [
        Row(
            "smtp",
            "clean host relayed to the sink",
            rate_g,
            "msgs/s",
            note=f"{errors_g} errors; 1,000-byte messages",
        ),
        Row(
            "smtp",
            "  same load straight to the sink",
            rate_d,
            "msgs/s",
            note=f"gateway reaches {rate_g / rate_d:.0%} of direct",
        ),
        Row(
            "smtp",
            "  gateway CPU per relayed message",
            1000 * cpu / max(len(through), 1),
            "ms",
            higher_is_better=False,
        ),
        Row(
            "smtp",
            "  latency p50 through gateway",
            1000 * statistics.median(through),
            "ms",
            higher_is_better=False,
            note=f"direct p50 {1000 * statistics.median(direct):.2f} ms",
        ),
    ]


async def workers_rows(tmp: Path, sink: int, dns: int) -> list[Row]:
    """The rejection path with 1 and 2 worker processes, nobody pinned: the load
    generator, DNS server and sink share the machine with the gateway, as they would."""
    all_cpus = set(os.sched_getaffinity(0)) | cpus()[0]
    os.sched_setaffinity(0, all_cpus)
    rates = {}
    for workers in (1, 2):
        gateway = GatewayProcess(
            tmp, f"workers{workers}", sink, dns, all_cpus, extra=f"[server]\nworkers = {workers}\n"
        )
        try:
            await asyncio.sleep(0.5 * workers)  # every worker up
            await drive(
                deferral_session, gateway.port, NewAddresses(800_000 * workers), seconds=1.0
            )
            latencies, _, elapsed = await drive(
                deferral_session, gateway.port, NewAddresses(100_000 * workers)
            )
            rates[workers] = len(latencies) / elapsed
        finally:
            gateway.stop()
    return [
        Row("smtp", "rejection path, workers = 1 (unpinned)", rates[1], "sessions/s"),
        Row(
            "smtp",
            "rejection path, workers = 2 (unpinned)",
            rates[2],
            "sessions/s",
            note=f"{rates[2] / rates[1]:.2f}x one worker, load generator on the same cores",
        ),
        Row("smtp", "  two workers / one", rates[2] / rates[1], "x", target=1.6),
    ]


async def run(tmp: Path) -> list[Row]:
    gateway_cpus, other_cpus = cpus()
    os.sched_setaffinity(0, other_cpus)
    sink_port, dns_port = free_port(), free_port()
    sink = spawn(["-m", "bench.sink", str(sink_port)], other_cpus)
    dns = spawn(["-m", "bench.dnsd", str(dns_port)], other_cpus)
    rows: list[Row] = []
    try:
        wait_port(sink_port)
        gateway = GatewayProcess(tmp, "gateway", sink_port, dns_port, gateway_cpus)
        try:
            rows += await deferral_rows(gateway)
            rows += await relay_rows(gateway, sink_port)
        finally:
            gateway.stop()
        rows += await workers_rows(tmp, sink_port, dns_port)
    finally:
        for process in (sink, dns):
            process.terminate()
            process.wait(10)
    return rows
