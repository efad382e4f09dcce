"""Load on `onajimi run` over loopback: how cheaply it turns first-time hosts away, and what it
adds to real mail compared with sending the same load straight to the backend.

Processes: the gateway (`python -m gateway run`, pinned to the first CPU) on one side;
the load generator (this process), the sink backend and the DNS server on the other
CPU. Gateway CPU time comes from the gateway processes' own counters, so the figures
are what the gateway costs, whatever the load generator costs. The scale-out rows
pin nobody: two workers need both CPUs, and share them with the load, as they would.

Every figure is the median of RUNS runs; the note gives each run's value, which shows
how noisy the machine was. Each run drives CONCURRENCY sessions at once for SECONDS.

Paths (the rows of issue 6's table):
* first-time host deferred at RCPT: a never-seen 127.x address each session, whose PTR
  is a dynamic-pool name (S25R rule 1): a PTR and an A lookup, a store read at connect,
  a store write at RCPT;
* S25R-suspect host deferred: the same kind of host, seen a moment ago (its DNS answers
  cached), retrying too early (`impatient_retries = 0`, so no penalty box);
* familiar host relayed: a host with a familiar record sends 1,000-byte messages, each
  relayed to the sink during the session; the same with 100 KB messages, and with a
  realistic mix of sizes (50% 4 KB, 40% 40 KB, 9% 400 KB, 1% 4 MB);
* the same with `server.workers = 2`;
* 20 clients sending a 10 MB message each at once: peak RSS above idle (streamed);
* idle open connection: RSS per connection with 10,000 greeted sessions held open;
* added latency: one message at a time, unloaded, through the gateway and straight.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.report import Row
from gateway.policy.records import Familiar
from gateway.store.sqlite import SQLiteStore
from gateway.supervisor import die_with_parent
from tests.gatewayenv import write_gateway_config

CONCURRENCY = 50
SECONDS = 2.0
RUNS = 3
SUSPECTS = 3_000  # distinct suspect hosts retrying (each seen once before the runs)
FAMILIAR_HOSTS = 50
IDLE_CONNECTIONS = 10_000
UNLOADED_MESSAGES = 150

_HEADERS = b"Subject: bench\r\nFrom: a@sender.example\r\nTo: b@example.com\r\n\r\n"
_LINE = b"x" * 78 + b"\r\n"
# Exactly 1,000 bytes, every line ended by CRLF (a cut line would never end the DATA).
MESSAGE = _HEADERS + _LINE * ((1000 - len(_HEADERS)) // len(_LINE))
MESSAGE += b"y" * (1000 - len(MESSAGE) - 2) + b"\r\n"
assert len(MESSAGE) == 1000


def _message_of(size: int) -> bytes:
    """`size` bytes of mail with an attachment (base64 lines of 76 characters)."""
    body = _HEADERS + (b"QUJD" * 19 + b"\r\n") * max(0, (size - len(_HEADERS)) // 78)
    return body + b"z" * max(0, size - len(body) - 2) + b"\r\n"


# 100 KB: ordinary mail with a small attachment.
MESSAGE_100K = _message_of(100_000)
assert len(MESSAGE_100K) == 100_000
REPO = Path(__file__).resolve().parent.parent


# -- processes ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ALL_CPUS = frozenset(os.sched_getaffinity(0))  # before this process pins itself


def cpus() -> tuple[set[int], set[int]]:
    """(gateway CPUs, everything else). On one CPU, they share."""
    available = sorted(ALL_CPUS)
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


def lift_open_files_limit() -> int:
    """10,000 idle sessions need 10,000 sockets on each side; children inherit this."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


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


def rss(process: psutil.Process) -> int:
    return sum(p.memory_info().rss for p in (process, *process.children(recursive=True)))


