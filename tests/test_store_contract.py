"""The Store contract (gateway/store/base.py), run against every backend."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.policy.messages import Message
from gateway.policy.records import Familiar, Penalty, Pending, Pool, Strikes, Tally, Trace
from gateway.store import open_store
from gateway.store.base import DynamicEntry, Outcome, Store
from gateway.store.codec import decode, encode
from tests.conftest import FakeClock

BACKENDS = ["memory", "sqlite", "redis", "redis-cluster"]
SERVED = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}  # by a fixture


def _url(kind: str, tmp_path: Path) -> str:
    return "memory:" if kind == "memory" else f"sqlite://{tmp_path / 'state' / 'state.db'}"


def url_of(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The URL of an empty store of this kind (Redis ones started by a fixture)."""
    if kind in SERVED:
        return request.getfixturevalue(SERVED[kind])
    return _url(kind, tmp_path)


@pytest.fixture(params=BACKENDS)
async def store(request, tmp_path, clock):
    url = url_of(request.param, tmp_path, request)
    s = open_store(url, clock=clock)
    await s.open()
    yield s
    await s.close()


def pending(now: float, attempts: int = 1, ttl: float = 1000) -> Pending:
    return Pending(now, now, attempts, 0, "s25r_rule1", now + ttl, "192.0.2.9", "p1.example.net")


def bump(record) -> Outcome[int]:
    """Read-modify-write: one more attempt."""
    attempts = record.attempts + 1 if isinstance(record, Pending) else 1
    base = record or pending(0.0, 0, ttl=10**12)
    new = Pending(base.first_seen, base.last_seen, attempts, 0, base.reason, base.expires)
    return Outcome(attempts, True, new)


@pytest.mark.parametrize(
    "record",
    [
        Pending(1.0, 2.0, 3, 1, "s25r_rule3", 5.0, "192.0.2.9", "p1.example.net"),
        Pending(
            1.0, 2.0, 3, 1, "ichigen", 5.0, "", "", (("0a1b2c3d", 1.5, "ab12cd ef34"),), 2, True
        ),
        Familiar(1.0, 2.0, 3.0),
        Penalty(1.0, 2.0, 6, "2001:db8::/64", ""),
        Penalty(1.0, 2.0, 5, "192.0.2.9", "", "auth_failures"),
        Tally(2, 1.5, 9.0),
        Strikes(1.0, 4, 3601.0),
        Trace(1.0, "2001:db8::25", "mx6.sender.example", 86401.0),
        Pool(1.0, 2.0, 3024002.0),
    ],
)
def test_codec_round_trip(record) -> None:
    assert decode(encode(record)) == record
    with pytest.raises(ValueError):
        decode('["nonsense", 1]')


def test_a_record_written_before_messages_were_remembered_still_reads() -> None:
    old = decode('["pending",1.0,2.0,3,1,"s25r_rule3",5.0,"192.0.2.9","p1.example.net"]')
    assert old == Pending(1.0, 2.0, 3, 1, "s25r_rule3", 5.0, "192.0.2.9", "p1.example.net")
    assert old.messages == () and old.counted_at == 0.0
    # ...and one written by a later version, with a field this one does not know.
    newer = decode('["familiar",1.0,2.0,3.0,"a field from the future"]')
    assert newer == Familiar(1.0, 2.0, 3.0)
    # Messages remembered the way before (one hash of sender, recipient and SIZE): read
    # as messages that match by that hash, first tried when the record began.
    before = decode('["pending",1.0,2.0,3,1,"ichigen",5.0,"","",[["0a1b2c3d",1.5,"ab12"]]]')
    assert before.messages == (("0a1b2c3d", 1.5, "ab12"),)
    assert before.memory() == (Message("", None, ("0a1b2c3d",), 1.0, 1.5, "ab12", 0),)
    # A penalty from before there were several reasons for one was for impatience.
    assert decode('["penalty",1.0,2.0,6,"192.0.2.9",""]').reason == "impatient"


async def test_a_pending_record_keeps_its_messages(store: Store, clock: FakeClock) -> None:
    now = clock.now
    tried = (
        Message("0a1b2c3d", 2048, ("11223344", "55667788"), now, now, "ab12cd"),
        Message("99887766", None, ("11223344",), now, now + 1, "", 9),
    )
    record = Pending(now, now, 2, 1, "ichigen", now + 100, remembered=tried)
    await store.put("defer:192.0.2.9", record)
    assert await store.get("defer:192.0.2.9") == record
    assert (await store.read("defer:192.0.2.9")).record == record


async def test_claim_writes_only_where_nothing_lives(store: Store, clock: FakeClock) -> None:
    """A message's trace keeps its first try: put-if-absent, the live record returned."""
    key = "trace:0a1b2c3d.1234.11223344"
    first = Trace(clock.now, "192.0.2.9", "", clock.now + 100)
    assert await store.claim(key, first) is None
    later = Trace(clock.now + 5, "192.0.2.10", "mx.example", clock.now + 105)
    assert await store.claim(key, later) == first
    assert await store.get(key) == first
    assert (await store.counts()).get("trace") == 1  # indexed as any record (Redis: fresh)
    clock.advance(101)  # expired: as good as absent
    assert await store.claim(key, Trace(clock.now, "192.0.2.11", "", clock.now + 100)) is None
    assert (await store.get(key)).address == "192.0.2.11"


