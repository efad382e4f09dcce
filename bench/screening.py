"""The screening stages' costs (issue 12): DNS lists, the pregreet wait, the tarpit.

* first-time host deferred, with and without two DNS lists configured: the same load as
  bench/smtp.py's first-time row (a never-seen suspect each session), the gateway's CPU
  per session side by side; the lists answer NXDOMAIN (not listed), as most do;
* the pregreet wait: PREGREET_SESSIONS first-time hosts held in a `greet_wait` at once; the
  gateway's CPU while they wait, per session and second (a wait is one timer);
* the tarpit: TARPIT_SESSIONS suspects' RCPTs held at once; RSS growth per held session
  (target: no more than an idle connection, 12 KiB) and CPU while they are held.

Same processes and pinning as bench/smtp.py: the gateway on the first CPU; the load,
the DNS server and the sink on the other.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

from bench.report import Row
from bench.smtp import (
    DEFERRAL,
    EHLO,
    MAIL,
    RCPT,
    RUNS,
    GatewayProcess,
    NewAddresses,
    _runs_note,
    cpu_row,
    cycling,
    drive,
    helpers,
    hold,
    rss,
)

LISTS = '[dnsbl]\nsites = ["bl1.bench.example*2", "bl2.bench.example=127.0.0.[2..11]*1"]\n'
PREGREET_SESSIONS = 2_000
PREGREET_WAIT = 6.0
SETTLE = 3.0  # seconds the CPU of held sessions is measured over
TARPIT_SESSIONS = 5_000
TARPIT_DELAY = 120  # longer than the measurement: every session is held throughout


async def lists_rows(tmp: Path, sink: int, dns: int, cpu: set[int]) -> list[Row]:
    rows = []
    for name, extra, start in (("no-lists", "", 20_000_000), ("two-lists", LISTS, 30_000_000)):
        gateway = GatewayProcess(tmp, name, sink, dns, cpu, extra)
        try:
            await drive(gateway.port, NewAddresses(start), DEFERRAL, b"450", seconds=1.0)
            label = "two DNS lists" if extra else "no DNS list"
            rows.append(
                await cpu_row(
                    f"first-time host deferred, {label}", "sessions/s", 0.75,
                    "new suspect each session: PTR + A" + (" + 2 list queries" if extra else ""),
                    gateway, sink, NewAddresses(start + 1_000_000), DEFERRAL,
                )
            )  # fmt: skip
        finally:
            gateway.stop()
    without, with_lists = rows
    added = (with_lists.cpu_ms or 0) - (without.cpu_ms or 0)
    rows.append(
        Row(
            "screening",
            "CPU added by two DNS lists",
            added,
            "ms/session",
            target=0.1,
            higher_is_better=False,
            note=f"{with_lists.cpu_ms:.3f} - {without.cpu_ms:.3f} ms per first-time host",
        )
    )
    return rows


async def _hold(port: int, count: int, source, commands=(), greet: bool = True) -> list:
    """bench/smtp.py's `hold`, every session a must: the writers of the held sessions."""
    writers, _, failures = await hold(port, count, source, commands, greet)
    if failures:
        raise RuntimeError(f"{len(failures)} sessions failed: {failures[0]!r}")
    return writers


async def _cpu_while_held(gateway: GatewayProcess, writers: list, sessions: int) -> float:
    """µs of the gateway's CPU per held session and second, over SETTLE seconds; then
    the sessions are let go."""
    before = gateway.cpu()
    await asyncio.sleep(SETTLE)
    spent = gateway.cpu() - before
    for writer in writers:
        writer.close()
    return 1e6 * spent / sessions / SETTLE


async def pregreet_row(tmp: Path, sink: int, dns: int, cpu: set[int]) -> Row:
    """CPU while PREGREET_SESSIONS first-time hosts sit in the pregreet wait."""
    per_wait = []
    extra = f"[pregreet]\ngreet_wait = {PREGREET_WAIT}\n"
    for run in range(RUNS):
        gateway = GatewayProcess(tmp, f"pregreet{run}", sink, dns, cpu, extra)
        try:
            source = NewAddresses(40_000_000 + run * 100_000)
            writers = await _hold(gateway.port, PREGREET_SESSIONS, source, greet=False)
            await asyncio.sleep(1.0)  # every connect stage done: they all wait now
            per_wait.append(await _cpu_while_held(gateway, writers, PREGREET_SESSIONS))
        finally:
            gateway.stop()
    return Row(
        "screening",
        "pregreet wait, CPU while waiting",
        statistics.median(per_wait),
        "µs/session/s",
        note=f"{PREGREET_SESSIONS:,} ichigen-san in a {PREGREET_WAIT:g} s greet_wait; "
        + _runs_note(per_wait, " µs"),
    )


async def tarpit_rows(tmp: Path, sink: int, dns: int, cpu: set[int]) -> list[Row]:
    """RSS per tarpitted session, and CPU while TARPIT_SESSIONS are held."""
    memory, spent_us = [], []
    commands = (EHLO, MAIL, RCPT)  # the deferral session's, its RCPT the one held
    extra = f"[tarpit]\ndelay = {TARPIT_DELAY}\nmax_sessions = {TARPIT_SESSIONS + 1000}\n"
    for run in range(RUNS):
        gateway = GatewayProcess(
            tmp, f"tarpit{run}", sink, dns, cpu, extra, policy='suspect_action = "tarpit"'
        )
        try:
            # A pool of suspects, their DNS answers cached and records made by a first
            # round, as bench/smtp.py's idle row: what grows is the sessions, not caches.
            pool = [NewAddresses(50_000_000 + run * 100_000)() for _ in range(50)]
            source = cycling(pool)
            warm = await _hold(gateway.port, 200, source, commands)
            await asyncio.sleep(1.0)
            for writer in warm:
                writer.close()
            await asyncio.sleep(1.0)
            before = rss(gateway.proc)
            writers = await _hold(gateway.port, TARPIT_SESSIONS, source, commands)
            await asyncio.sleep(2.0)  # every RCPT decided and held
            memory.append((rss(gateway.proc) - before) / TARPIT_SESSIONS / 1024)
            spent_us.append(await _cpu_while_held(gateway, writers, TARPIT_SESSIONS))
        finally:
            gateway.stop()
    return [
        Row(
            "screening",
            "tarpitted session held",
            statistics.median(memory),
            "KiB each",
            target=12.0,
            higher_is_better=False,
            note=f"RSS growth with {TARPIT_SESSIONS:,} suspects' RCPTs held at once; "
            + _runs_note(memory, " KiB"),
        ),
        Row(
            "screening",
            "tarpit, CPU while holding",
            statistics.median(spent_us),
            "µs/session/s",
            note=f"{TARPIT_SESSIONS:,} held; " + _runs_note(spent_us, " µs"),
        ),
    ]


async def run(tmp: Path) -> list[Row]:
    rows: list[Row] = []
    with helpers() as h:
        rows += await lists_rows(tmp, h.sink, h.dns, h.gateway_cpus)
        rows.append(await pregreet_row(tmp, h.sink, h.dns, h.gateway_cpus))
        if h.open_files >= TARPIT_SESSIONS + 1000:
            rows += await tarpit_rows(tmp, h.sink, h.dns, h.gateway_cpus)
        else:
            print(
                f"bench: tarpit rows skipped, open files limited to {h.open_files}", file=sys.stderr
            )
    return rows