class GatewayProcess:
    """`onajimi run` for the benchmark: started, measured by its own counters, stopped."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        sink: int,
        dns: int,
        cpus: set[int],
        extra: str = "",
        policy: str = "",
        backend: str = "",
    ):
        self.port = free_port()
        self.db = tmp / f"bench-{name}.db"
        self.config = write_gateway_config(
            tmp / f"bench-{name}.toml",
            port=self.port,
            backend=sink,
            dns=f"127.0.0.1:{dns}",
            store=f"sqlite://{self.db}",
            lists=REPO / "conf",
            # The suspects retry early without end.
            policy="impatient_retries = 0\n" + policy,
            backend_extra=backend,
            extra="[limits]\nmax_connections = 12000\nmax_connections_per_client = 12000\n" + extra,
        )
        seed_familiar(self.db)
        self.log = (tmp / f"{name}.log").open("w")
        self.process = spawn(["-m", "gateway", "run", "-c", str(self.config)], cpus, self.log)
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


# -- clients --------------------------------------------------------------------------------
def familiar_addresses() -> list[str]:
    """Dynamic-pool names (suspects) that have passed deferral before: familiar."""
    return [f"127.250.0.{n}" for n in range(1, FAMILIAR_HOSTS + 1)]


def seed_familiar(db: Path) -> None:
    """Familiar records in the gateway's database before it starts, as a past retry
    would have left them."""

    async def seed() -> None:
        store = SQLiteStore(str(db))
        await store.open()
        now = time.time()
        for address in familiar_addresses():
            await store.put(f"defer:{address}", Familiar(now - 86400, now - 3600, now + 86400))
        await store.close()

    with ThreadPoolExecutor(1) as pool:  # called from the benchmark's running loop
        pool.submit(asyncio.run, seed()).result()


class NewAddresses:
    """127.1.0.1, 127.1.0.2, ...: a never-seen client for every session, across runs."""

    def __init__(self, start: int = 1) -> None:
        self.n = start

    def __call__(self) -> str:
        self.n += 1
        n = self.n
        return f"127.{1 + (n >> 16) % 240}.{(n >> 8) & 255}.{n & 255 or 1}"


def cycling(addresses: list[str]) -> Callable[[], str]:
    it: Iterator[str] = itertools.cycle(addresses)
    return lambda: next(it)


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


@dataclass(frozen=True, slots=True)
class Load:
    """One session's commands; the last one's reply through the gateway and straight."""

    commands: tuple[bytes, ...]
    last: bytes
    expect: bytes
    expect_direct: bytes


EHLO, MAIL, RCPT = (
    b"EHLO mta.bench\r\n",
    b"MAIL FROM:<a@sender.example>\r\n",
    b"RCPT TO:<b@example.com>\r\n",
)
DEFERRAL = Load((EHLO, MAIL), RCPT, b"450", b"250")


def relay_load(message: bytes, pipelined: bool = False) -> Load:
    """A session that relays `message`: 250 at its end, through the gateway and straight.
    `pipelined`: MAIL, RCPT and DATA in one write, as Postfix's own client sends them."""
    envelope = (MAIL + RCPT + b"DATA\r\n",) if pipelined else (MAIL, RCPT, b"DATA\r\n")
    return Load((EHLO, *envelope), message + b".\r\n", b"250", b"250")


RELAY = relay_load(MESSAGE)
RELAY_PIPELINED = relay_load(MESSAGE, pipelined=True)
REUSE_BACKEND = 'forward_client = "xforward"\nreuse = true\n'
RELAY_100K = relay_load(MESSAGE_100K)


_SOURCE_PORTS = (20_000, 60_000)
_next_port: dict[str, int] = {}


async def connect(port: int, source: str):
    """A connection from `source`, on the next port of that address's own rotation.

    With port 0 the kernel hands one address the same few ports again and again; the
    server closes first (after QUIT), so its TIME_WAIT for that exact address pair turns
    the next SYN into a one-second retransmission, and the figures into a measure of
    TCP. Rotating each address through 40,000 ports keeps every pair clear of TIME_WAIT.
    """
    low, high = _SOURCE_PORTS
    for _ in range(20):
        n = _next_port.get(source) or random.randrange(low, high)
        _next_port[source] = n + 1 if n + 1 < high else low
        try:
            return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, n))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no free source port on {source}")


async def session(port: int, source: str, load: Load, expect: bytes) -> float:
    """Connect, read the greeting, send the commands one by one, then the last; its
    reply must start with `expect`; QUIT. Returns the session's duration."""
    started = time.perf_counter()
    reader, writer = await connect(port, source)
    try:
        await _reply(reader)
        for command in load.commands:
            writer.write(command)
            for _ in range(command.count(b"\r\n")):  # a pipelined group: a reply each
                await _reply(reader)
        writer.write(load.last)
        reply = await _reply(reader)
        if not reply.startswith(expect):
            raise RuntimeError(f"expected {expect!r}, got {reply!r}")
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()
    return time.perf_counter() - started


