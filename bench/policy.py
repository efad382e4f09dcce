"""Decisions per second with big lists loaded and DNS answers cached (policy-core issue).

Figures on one core (the process and its SQLite thread pinned to one CPU):
* the pure policy step: screen, penalty check, cached FCrDNS, assess, relay check,
  deferral key and state-machine step on an in-memory record; once for a *returning*
  client (its PTR names judged before: the policy remembers name judgements) and once
  for a client whose names are judged for the first time (the memo emptied before each
  decision: every list lookup done in full);
* the same decision through the Decider with the SQLite store: a penalty-box read at
  connect and an atomic read-modify-write at RCPT, 64 decisions in flight at once as in
  a busy gateway (and one at a time, for the latency). Worst case on purpose: every
  client is deferrable (`defer = "all"`) and nobody is ever penalised, so every
  decision makes both round trips.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import replace
from pathlib import Path

from bench.fixtures import clients, write_cidrs, write_regexes
from bench.report import Row
from gateway.assembly import build_policy
from gateway.config import settings_from_mapping
from gateway.decider import Decider
from gateway.policy.net import client_address
from gateway.policy.vocabulary import DeferMode
from gateway.resolver.resolver import Resolver
from gateway.store import open_store
from tests.dnsserver import DnsServer
from tests.redisserver import RedisServer

CIDRS = 100_000
REGEXES = 5_000
CLIENTS = 10_000
SECONDS = 4.0


_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]


def _other_cpus() -> set[int]:
    """Every CPU but the one the benchmark pins itself to (all of them on a 1-CPU box)."""
    return set(_CPUS[:-1]) or set(_CPUS)


def _pin_to_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpu = _CPUS[-1]
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


async def _prime_dns(population, tmp: Path) -> tuple[Resolver, DnsServer]:
    server = DnsServer(ttl=86400, negative_ttl=3600).start()
    for c in population:
        if c.name:
            server.add_host(c.name, c.address)
    resolver = Resolver([("127.0.0.1", server.port)], timeout=5.0, cache_size=2 * CLIENTS)
    sem = asyncio.Semaphore(32)

    async def one(address):
        async with sem:
            await resolver.rdns(address)

    await asyncio.gather(*(one(client_address(c.address)) for c in population))
    missing = [c for c in population if resolver.cached_rdns(client_address(c.address)) is None]
    if missing:
        raise RuntimeError(
            f"{len(missing)} clients have no cached DNS answer: not the case measured"
        )
    return resolver, server


def _pure_step(policy, resolver, addresses, now: float, *, forget: bool) -> tuple[int, float]:
    records: dict[str, object] = {}
    memo = policy.name_memo
    sender, rcpt = "someone@example.net", "bob@example.com"
    done = 0
    started = time.perf_counter()
    deadline = started + SECONDS
    while time.perf_counter() < deadline:
        for text in addresses:
            if forget:
                memo.clear()
            address = client_address(text)
            screening = policy.screen(address)
            policy.before_greeting(screening, None, now)
            assessment = policy.assess(screening, resolver.cached_rdns(address))
            policy.relay_check(rcpt)
            if assessment.verdict is None:
                key = policy.deferral_key(assessment, sender, rcpt)
                step = policy.step(assessment, records.get(key), now)
                records[key] = step.record
            done += 1
            if done % 1000 == 0 and time.perf_counter() >= deadline:
                break
    return done, time.perf_counter() - started


async def _read_ahead(decider: Decider, assessment, connect):
    """The record RCPT starts from, planned and read as the SMTP adapter does it
    (smtp/server.py `plan_snapshot`, which reads in a task overlapping EHLO and MAIL)."""
    snapshot, key = decider.prefetch_plan(assessment, known=connect.snapshot)
    return snapshot if key is None else await decider.store.read(key)


async def _with_store(decider: Decider, addresses, concurrency: int) -> tuple[int, float]:
    """Decisions as a session makes them: penalty read at connect, assessment (cached
    DNS), prefetch of the record (overlapping EHLO/MAIL in a real session), RCPT."""
    done = 0
    started = time.perf_counter()
    deadline = started + SECONDS
    queue = list(addresses)

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < deadline:
            address = client_address(queue[i % len(queue)])
            connect = await decider.at_connect(address)
            assessment = await decider.assess(connect.screening)
            snapshot = await _read_ahead(decider, assessment, connect)
            await decider.at_rcpt(
                assessment, "someone@example.net", "bob@example.com", snapshot=snapshot
            )
            done += 1
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return done, time.perf_counter() - started


async def _redis_commands(decider: Decider, store, addresses, samples: int = 200) -> str:
    """Redis commands a session sends, by stage: the greeting's read, and the RCPT decision."""
    sent = 0
    send = store.redis.execute_command

    async def counting(*args, **kwargs):
        nonlocal sent
        sent += 1
        return await send(*args, **kwargs)

    at_connect = at_rcpt = 0
    store.redis.execute_command = counting
    try:
        for text in addresses[:samples]:
            sent = 0
            connect = await decider.at_connect(client_address(text))
            assessment = await decider.assess(connect.screening)
            snapshot = await _read_ahead(decider, assessment, connect)
            at_connect += sent
            sent = 0
            await decider.at_rcpt(
                assessment, "someone@example.net", "bob@example.com", snapshot=snapshot
            )
            at_rcpt += sent
    finally:
        store.redis.execute_command = send
    before, during = at_connect / samples, at_rcpt / samples
    return f"Redis commands: {before:.2f} before the greeting, {during:.2f} at RCPT"


