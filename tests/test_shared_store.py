"""Several gateways, one memory: Redis shared by gateway processes, and store outages."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from gateway.errors import StoreBusy, StoreError
from gateway.policy.records import Pending
from gateway.store import open_store
from gateway.store.base import Outcome
from gateway.store.codec import encode
from gateway.store.guard import GuardedStore
from gateway.store.redis import RedisStore
from tests.backend import FakeBackend
from tests.conftest import CONF
from tests.dnsserver import DnsServer
from tests.gatewayenv import populate, start_env, write_gateway_config
from tests.redisserver import RedisServer, free_port
from tests.smtpclient import Client
from tests.test_run import one_line_error, start, wait_for_line, write_config
from tests.test_store_contract import bump, url_of
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(not RedisServer.available(), reason="needs redis-server")


async def rcpt(port: int, source: str, rcpt: str = "bob@example.com") -> int:
    client = await Client.connect(port, source=source)
    if client.greeting.code != 220:
        await client.close()
        return client.greeting.code
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    reply = await client.cmd(f"RCPT TO:<{rcpt}>")
    if reply.code != 421:
        await client.cmd("QUIT")
    await client.close()
    return reply.code


# -- two gateway processes, one Redis (or one Redis Cluster) ----------------------------


@pytest.fixture(params=["redis", "redis-cluster"])
async def two_gateways(request, tmp_path):
    redis_url = url_of(request.param, tmp_path, request)
    dns = DnsServer().start()
    populate(dns)
    backend = await FakeBackend().start()
    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        shutil.copy(CONF / name, tmp_path / name)
    processes, ports = [], []
    for n in range(2):
        port = free_port()
        config = write_gateway_config(
            tmp_path / f"gateway{n}.toml",
            port=port,
            backend=backend.port,
            dns=dns.address,
            store=redis_url,
            lists=tmp_path,
            # Real seconds (two processes share no fake clock): a 1 s retry delay.
            policy="min_retry_delay = 6\nimpatient_retries = 3\nburst_window = 0.3",
        )
        process = await start(config)
        await wait_for_line(process, "onajimi listening on")
        processes.append(process)
        ports.append(port)
    yield ports, tmp_path
    for process in processes:
        process.kill()
        await process.wait()
    await backend.stop()
    dns.stop()


async def test_two_gateways_share_deferrals_familiarity_penalties_and_entries(two_gateways) -> None:
    (a, b), directory = two_gateways
    assert await rcpt(a, "127.0.0.3") == 450  # deferred by the first gateway
    await asyncio.sleep(6.2)  # min_retry_delay = 6 s, in real time: two processes
    assert await rcpt(b, "127.0.0.3") == 250  # retried properly at the second: promoted
    assert await rcpt(a, "127.0.0.3") == 250  # familiar at the first too

    # The same message at both MX hosts at once is a fallback, not a retry; then it comes
    # back again and again, each time after the burst (0.3 s here) and well within the
    # patience of a retry timer (0.6 s): the third counted retry is the penalty box, and
    # both gateways know it.
    assert await rcpt(a, "127.0.0.4") == 450
    assert await rcpt(b, "127.0.0.4") == 450
    for port in (a, b):
        await asyncio.sleep(0.35)
        assert await rcpt(port, "127.0.0.4") == 450
    await asyncio.sleep(0.35)
    assert await rcpt(a, "127.0.0.4") == 421
    assert await rcpt(a, "127.0.0.4") == 421  # seen at the greeting of both
    assert await rcpt(b, "127.0.0.4") == 421

    config = directory / "gateway0.toml"
    subprocess.run(
        [sys.executable, "-m", "gateway", "deny", "add", "127.0.0.2", "-c", str(config)],
        check=True,
        capture_output=True,
    )
    for port in (a, b):  # gateways poll the store's entry generation every 2 s
        await eventually(lambda p=port: rcpt(p, "127.0.0.2"), lambda code: code == 554)


# -- outages -------------------------------------------------------------------------------


@pytest.fixture
async def paused_redis():
    server = RedisServer().start()
    yield server
    server.stop()


async def _gateway_on(url: str, **policy):
    return await start_env({"store": {"url": url, "timeout": 0.5, **policy}})


async def test_hung_redis_gives_451_quickly_and_recovers_by_itself(paused_redis) -> None:
    env = await _gateway_on(paused_redis.url)
    try:
        assert await rcpt(env.port, "127.0.0.3") == 450
        paused_redis.pause()
        started = time.monotonic()
        client = await env.client("127.0.0.5")  # a suspect: needs the store
        await client.ehlo()
        await client.cmd("MAIL FROM:<alice@sender.example>")
        reply = await client.cmd("RCPT TO:<bob@example.com>", timeout=10)
        assert reply.code == 451 and reply.text.startswith("4.3.0")
        assert time.monotonic() - started < 10  # seconds, not redis-py's minute
        await client.close()
        # Clean and allow-listed clients do not need the store: relayed as usual.
        for source in ("127.0.0.2", "127.0.0.12"):
            c = await env.client(source)
            await c.ehlo()
            assert [
                r.code for r in await c.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
            ] == [250] * 3
            await c.close()
        assert env.gateway.metrics.store_up._value.get() == 0
        paused_redis.resume()
        # The breaker tries the store again after 2 s; then normal decisions, no restart.
        code = await eventually(lambda: rcpt(env.port, "127.0.0.6"), lambda c: c != 451)
        assert code == 450
        assert env.gateway.metrics.store_up._value.get() == 1
        assert env.gateway.metrics.store_errors._value.get() >= 1
    finally:
        paused_redis.resume()
        await env.close()


async def test_a_gateway_started_before_its_redis_answers_then_uses_it(caplog) -> None:
    """Redis unreachable at start: the gateway opens its port all the same and answers
    per store.on_error (451 for whoever needs the store, relay for the rest), then uses
    the store as soon as it answers, with no restart."""
    port = free_port()
    with caplog.at_level("WARNING", logger="onajimi"):
        env = await _gateway_on(f"redis://127.0.0.1:{port}/0")
    server = None
    try:
        (line,) = [
            r.getMessage() for r in caplog.records if "starting without it" in r.getMessage()
        ]
        assert f"redis://127.0.0.1:{port}/0" in line and "store.on_error = tempfail" in line
        client = await env.client("127.0.0.5")  # a suspect: needs the store
        await client.ehlo()
        await client.cmd("MAIL FROM:<alice@sender.example>")
        reply = await client.cmd("RCPT TO:<bob@example.com>", timeout=10)
        assert reply.code == 451 and reply.text.startswith("4.3.0")
        await client.close()
        clean = await env.client("127.0.0.2")
        await clean.ehlo()
        replies = await clean.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
        assert [r.code for r in replies] == [250] * 3
        await clean.close()
        assert env.gateway.metrics.store_up._value.get() == 0
        server = RedisServer(port).start()
        code = await eventually(lambda: rcpt(env.port, "127.0.0.6"), lambda c: c != 451)
        assert code == 450  # deferred: the store answers now, and remembers it
        assert env.gateway.metrics.store_up._value.get() == 1
    finally:
        await env.close()
        if server is not None:
            server.stop()


async def test_a_wrong_redis_password_still_stops_the_start(tmp_path) -> None:
    """An unreachable store is an outage to wait out; a refusal is a setting to fix."""
    server = RedisServer().start()
    server.command("CONFIG", "SET", "requirepass", "s3cret")
    try:
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        config = write_config(
            tmp_path, port=free_port(), backend=free_port(), dns="127.0.0.1", store=url
        )
        await one_line_error(config, "cannot connect")
    finally:
        server.stop()


async def test_on_error_pass_relays_during_an_outage(paused_redis) -> None:
    env = await _gateway_on(paused_redis.url, on_error="pass")
    try:
        paused_redis.pause()
        client = await env.client("127.0.0.3")
        await client.ehlo()
        replies = await client.send_mail("a@sender.example", ["bob@example.com"], b"s\r\n")
        assert [r.code for r in replies] == [250, 250, 250]
        await client.close()
    finally:
        paused_redis.resume()
        await env.close()


async def test_a_hammered_key_is_tempfailed_without_an_outage(paused_redis) -> None:
    env = await _gateway_on(paused_redis.url, on_error="pass")
    try:
        assert await rcpt(env.port, "127.0.0.3") == 450
        [stored] = [k for k in paused_redis.keys("onajimi:{*") if ":defer:" in k]
        turn = RedisStore._record_key(stored.split("}:", 1)[1], "turn:")
        paused_redis.command("SET", turn, "another-gateway", "PX", "60000")  # never ends
        # Even with on_error = "pass": contention is that client's doing, not an outage.
        assert await rcpt(env.port, "127.0.0.3") == 451
        assert await rcpt(env.port, "127.0.0.5") == 450  # everyone else decided as usual
        assert env.gateway.metrics.store_up._value.get() == 1
        assert env.gateway.metrics.store_errors._value.get() == 0
    finally:
        await env.close()


async def test_sqlite_locked_too_long_is_an_outage_too(tmp_path) -> None:
    path = tmp_path / "state.db"
    env = await _gateway_on(f"sqlite://{path}", timeout=0.3)
    locker = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        locker.execute("BEGIN EXCLUSIVE")  # another process holding the lock
        assert await rcpt(env.port, "127.0.0.3") == 451
        assert await rcpt(env.port, "127.0.0.2") == 250  # clean: no store needed
        locker.execute("ROLLBACK")
        code = await eventually(lambda: rcpt(env.port, "127.0.0.3"), lambda c: c != 451)
        assert code == 450
    finally:
        locker.close()
        await env.close()


# -- round trips and Sentinel --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
async def test_a_decision_from_a_snapshot_is_one_redis_round_trip(
    kind, request, tmp_path, clock, monkeypatch
) -> None:
    store = open_store(url_of(kind, tmp_path, request), clock=clock)
    await store.open()
    try:
        snapshot = await store.read("defer:192.0.2.9")
        sent: list[str] = []
        send = store.redis.execute_command

        async def counting(*args, **kwargs):
            sent.append(args[0])
            return await send(*args, **kwargs)

        monkeypatch.setattr(store.redis, "execute_command", counting)
        record = Pending(clock.now, clock.now, 1, 0, "s25r_rule1", clock.now + 100)
        await store.update(
            "defer:192.0.2.9", lambda r: Outcome(None, True, record), snapshot=snapshot
        )
        assert sent == ["EVALSHA"]  # the compare-and-set alone; the index follows off the path
        await store.update("defer:192.0.2.9", lambda r: Outcome(None, True, record))
        assert sent == ["EVALSHA", "GET", "EVALSHA"]  # without a snapshot: read, then write
    finally:
        await store.close()


class Rival:
    """Another gateway writing the same key, through its own connection."""

    def __init__(self, url: str, store) -> None:
        import redis

        self.redis = redis.Redis.from_url(url)
        self.store = store
        self.key, self.turn = store._cas_keys("defer:hot")

    def write(self) -> None:
        self.redis.set(self.key, encode(bump(self.store._live(self.redis.get(self.key))).record))

    def take_turn(self, seconds: float) -> None:
        self.redis.set(self.turn, "rival", px=int(seconds * 1000))


async def test_a_contended_key_waits_for_its_turn_and_loses_nothing(redis_url, clock) -> None:
    store = open_store(redis_url, clock=clock)
    await store.open()
    rival = Rival(redis_url, store)
    calls = 0

    def change(record):
        nonlocal calls
        calls += 1
        if calls <= 2:  # the rival writes first, twice: the key is contended
            rival.write()
        if calls == 2:  # and holds the turn a while, then writes once more and ends it
            rival.take_turn(10)
            threading.Timer(0.3, lambda: (rival.write(), rival.redis.delete(rival.turn))).start()
        return bump(record)

    try:
        assert await store.update("defer:hot", change) == 4  # after the rival's three
        assert calls == 3  # decided again on the value the turn's holder left
        assert (await store.get("defer:hot")).attempts == 4
        assert rival.redis.exists(rival.turn) == 0  # this write ended its own turn
    finally:
        await store.close()


async def test_a_turn_that_never_comes_is_busy_not_an_outage(redis_url, clock) -> None:
    inner = open_store(redis_url, clock=clock, timeout=0.3)
    await inner.open()
    failures: list[StoreError] = []
    store = GuardedStore(inner, on_failure=failures.append)
    rival = Rival(redis_url, inner)
    calls = 0

    def change(record):
        nonlocal calls
        calls += 1
        rival.write()
        rival.take_turn(10)
        return bump(record)

    try:
        with pytest.raises(StoreBusy, match="'defer:hot' is contended"):
            await store.update("defer:hot", change)
        assert calls == 2  # then it waited for the turn, and gave up after the timeout
        assert not store.down and failures == []  # the breaker stays closed
        assert await store.update("defer:192.0.2.9", bump) == 1  # other keys are served
    finally:
        await inner.close()


async def test_sentinel_url(tmp_path, clock) -> None:
    master = RedisServer().start()
    config = tmp_path / "sentinel.conf"
    config.write_text(f"sentinel monitor onajimi 127.0.0.1 {master.port} 1\n")
    sentinel = RedisServer(None, "--sentinel", config=config)
    try:
        sentinel.start()
        store = open_store(f"redis+sentinel://127.0.0.1:{sentinel.port}/onajimi/0", clock=clock)
        await store.open()
        record = Pending(clock.now, clock.now, 1, 0, "s25r_rule1", clock.now + 100)
        await store.put("defer:192.0.2.9", record)
        assert await store.get("defer:192.0.2.9") == record
        await store.close()
    finally:
        sentinel.stop()
        master.stop()


async def test_strikes_add_up_across_two_gateways(two_gateways) -> None:
    """The auto-ban's count is the shared store's: relay attempts spread over two gateway
    processes reach autoban.relay_limit (5) all the same, and both then refuse."""
    ports, _ = two_gateways
    codes = [await rcpt(ports[n % 2], "127.0.0.3", "x@elsewhere.example") for n in range(5)]
    assert codes == [554, 554, 554, 554, 421]
    assert [await rcpt(port, "127.0.0.3") for port in ports] == [421, 421]


async def test_operations_that_reopen_together_leave_the_store_usable() -> None:
    """Started without its Redis, the guard opens the store on the first operation the
    breaker lets through. Several arrive together: while one open waits for Redis's
    answer the others must not take the store for open (each then failing with "not
    open" for good, however well Redis came back)."""
    port = free_port()
    now = [0.0]
    inner = open_store(f"redis://127.0.0.1:{port}/0", timeout=0.5)
    store = GuardedStore(inner, monotonic=lambda: now[0])
    with pytest.raises(StoreError):
        await inner.open()
    store.start_down(StoreError("unreachable at start"))
    now[0] += 5  # past the breaker's wait: the next operations try Redis again
    together = (store.get(f"defer:192.0.2.{i}") for i in range(5))
    tried = await asyncio.gather(*together, return_exceptions=True)
    assert all(isinstance(outcome, StoreError) for outcome in tried), tried
    server = RedisServer(port).start()
    try:
        now[0] += 5
        assert await store.get("defer:192.0.2.1") is None  # open now, and answering
        assert not store.down
    finally:
        await store.close()
        server.stop()