# -- measuring ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Run:
    rate: float  # sessions or messages per second
    cpu_ms: float | None  # gateway CPU per session
    p50_ms: float
    p99_ms: float
    errors: int


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


async def drive(
    port: int,
    source: Callable[[], str],
    load: Load | Callable[[], Load],
    expect: bytes,
    gateway: GatewayProcess | None = None,
    seconds: float = SECONDS,
    concurrency: int = CONCURRENCY,
    limit: int = 200_000,
) -> Run:
    """`concurrency` clients looping sessions for `seconds` (at most `limit` sessions)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    before = gateway.cpu() if gateway is not None else 0.0

    async def client() -> None:
        nonlocal errors
        while time.perf_counter() < deadline and len(latencies) + errors < limit:
            try:
                this = load if isinstance(load, Load) else load()
                latencies.append(await session(port, source(), this, expect))
            except (OSError, RuntimeError, ConnectionError):
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    n = max(len(latencies), 1)
    cpu = 1000 * (gateway.cpu() - before) / n if gateway is not None else None
    return Run(
        len(latencies) / elapsed,
        cpu,
        1000 * statistics.median(latencies) if latencies else 0.0,
        1000 * percentile(latencies, 0.99),
        errors,
    )


def _runs_note(values: list[float], unit: str) -> str:
    return "runs " + " / ".join(f"{v:.3g}" if v < 100 else f"{v:,.0f}" for v in values) + unit


def path_row(
    metric: str,
    unit: str,
    through: list[Run],
    direct: list[Run] | None,
    *,
    target: float | None,
    target_on: str,
    higher_is_better: bool,
    note: str,
) -> Row:
    """The medians of the runs, each gateway run paired with the direct run after it."""
    judged = [r.cpu_ms if target_on == "cpu_ms" else r.rate for r in through]
    errors = sum(r.errors for r in through)
    ratio = None
    if direct is not None:
        if any(r.errors for r in direct):
            raise RuntimeError(f"{metric}: errors straight to the sink: the comparison is void")
        ratio = statistics.median(g.rate / d.rate for g, d in zip(through, direct, strict=True))
        note += f"; direct {statistics.median(d.rate for d in direct):,.0f}/s"
    suffix = " ms" if target_on == "cpu_ms" else "/s"
    return Row(
        "smtp",
        metric,
        statistics.median(r.rate for r in through),
        unit,
        target=target,
        higher_is_better=higher_is_better,
        note=f"{note}; {_runs_note(judged, suffix)}" + (f"; {errors} errors" if errors else ""),
        cpu_ms=statistics.median(r.cpu_ms for r in through if r.cpu_ms is not None),
        p50_ms=statistics.median(r.p50_ms for r in through),
        p99_ms=statistics.median(r.p99_ms for r in through),
        vs_direct=ratio,
        target_on=target_on,
    )


async def cpu_row(
    metric: str,
    unit: str,
    target: float,
    note: str,
    gateway: GatewayProcess,
    sink: int,
    source: Callable[[], str],
    load: Load,
) -> Row:
    """RUNS runs through the gateway, each followed by one straight to the sink; the
    target is on the gateway's CPU time per session."""
    through, direct = [], []
    for _ in range(RUNS):
        through.append(await drive(gateway.port, source, load, load.expect, gateway))
        direct.append(await drive(sink, source, load, load.expect_direct))
    return path_row(
        metric,
        unit,
        through,
        direct,
        target=target,
        target_on="cpu_ms",
        higher_is_better=False,
        note=note,
    )


async def first_time_row(gateway: GatewayProcess, sink: int) -> Row:
    await drive(gateway.port, NewAddresses(3_000_000), DEFERRAL, b"450", seconds=1.0)  # warm-up
    note = "new address each session: PTR + A lookups, store read + write"
    return await cpu_row(
        "first-time host deferred at RCPT", "sessions/s", 0.75, note,
        gateway, sink, NewAddresses(1_000), DEFERRAL,
    )  # fmt: skip


async def suspect_row(gateway: GatewayProcess, sink: int) -> Row:
    pool = [NewAddresses(5_000_000)() for _ in range(SUSPECTS)]
    seen = await drive(gateway.port, cycling(pool), DEFERRAL, b"450", limit=SUSPECTS, seconds=60)
    if seen.errors:
        raise RuntimeError(f"{seen.errors} errors while introducing the suspect hosts")
    note = f"{SUSPECTS:,} suspect hosts retrying early, DNS cached"
    return await cpu_row(
        "S25R-suspect host deferred", "sessions/s", 0.6, note,
        gateway, sink, cycling(pool), DEFERRAL,
    )  # fmt: skip


