"""The store on a real Redis Cluster: no operation crosses hash slots, a gateway rides
out a node's restart, and the URL is checked, shown and refused as the other stores'.

The store contract suite runs against the cluster too (tests/test_store_contract.py),
and two gateway processes share it in tests/test_shared_store.py.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from gateway.errors import StoreError
from gateway.policy.records import Familiar, Penalty, Pending, Pregreet, Sibling, Strikes
from gateway.store import open_store
from gateway.store.base import DynamicEntry, Outcome
from gateway.store.cluster import RedisClusterStore
from gateway.store.redis import PREFIX, RedisStore
from tests.conftest import CONF, FakeClock
from tests.gatewayenv import start_env
from tests.redisserver import RedisCluster, RedisServer, free_port
from tests.smtpclient import Client
from tests.test_cli import run
from tests.test_run import start, wait_for_line, write_config
from tests.test_shared_store import rcpt
from tests.test_store_contract import bump
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(not RedisServer.available(), reason="needs redis-server")

# Connect-stage keys of an IPv6 client, whose address key is its /64: the pregreet
# record is the exact address's, in another slot than the other two.
V6_KEYS = ["penalty:2001:db8::/64", "defer:2001:db8::/64", "pregreet:2001:db8::5"]


def slot(key: str) -> int:
    return key_slot(RedisStore._record_key(key).encode())


def test_a_record_and_its_turn_share_a_slot_whatever_the_client_part() -> None:
    """The compare-and-set script's two keys. A client part holding a brace (a PTR
    name may) used to end the tag early or leave it empty (`{}`: the whole key is
    hashed), and the two keys then fell in different slots."""
    for key in ("defer:192.0.2.9", "defer:}evil.example/a@b/c", "defer:a{b}c", "defer:", "x:{}"):
        record, turn = RedisStore._cas_keys(key)
        assert key_slot(record.encode()) == key_slot(turn.encode()), key
        tag = record[record.index("{") + 1 : record.index("}")]
        assert tag and "{" not in tag and record.endswith(key), key
    # As the keys were written before: `onajimi:{}:...` hashes as a whole.
    old = [f"{PREFIX}{{}}:defer:", f"{PREFIX}{{}}:turn:defer:"]
    assert key_slot(old[0].encode()) != key_slot(old[1].encode())


async def test_no_operation_crosses_slots(
    redis_cluster: RedisCluster, redis_cluster_url: str, clock: FakeClock
) -> None:
    """Every Store operation, on keys of many slots, and a gateway whose connect stage
    reads keys of two slots: no CROSSSLOT from any node, and no error from redis-py,
    which refuses a multi-key command over two slots before sending it."""
    assert len({slot(key) for key in V6_KEYS}) == 2  # what makes the read a test
    store = RedisClusterStore(redis_cluster_url, clock=clock)
    await store.open()
    try:  # the one MGET the standalone store sends: refused on a cluster
        with pytest.raises(RedisClusterException, match="same key slot"):
            await store.redis.mget([store._record_key(key) for key in V6_KEYS])
    finally:
        await store.close()
    redis_cluster.reset_stats()
    store = open_store(redis_cluster_url, clock=clock)
    await store.open()
    now = clock.now
    try:
        records = {
            "defer:2001:db8::/64": Pending(now, now, 1, 0, "s25r_rule1", now + 100),
            "penalty:2001:db8::/64": Penalty(now, now + 100, 3),
            "pregreet:2001:db8::5": Pregreet(now, now + 100),
            "strikes:192.0.2.0/24/relay": Strikes(now, 2, now + 100),
            "sibling:}evil.example/0a1b2c3d": Sibling(now, "192.0.2.9", now + 100),
            "defer:{odd}.example/a@b/c": Familiar(now, now, now + 100),
            "defer:": Familiar(now, now, now + 100),
        }
        for key, record in records.items():
            await store.put(key, record)
            assert await store.update(key, lambda r: Outcome(r)) == record
        assert [s.record for s in await store.read_many(V6_KEYS)] == [
            records[key] for key in V6_KEYS
        ]
        assert await store.update("defer:hot", bump, snapshot=await store.read("defer:hot")) == 1
        assert len(await store.scan()) == len(records) + 1
        assert sum((await store.counts()).values()) == len(records) + 1
        await store.add_entry("allow", DynamicEntry("mx.partner.example", "", now, None))
        assert await store.remove_entry("allow", "mx.partner.example") is True
        await store.set_meta("heartbeat:mx1:1", "a", ttl=60)
        assert await store.list_meta("heartbeat:") == {"heartbeat:mx1:1": "a"}
        assert await store.delete("defer:") is True
        clock.advance(200)
        assert await store.sweep() == len(records) - 1  # all but defer:hot, deleted defer:
    finally:
        await store.close()

    env = await start_env(
        {
            "store": {"url": redis_cluster_url},
            "policy": {"ipv4_prefix": 24},  # address key 127.0.0.0/24; pregreet by address
            "pregreet": {"greet_wait": 0.1, "action": "drop", "ttl": 3600},
        }
    )
    try:
        assert slot("pregreet:127.0.0.3") != slot("penalty:127.0.0.0/24")
        assert await rcpt(env.port, "127.0.0.3") == 450  # a suspect, deferred
        assert await rcpt(env.port, "127.0.0.3", "x@elsewhere.example") == 554  # a strike
        bot = await Client.connect(env.port, source="127.0.0.4", greet=False)
        await bot.send(b"EHLO bot.example\r\n")  # before the greeting: remembered
        assert (await bot.read_reply(timeout=5)).code == 521
        await bot.close()
        again = await env.client("127.0.0.4")
        assert again.greeting.code == 521  # its record, read back at connect
        await again.close()
        assert env.gateway.metrics.store_errors._value.get() == 0
    finally:
        await env.close()
    assert "CROSSSLOT" not in redis_cluster.errors()
    assert redis_cluster.calls("mget") > 0


async def test_the_connect_stage_is_one_mget_when_its_keys_share_a_slot(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    """An IPv4 client keyed by its address (/32, the default): penalty, deferral and
    pregreet records in one slot, one MGET; an IPv6 one, keyed by its /64: one per slot."""
    store = open_store(redis_cluster_url)
    await store.open()
    try:
        redis_cluster.reset_stats()
        await store.read_many(["penalty:192.0.2.9", "defer:192.0.2.9", "pregreet:192.0.2.9"])
        assert redis_cluster.calls("mget") == 1
        redis_cluster.reset_stats()
        await store.read_many(V6_KEYS)
        assert redis_cluster.calls("mget") == 2
    finally:
        await store.close()


async def test_a_gateway_rides_out_a_node_restart(
    redis_cluster: RedisCluster, redis_cluster_url: str
) -> None:
    """A master goes away while a gateway serves: the clients whose records it holds
    (and, once the cluster says it is down, the others that need the store) get 451
    at once; clean clients pass. When it is back (with its slots, not its data: no
    persistence here) the gateway decides again by itself, and records on the other
    masters are intact."""
    suspects = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"]
    home = {address: redis_cluster.node_of(RedisStore._record_key(f"defer:{address}"))
            for address in suspects}  # fmt: skip
    lost = suspects[0]
    kept = next(address for address in suspects if home[address] != home[lost])
    clock = FakeClock()
    env = await start_env(
        {"store": {"url": redis_cluster_url, "timeout": 0.5}, "policy": {"min_retry_delay": 60}},
        clock=clock,
    )
    try:
        assert await rcpt(env.port, lost) == 450
        assert await rcpt(env.port, kept) == 450
        redis_cluster.nodes[home[lost]].stop()
        started = time.monotonic()
        assert await rcpt(env.port, lost) == 451
        assert time.monotonic() - started < 5
        assert await rcpt(env.port, "127.0.0.2") == 250  # clean: needs no store
        assert env.gateway.metrics.store_up._value.get() == 0

        redis_cluster.nodes[home[lost]].start()
        redis_cluster.wait_ok()
        clock.advance(61)  # the kept client retries after min_retry_delay: promoted
        # The breaker asks the store again every 2 s; the client finds the node again.
        code = await eventually(lambda: rcpt(env.port, kept), lambda c: c != 451)
        assert code == 250
        assert await rcpt(env.port, lost) == 450  # its record went with the node's memory
        assert env.gateway.metrics.store_up._value.get() == 1
    finally:
        await env.close()


async def test_a_hung_node_costs_the_timeout_not_a_minute(
    redis_cluster: RedisCluster, redis_cluster_url: str, clock: FakeClock
) -> None:
    """A master that stops answering (SIGSTOP) without closing its connections: each
    operation on its slots fails within about `timeout`, including the slot-map refresh
    that follows a failure (it asks the seeds, the hung one among them)."""
    store = open_store(redis_cluster_url, clock=clock, timeout=0.5)
    await store.open()
    node = redis_cluster.nodes[redis_cluster.node_of(RedisStore._record_key("defer:192.0.2.9"))]
    node.pause()
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreError, match="redis redis\\+cluster://"):
                await store.update("defer:192.0.2.9", bump)
            assert time.monotonic() - started < 2.5
    finally:
        node.resume()
        await store.close()


async def test_an_unreachable_cluster_is_one_line_naming_the_url(clock: FakeClock) -> None:
    url = f"redis+cluster://:s3cret@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/"
    store = open_store(url, clock=clock, timeout=0.5)
    with pytest.raises(StoreError) as info:
        await store.open()
    message = str(info.value)
    assert message.startswith("store.url redis+cluster://127.0.0.1:")
    assert "cannot connect" in message and "\n" not in message and "s3cret" not in message


async def test_the_password_reaches_every_node(
    redis_cluster: RedisCluster, redis_cluster_url: str, clock: FakeClock
) -> None:
    for node in redis_cluster.nodes:
        node.command("CONFIG", "SET", "requirepass", "s3cret")
    try:
        wrong = open_store(redis_cluster_url.replace("//", "//:wrong@"), clock=clock)
        with pytest.raises(StoreError, match=r"cannot connect: .*invalid username-password"):
            await wrong.open()
        store = open_store(redis_cluster_url.replace("//", "//:s3cret@"), clock=clock)
        await store.open()
        try:
            keys = [f"defer:192.0.2.{n}" for n in range(12)]  # on every node
            assert len({redis_cluster.node_of(RedisStore._record_key(k)) for k in keys}) == 3
            for key in keys:
                await store.update(key, bump)
            assert len(await store.scan()) == len(keys)
        finally:
            await store.close()
    finally:
        for node in redis_cluster.nodes:
            _unprotect(node)


def _unprotect(node: RedisServer) -> None:
    with redis.Redis(port=node.port, password="s3cret") as client:
        client.config_set("requirepass", "")


# -- the command line ------------------------------------------------------------------


def _config(directory: Path, url: str) -> Path:
    """The shipped conf/ with its store at `url`."""
    target = directory / "conf"
    shutil.copytree(CONF, target)
    config = target / "gateway.toml"
    text = config.read_text()
    shipped = 'url = "sqlite:///var/lib/onajimi/state.db"'
    assert shipped in text
    config.write_text(text.replace(shipped, f'url = "{url}"'))
    return config


def test_check_and_status_describe_the_cluster(
    redis_cluster: RedisCluster, redis_cluster_url: str, tmp_path: Path
) -> None:
    secret = redis_cluster_url.replace("//", "//:s3cret@")
    check = run("check", "-c", str(_config(tmp_path / "a", secret)))
    assert check.returncode == 0, check.stderr
    assert f"{redis_cluster_url} (Redis Cluster, 3 seed nodes; on error: tempfail)" in check.stdout
    assert "s3cret" not in check.stdout

    config = _config(tmp_path / "b", redis_cluster_url)
    status = run("status", "-c", str(config))
    assert status.returncode == 0, status.stderr
    primaries = ", ".join(sorted(f"127.0.0.1:{node.port}" for node in redis_cluster.nodes))
    detail = f"Redis Cluster: 3 primaries ({primaries}), 0 replicas, all slots served"
    assert detail in status.stdout
    info = json.loads(run("status", "--json", "-c", str(config)).stdout)
    assert info["store"] == redis_cluster_url and info["store_detail"] == detail


async def test_run_starts_while_no_node_answers(tmp_path: Path) -> None:
    """No node answers: the gateway starts all the same (store.on_error until one does)."""
    url = f"redis+cluster://127.0.0.1:{free_port()}/"
    config = write_config(
        tmp_path, port=free_port(), backend=free_port(), dns="127.0.0.1", store=url
    )
    process = await start(config)
    try:
        line = await wait_for_line(process, "starting without it")
        assert f"store.url {url}: cannot connect" in line
        await wait_for_line(process, "onajimi listening on")
        assert process.returncode is None
    finally:
        process.kill()
        await process.wait()


async def test_rediss_cluster_speaks_tls_to_every_node(clock: FakeClock) -> None:
    """`rediss+cluster://`: the TLS options of the URL reach every node the client finds,
    not only the seed; a certificate it cannot check is one line naming the URL."""
    cluster = RedisCluster(tls=True).start()
    try:
        seed = cluster.url.replace(cluster.seeds, cluster.seeds.split(",", 1)[0])
        store = open_store(seed, clock=clock)
        await store.open()
        try:
            keys = [f"defer:192.0.2.{n}" for n in range(12)]
            assert len({cluster.node_of(RedisStore._record_key(k)) for k in keys}) == 3
            for key in keys:
                await store.update(key, bump)
            assert [record.attempts for _, record in await store.scan()] == [1] * len(keys)
            assert "3 primaries" in store.describe()
        finally:
            await store.close()
        unchecked = open_store(f"rediss+cluster://{cluster.seeds}/", clock=clock)
        with pytest.raises(StoreError, match=r"^store.url rediss\+cluster://.*certificate"):
            await unchecked.open()
    finally:
        cluster.stop()