async def test_get_put_delete(store: Store, clock: FakeClock) -> None:
    assert await store.get("defer:192.0.2.9") is None
    record = Familiar(clock.now, clock.now, clock.now + 100)
    await store.put("defer:192.0.2.9", record)
    assert await store.get("defer:192.0.2.9") == record
    assert await store.delete("defer:192.0.2.9") is True
    assert await store.delete("defer:192.0.2.9") is False
    assert await store.get("defer:192.0.2.9") is None


async def test_a_stale_snapshot_never_loses_an_update(store: Store, clock: FakeClock) -> None:
    await store.update("defer:k", bump)
    snapshot = (await store.read_many(["defer:k"]))[0]
    assert snapshot.record.attempts == 1
    await store.update("defer:k", bump)  # someone else moves on meanwhile
    # A writing change given the old snapshot decides again on the real record.
    assert await store.update("defer:k", bump, snapshot=snapshot) == 3
    assert (await store.get("defer:k")).attempts == 3


async def test_a_current_snapshot_decides_a_write_once(store: Store, clock: FakeClock) -> None:
    await store.update("defer:k", bump)
    snapshot = await store.read("defer:k")
    calls = []

    def counted(record) -> Outcome[int]:
        calls.append(record)
        return bump(record)

    assert await store.update("defer:k", counted, snapshot=snapshot) == 2
    assert calls == [snapshot.record]  # not decided again on the same record
    assert (await store.get("defer:k")).attempts == 2


async def test_a_snapshot_answers_a_change_that_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await store.update("defer:k", bump)
    snapshot = await store.read("defer:k")
    seen = []

    def look(record) -> Outcome[int]:
        seen.append(record)
        return Outcome(record.attempts, False, record)

    assert await store.update("defer:k", look, snapshot=snapshot) == 1
    assert seen == [snapshot.record]  # decided on the snapshot itself


async def test_expired_records_do_not_exist_before_any_sweep(
    store: Store, clock: FakeClock
) -> None:
    await store.put("defer:a", pending(clock.now, ttl=10))
    await store.put("defer:b", Familiar(clock.now, clock.now, clock.now + 100))
    clock.advance(10)  # exactly at expiry: gone
    assert await store.get("defer:a") is None
    assert [k for k, _ in await store.scan("defer:")] == ["defer:b"]
    assert await store.counts() == {"familiar": 1}
    seen = await store.update("defer:a", lambda r: Outcome(r))
    assert seen is None


async def test_update_sees_current_record_and_writes_only_when_asked(
    store: Store, clock: FakeClock
) -> None:
    assert await store.update("defer:k", lambda r: Outcome("looked", False)) == "looked"
    assert await store.get("defer:k") is None
    assert await store.update("defer:k", bump) == 1
    assert await store.update("defer:k", bump) == 2
    assert (await store.get("defer:k")).attempts == 2
    assert await store.update("defer:k", lambda r: Outcome(r.attempts, True, None)) == 2
    assert await store.get("defer:k") is None


async def test_concurrent_updates_lose_nothing(store: Store) -> None:
    results = await asyncio.gather(*(store.update("defer:hot", bump) for _ in range(300)))
    assert sorted(results) == list(range(1, 301))
    assert (await store.get("defer:hot")).attempts == 300


async def test_a_failing_change_function_fails_alone(store: Store) -> None:
    def broken(record):
        raise RuntimeError("bug in a change function")

    outcomes = await asyncio.gather(
        store.update("defer:x", bump),
        store.update("defer:y", broken),
        store.update("defer:x", bump),
        return_exceptions=True,
    )
    assert outcomes[0] == 1 and outcomes[2] == 2
    assert isinstance(outcomes[1], RuntimeError)
    assert await store.update("defer:y", bump) == 1


async def test_scan_and_counts(store: Store, clock: FakeClock) -> None:
    now = clock.now
    await store.put("defer:192.0.2.1", pending(now))
    await store.put("defer:192.0.2.2", pending(now))
    await store.put("defer:google.com", Familiar(now, now, now + 50))
    await store.put("defer:198.51.100.7", Tally(1, now, now + 50))
    await store.put("penalty:192.0.2.3", Penalty(now, now + 50, 6))
    keys = [k for k, _ in await store.scan("defer:192.")]
    assert keys == ["defer:192.0.2.1", "defer:192.0.2.2"]
    assert [k for k, _ in await store.scan("penalty:")] == ["penalty:192.0.2.3"]
    assert len(await store.scan()) == 5
    assert await store.counts() == {"pending": 2, "familiar": 1, "tally": 1, "penalty": 1}