async def relay_row(
    gateway: GatewayProcess,
    sink: int,
    load: Load = RELAY,
    metric: str = "familiar host, message relayed",
    target: float = 1.0,
    note: str = "1,000-byte messages to the sink",
) -> Row:
    """Familiar hosts relaying `load`'s message, after a warm-up."""
    familiar = cycling(familiar_addresses())
    await drive(gateway.port, familiar, load, b"250", seconds=1.0)  # warm-up
    return await cpu_row(metric, "msgs/s", target, note, gateway, sink, familiar, load)


# A day's mail by size: half of it short notes, most of the rest with a small attachment,
# a few with a large one, one in a hundred near a mail server's usual limit.
SIZE_MIX = (50 * [4_000]) + (40 * [40_000]) + (9 * [400_000]) + [4_000_000]


def mixed_loads() -> Callable[[], Load]:
    """The next message of the mix, in a fixed shuffled order (every run the same)."""
    sizes = list(SIZE_MIX)
    random.Random(25).shuffle(sizes)
    loads = {size: relay_load(_message_of(size)) for size in set(sizes)}
    order = itertools.cycle(sizes)
    return lambda: loads[next(order)]


async def relay_mix_row(gateway: GatewayProcess, sink: int) -> Row:
    familiar = cycling(familiar_addresses())
    mix = mixed_loads()
    average = sum(SIZE_MIX) / len(SIZE_MIX)
    through, direct = [], []
    for _ in range(RUNS):
        through.append(await drive(gateway.port, familiar, mix, b"250", gateway, seconds=3.0))
        direct.append(await drive(sink, familiar, mix, b"250", seconds=3.0))
    return path_row(
        "familiar host, size mix relayed", "msgs/s", through, direct,
        target=None, target_on="cpu_ms", higher_is_better=False,
        note=f"50% 4 KB, 40% 40 KB, 9% 400 KB, 1% 4 MB (mean {average / 1000:.0f} KB)",
    )  # fmt: skip


async def relay_pipelined_row(gateway: GatewayProcess, sink: int, reuse: bool = False) -> Row:
    """The 1 KB row with clients that pipeline, as real MTAs do: the gateway can write
    DATA to the backend with the RCPT; with `reuse`, its backend connections are kept."""
    return await relay_row(
        gateway, sink, RELAY_PIPELINED,
        "familiar host, relayed, pipelining client" + (", backend.reuse" if reuse else ""),
        1.0,
        "1,000-byte messages; MAIL, RCPT and DATA in one write"
        + ("; forward_client = xforward, reuse = true" if reuse else ""),
    )  # fmt: skip


async def relay_100k_row(gateway: GatewayProcess, sink: int) -> Row:
    return await relay_row(
        gateway, sink, RELAY_100K, "familiar host, 100 KB message relayed", 1.5,
        "100,000-byte messages",
    )  # fmt: skip


LARGE_SESSIONS = 20
LARGE_SIZE = 10_000_000


async def large_messages_row(tmp: Path, sink: int, dns: int, cpus: set[int]) -> Row:
    """Peak RSS above idle with LARGE_SESSIONS clients sending a 10 MB message each at
    once: the message streams through to the sink, so it is never held whole."""
    load = relay_load(_message_of(LARGE_SIZE))
    growth = []
    for run in range(RUNS):
        gateway = GatewayProcess(tmp, f"large{run}", sink, dns, cpus)
        try:
            familiar = cycling(familiar_addresses())
            await drive(gateway.port, familiar, RELAY, b"250", seconds=0.5)  # warm
            await asyncio.sleep(0.5)
            idle = rss(gateway.proc)
            peak = idle
            sending = asyncio.ensure_future(
                drive(gateway.port, familiar, load, b"250", concurrency=LARGE_SESSIONS,
                      limit=LARGE_SESSIONS, seconds=60)
            )  # fmt: skip
            while not sending.done():
                peak = max(peak, rss(gateway.proc))
                await asyncio.sleep(0.02)
            result = sending.result()
            if result.errors or result.rate == 0:
                raise RuntimeError(f"large messages: {result.errors} errors")
        finally:
            gateway.stop()
        growth.append((peak - idle) / 1e6)
    return Row(
        "smtp",
        f"{LARGE_SESSIONS} x 10 MB messages at once",
        statistics.median(growth),
        "MB peak RSS",
        target=100.0,
        higher_is_better=False,
        note="above idle, streamed to the sink; " + _runs_note(growth, " MB"),
    )