def _worst_case(policy):
    """Every client deferrable, nobody ever penalised: every decision makes its round trips."""
    return replace(
        policy,
        defer_mode=DeferMode.ALL,
        rules=replace(policy.rules, impatient_retries=0),
        name_memo={},
    )


async def _store_rows(label: str, url: str, policy, resolver, addresses) -> list[Row]:
    store = open_store(url)
    await store.open()
    try:
        worst = _worst_case(policy)
        decider = Decider(lambda: worst, store, resolver)
        busy, busy_s = await _with_store(decider, addresses, 64)
        single, single_s = await _with_store(decider, addresses, 1)
        note = ""
        if label == "Redis":
            note = await _redis_commands(decider, store, addresses)
    finally:
        await store.close()
    return [
        Row(
            "policy",
            f"with {label} store, 64 in flight",
            busy / busy_s,
            "decisions/s",
            target=10_000 if label == "SQLite" else None,
            note=note or "penalty read (with the address key's record) + RCPT write",
        ),
        Row(
            "policy",
            f"with {label} store, 1 in flight",
            single / single_s,
            "decisions/s",
            note=f"{1e6 * single_s / max(single, 1):.0f} us per decision",
        ),
    ]


async def run(tmp: Path) -> list[Row]:
    rng = random.Random(2026)
    pinning = _pin_to_one_cpu()
    write_cidrs(tmp / "deny.txt", CIDRS, rng)
    mix = write_regexes(tmp / "blacklist.txt", REGEXES, rng)
    raw = {
        "relay": {"accept_domains": ["example.com"]},
        "store": {"url": f"sqlite://{tmp / 'policy-bench.db'}"},
        "lists": {
            "allow_files": [str(Path("conf/allow.txt").resolve())],
            "deny_files": ["deny.txt"],
        },
        "s25r": {"blacklist_files": ["blacklist.txt"]},
    }
    settings = settings_from_mapping(raw, "bench.toml", tmp)
    t0 = time.perf_counter()
    policy = build_policy(settings)
    load_seconds = time.perf_counter() - t0

    population = clients(CLIENTS, rng)
    addresses = [c.address for c in population]
    resolver, server = await _prime_dns(population, tmp)
    try:
        fresh, fresh_s = _pure_step(policy, resolver, addresses, time.time(), forget=True)
        pure, pure_s = _pure_step(policy, resolver, addresses, time.time(), forget=False)
        store_rows = await _store_rows("SQLite", settings.store.url, policy, resolver, addresses)
        redis = RedisServer().start()
        try:
            os.sched_setaffinity(redis.process.pid, _other_cpus())  # Redis is another service
            store_rows += await _store_rows("Redis", redis.url, policy, resolver, addresses)
        finally:
            redis.stop()
    finally:
        resolver.close()
        server.stop()

    lists = (
        f"{CIDRS:,} CIDRs + {REGEXES:,} regexes ({', '.join(f'{k} {v}' for k, v in mix.items())})"
    )
    return [
        Row("policy", "list load time", load_seconds, "s", note=lists),
        Row(
            "policy",
            "pure policy step, returning client",
            pure / pure_s,
            "decisions/s",
            target=50_000,
            note=pinning,
        ),
        Row(
            "policy",
            "pure policy step, names judged afresh",
            fresh / fresh_s,
            "decisions/s",
            note="every list lookup in full",
        ),
        *store_rows,
    ]