async def test_dynamic_entries_generation_and_expiry(store: Store, clock: FakeClock) -> None:
    g0 = await store.generation()
    await store.add_entry(
        "deny", DynamicEntry("192.0.2.0/24", "hammering", clock.now, clock.now + 60)
    )
    await store.add_entry("deny", DynamicEntry("spam.example", "", clock.now + 1, None))
    await store.add_entry("allow", DynamicEntry("mail.example.org", "partner", clock.now, None))
    g1 = await store.generation()
    assert g1 != g0
    assert [e.text for e in await store.entries("deny")] == ["192.0.2.0/24", "spam.example"]
    assert (await store.entries("allow"))[0] == DynamicEntry(
        "mail.example.org", "partner", clock.now, None
    )
    clock.advance(60)
    assert [e.text for e in await store.entries("deny")] == ["spam.example"]
    assert await store.remove_entry("deny", "spam.example") is True
    assert await store.remove_entry("deny", "spam.example") is False
    assert await store.generation() not in (g0, g1)
    assert await store.entries("deny") == []


async def test_meta_with_ttl(store: Store, clock: FakeClock) -> None:
    await store.set_meta("heartbeat", "pid=1", ttl=30)
    await store.set_meta("schema", "1")
    assert await store.get_meta("heartbeat") == "pid=1"
    clock.advance(30)
    assert await store.get_meta("heartbeat") is None
    assert await store.get_meta("schema") == "1"
    assert await store.get_meta("missing") is None
    await store.set_meta("heartbeat:mx1:10", "a", ttl=60)
    await store.set_meta("heartbeat:mx2:20", "b", ttl=60)
    assert await store.list_meta("heartbeat:") == {"heartbeat:mx1:10": "a", "heartbeat:mx2:20": "b"}


async def test_sweep_removes_only_expired(store: Store, clock: FakeClock) -> None:
    now = clock.now
    for i in range(30):
        await store.put(f"defer:old{i}", pending(now, ttl=5))
    await store.put("defer:live", pending(now, ttl=500))
    clock.advance(10)
    removed = await store.sweep(limit=20)
    assert removed == 20
    assert await store.sweep(limit=20) == 10
    assert await store.sweep() == 0
    assert [k for k, _ in await store.scan()] == ["defer:live"]


async def test_sqlite_restart_keeps_familiar_records(tmp_path, clock: FakeClock) -> None:
    url = _url("sqlite", tmp_path)
    first = open_store(url, clock=clock)
    await first.open()
    await first.put("defer:google.com", Familiar(clock.now, clock.now, clock.now + 3024000))
    await first.close()
    second = open_store(url, clock=clock)
    await second.open()
    try:
        assert await second.get("defer:google.com") == Familiar(
            clock.now, clock.now, clock.now + 3024000
        )
    finally:
        await second.close()


async def test_sqlite_unusable_path_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = open_store(f"sqlite://{blocker / 'sub' / 'state.db'}")
    with pytest.raises(StoreError, match=r"store.url sqlite://.*: cannot create"):
        await store.open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    store = open_store(f"sqlite://{garbage}")
    with pytest.raises(StoreError, match="cannot open the database"):
        await store.open()


def _hammer(url: str, count: int, start) -> None:
    async def run() -> None:
        store = open_store(url)
        await store.open()
        start.wait()
        for _ in range(count):
            await store.update("defer:hot", bump)
        await store.close()

    asyncio.run(run())


def _open_and_close(url: str, start) -> None:
    async def run() -> None:
        store = open_store(url)
        start.wait()
        await store.open()
        await store.close()

    asyncio.run(run())


def test_processes_opening_a_new_sqlite_file_at_once_all_open(tmp_path) -> None:
    """Two gateways, or a gateway and the CLI, creating the database at the same moment:
    SQLite refuses the switch to WAL at once ("database is locked", no busy handler),
    and the store waits out busy_timeout itself."""
    ctx = multiprocessing.get_context("spawn")
    for trial in range(3):
        (tmp_path / f"t{trial}").mkdir()
        url = f"sqlite://{tmp_path / f't{trial}' / 'state.db'}"
        start = ctx.Event()
        workers = [ctx.Process(target=_open_and_close, args=(url, start)) for _ in range(6)]
        for w in workers:
            w.start()
        start.set()
        for w in workers:
            w.join(60)
        assert [w.exitcode for w in workers] == [0] * 6


@pytest.mark.parametrize("kind", ["sqlite", "redis", "redis-cluster"])
def test_two_processes_hammering_one_key_lose_no_update(kind, tmp_path, request) -> None:
    url = url_of(kind, tmp_path, request)
    if kind == "sqlite":
        (tmp_path / "state").mkdir()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_hammer, args=(url, 400, start)) for _ in range(2)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0

    async def final() -> int:
        store = open_store(url)
        await store.open()
        try:
            return (await store.get("defer:hot")).attempts
        finally:
            await store.close()

    assert asyncio.run(final()) == 800