async def unloaded_latency_row(gateway: GatewayProcess, sink: int) -> Row:
    """One message at a time; the difference of the medians is what the gateway adds."""
    source = cycling(familiar_addresses())
    added, through_p50, direct_p50 = [], [], []
    for _ in range(RUNS):
        through = await drive(
            gateway.port, source, RELAY, b"250", concurrency=1, limit=UNLOADED_MESSAGES, seconds=30
        )
        direct = await drive(
            sink, source, RELAY, b"250", concurrency=1, limit=UNLOADED_MESSAGES, seconds=30
        )
        added.append(through.p50_ms - direct.p50_ms)
        through_p50.append(through.p50_ms)
        direct_p50.append(direct.p50_ms)
    return Row(
        "smtp",
        "added latency, one message, unloaded",
        statistics.median(added),
        "ms",
        target=2.0,
        higher_is_better=False,
        p50_ms=statistics.median(through_p50),
        note=(
            f"p50 {statistics.median(through_p50):.2f} ms through vs "
            f"{statistics.median(direct_p50):.2f} ms direct; {_runs_note(added, ' ms')}"
        ),
    )


async def hold(
    port: int,
    count: int,
    source: Callable[[], str],
    commands: tuple[bytes, ...] = (),
    greet: bool = True,
) -> tuple[list, int, list]:
    """Open `count` sessions, read their greetings (unless not `greet`), send `commands`
    (each answered but the last, whose reply is left waiting); they then stay open,
    saying nothing. Returns (writers, sessions greeted, failures)."""
    writers: list[asyncio.StreamWriter] = []
    greeted = 0
    semaphore = asyncio.Semaphore(256)  # connect in waves: no SYN-queue overflow

    async def one() -> None:
        nonlocal greeted
        async with semaphore:
            reader, writer = await connect(port, source())
            writers.append(writer)
            if not greet:
                return
            if (await asyncio.wait_for(_reply(reader), 30)).startswith(b"220"):
                greeted += 1
            for n, command in enumerate(commands, 1):
                writer.write(command)
                if n < len(commands):
                    await asyncio.wait_for(_reply(reader), 30)

    results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
    return writers, greeted, [r for r in results if isinstance(r, BaseException)]


async def idle_row(tmp: Path, sink: int, dns: int, cpus: set[int]) -> Row:
    """RSS growth per greeted, idle session, with IDLE_CONNECTIONS held open at once.

    A fresh gateway each run: a process that has held 10,000 sessions keeps the memory
    for the next 10,000, and would report almost nothing."""
    per_connection, held = [], []
    sources = cycling([f"127.0.0.{n}" for n in range(10, 30)])  # clean, DNS cached after one
    for run in range(RUNS):
        gateway = GatewayProcess(tmp, f"idle{run}", sink, dns, cpus)
        try:
            writers, _, _ = await hold(gateway.port, 200, sources)  # DNS, first sessions
            for writer in writers:
                writer.close()
            await asyncio.sleep(1.0)
            before = rss(gateway.proc)
            writers, greeted, failures = await hold(gateway.port, IDLE_CONNECTIONS, sources)
            await asyncio.sleep(1.0)  # every connect stage done
            after = rss(gateway.proc)
            for writer in writers:
                writer.close()
        finally:
            gateway.stop()
        if failures:
            raise RuntimeError(f"{len(failures)} idle connections failed: {failures[0]!r}")
        per_connection.append((after - before) / IDLE_CONNECTIONS / 1024)
        held.append(greeted)
    return Row(
        "smtp",
        "idle open connection",
        statistics.median(per_connection),
        "KiB each",
        target=12.0,
        higher_is_better=False,
        note=f"RSS growth with {min(held):,} greeted sessions held at once; "
        + _runs_note(per_connection, " KiB"),
    )


async def workers_rows(
    tmp: Path, sink: int, dns: int, helpers: tuple[subprocess.Popen, ...]
) -> list[Row]:
    """The rejection path and the relay path with one and two worker processes, nobody
    pinned: the load generator, DNS server and sink share the two CPUs with the gateway."""
    everything = set(ALL_CPUS)
    for pid in (0, *(helper.pid for helper in helpers)):
        os.sched_setaffinity(pid, everything)
    rows = []
    rejection: dict[int, list[Run]] = {}
    relay: dict[int, list[Run]] = {}
    for workers in (1, 2):
        gateway = GatewayProcess(
            tmp, f"workers{workers}", sink, dns, everything, f"[server]\nworkers = {workers}\n"
        )
        try:
            await asyncio.sleep(0.5 * workers)  # every worker up
            new = NewAddresses(8_000_000 + 1_000_000 * workers)
            await drive(gateway.port, new, DEFERRAL, b"450", seconds=1.0)
            familiar = cycling(familiar_addresses())
            rejection[workers], relay[workers] = [], []
            for _ in range(RUNS):
                rejection[workers].append(await drive(gateway.port, new, DEFERRAL, b"450", gateway))
                relay[workers].append(await drive(gateway.port, familiar, RELAY, b"250", gateway))
        finally:
            gateway.stop()
    for workers in (1, 2):
        rows.append(
            path_row(
                f"rejection path, workers = {workers} (unpinned)",
                "sessions/s",
                rejection[workers],
                None,
                target=None
                if workers == 1
                else 1.6 * statistics.median(r.rate for r in rejection[1]),
                target_on="value",
                higher_is_better=True,
                note="first-time hosts" + ("" if workers == 1 else "; target: 1.6x one worker"),
            )
        )
    for workers in (1, 2):
        rows.append(
            path_row(
                f"relay path, workers = {workers} (unpinned)",
                "msgs/s",
                relay[workers],
                None,
                target=None if workers == 1 else 1000.0,
                target_on="value",
                higher_is_better=True,
                note="familiar hosts, 1,000-byte messages",
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class Helpers:
    """What every section's gateways run against, on the CPUs they do not use."""

    sink: int  # the sink backend's port
    dns: int  # the DNS server's port
    gateway_cpus: set[int]
    open_files: int  # the limit this process (and its children) can open
    processes: tuple[subprocess.Popen, ...]


@contextlib.contextmanager
def helpers() -> Iterator[Helpers]:
    """The sink and the DNS server started on the other CPU(s), with this process (the
    load generator); stopped at the end."""
    files = lift_open_files_limit()
    gateway_cpus, other_cpus = cpus()
    os.sched_setaffinity(0, other_cpus)
    sink_port, dns_port = free_port(), free_port()
    sink = spawn(["-m", "bench.sink", str(sink_port)], other_cpus)
    dns = spawn(["-m", "bench.dnsd", str(dns_port)], other_cpus)
    try:
        wait_port(sink_port)
        yield Helpers(sink_port, dns_port, gateway_cpus, files, (sink, dns))
    finally:
        for process in (sink, dns):
            process.terminate()
            process.wait(10)


async def run(tmp: Path) -> list[Row]:
    rows: list[Row] = []
    with helpers() as h:
        gateway = GatewayProcess(tmp, "gateway", h.sink, h.dns, h.gateway_cpus)
        try:
            rows.append(await first_time_row(gateway, h.sink))
            rows.append(await suspect_row(gateway, h.sink))
            rows.append(await relay_row(gateway, h.sink))
            rows.append(await relay_100k_row(gateway, h.sink))
            rows.append(await relay_mix_row(gateway, h.sink))
            rows.append(await unloaded_latency_row(gateway, h.sink))
            rows.append(await relay_pipelined_row(gateway, h.sink))
        finally:
            gateway.stop()
        reusing = GatewayProcess(
            tmp, "reuse", h.sink, h.dns, h.gateway_cpus, backend=REUSE_BACKEND
        )  # fmt: skip
        try:
            rows.append(await relay_pipelined_row(reusing, h.sink, reuse=True))
        finally:
            reusing.stop()
        rows.append(await large_messages_row(tmp, h.sink, h.dns, h.gateway_cpus))
        if h.open_files >= IDLE_CONNECTIONS + 1000:
            rows.append(await idle_row(tmp, h.sink, h.dns, h.gateway_cpus))
        else:
            print(f"bench: idle row skipped, open files limited to {h.open_files}", file=sys.stderr)
        rows += await workers_rows(tmp, h.sink, h.dns, h.processes)
    return rows
