"""`redis+cluster://`, `rediss+cluster://`: the Redis store on a Redis Cluster.

    redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/[?ssl_ca_certs=...]

The HOST:PORTs are seeds: any one that answers tells the client where every slot is
served, and the client follows the cluster from then on (MOVED, failovers). The
credentials, and TLS with `rediss+cluster://`, apply to every node. A cluster has only
database 0.

The key layout is the Redis store's (redis.py): it was made for this, and needed one
change. A cluster refuses a command whose keys lie in two hash slots (CROSSSLOT), in a
MULTI as much as in a script, so each operation was checked for the slots its keys
fall in (tests/test_cluster_store.py runs them all and asks every node for CROSSSLOT
errors):

* the compare-and-set, take-turn and end-turn scripts: a record and its turn key, both
  tagged `{<client>}`: one slot. A client part with a brace in it (a PTR name can hold
  one) or an empty one would have broken the tag in two; redis.py now writes such a tag
  with parentheses (or a dash), the only change to the layout, and one no real record
  meets;
* the connect stage's read of an address-keyed client (penalty, deferral and pregreet
  records): penalty and deferral share the address key's slot, but the pregreet record
  is keyed by the exact address, which is another slot whenever the address key is a
  prefix (IPv6 /64 by default, IPv4 below /32). Its tag could only become the address
  key's if the store knew the policy's prefixes, or if every backend wrote pregreet
  keys differently; instead `read_many` here sends one MGET per slot, at once (one
  pipeline per node), so the read still costs one round trip, is single-slot
  everywhere, and was never atomic to begin with;
* the per-kind expiry index `{idx}` (ZADD/ZREM of all kinds in one pipeline, ZCOUNTs,
  ZRANGEBYSCOREs): one slot, on one node; every write touches it once, off the caller's
  path;
* dynamic entries and their generation, `{entries}`, changed together in a MULTI: one
  slot, so the cluster client's transaction (all keys in one slot) applies;
* meta values, `{meta}`: one slot, so listing them scans the one node that serves it
  and reads them with one MGET;
* scans, counts and sweeps read many records: a pipeline of one-key GETs, which the
  cluster client splits by node. Nothing there needs two slots at once.

redis-py's cluster client has no blocking pool: past `max_connections` on a node it
raises at once. A semaphore over the whole store stands in for the standalone store's
BlockingConnectionPool (at most POOL_SIZE operations in flight, the others wait up to
`timeout`), and since an operation holds at most one connection per node, no node ever
runs out. Timeouts are the Redis store's (small, no retries): a dead node fails the
operations on its slots at once, and the next operation asks the cluster for its slots
again (the client's own refresh), so a restarted node, or a replica promoted in its
place, is found without restarting the gateway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.errors import StoreError
from gateway.store.base import Snapshot
from gateway.store.redis import POOL_SIZE, RedisStore, _nodes

# Query options a cluster URL may carry: TLS settings, passed to every node's connection.
TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
SCHEMES = ("redis+cluster://", "rediss+cluster://")
HASH_SLOTS = 16384
T = TypeVar("T")


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """`redis+cluster://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/[?TLS options]`.

    Returns (the seed nodes, the first seed as a `redis://` or `rediss://` URL that
    carries the credentials and options for every node, for redis-py to read as it
    reads any Redis URL). Raises ValueError.
    """
    if not url.startswith(SCHEMES):
        raise ValueError("expected redis+cluster:// or rediss+cluster://")
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ValueError("missing the nodes (HOST:PORT[,HOST:PORT...] after //)")
    _, seeds = _nodes(hosts, "node")
    if parts.path.strip("/") not in ("", "0"):
        raise ValueError("a cluster has only database 0: end the URL with / after the nodes")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name not in TLS_OPTIONS:
            raise ValueError(f"unknown option {name!r} (known: {', '.join(TLS_OPTIONS)})")
    scheme = "rediss" if url.startswith("rediss+") else "redis"
    first = hosts.split(",", 1)[0]
    query = f"?{parts.query}" if parts.query else ""
    return seeds, f"{scheme}://{credentials}{'@' if credentials else ''}{first}/0{query}"


class RedisClusterStore(RedisStore):
    """The Redis store, its client a RedisCluster (see the module docstring)."""

    def __init__(
        self, url: str, clock: Callable[[], float] = time.time, timeout: float = 2.0
    ) -> None:
        super().__init__(url, clock=clock, timeout=timeout)
        self._slots = asyncio.Semaphore(POOL_SIZE)

    def _connect(self) -> RedisCluster:
        seeds, first = parse_cluster_url(self._raw_url)
        return RedisCluster.from_url(
            first,
            # The first seed is in `first`; the others are asked when it does not answer.
            startup_nodes=[ClusterNode(host, port) for host, port in seeds[1:]],
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            max_connections=POOL_SIZE,
            # A cluster with a node down still serves the other nodes' slots (when its
            # cluster-require-full-coverage is no): decide for the clients it can.
            require_full_coverage=False,
        )

    async def _call(self, awaitable: Coroutine[Any, Any, T]) -> T:
        """As the Redis store's, within POOL_SIZE operations in flight."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            awaitable.close()
            raise StoreError(
                f"redis {self.url}: no connection free within {self.timeout:g}s"
                f" ({POOL_SIZE} operations in flight)"
            ) from None
        try:
            return await super()._call(awaitable)
        finally:
            self._slots.release()

    async def read_many(self, keys: list[str]) -> list[Snapshot]:
        """One MGET per hash slot, all sent at once: a pregreet record is keyed by the
        exact address, the others by the address key (see the module docstring)."""
        values = await self._call(self.redis.mget_nonatomic([self._record_key(k) for k in keys]))
        return [Snapshot(self._live(raw), raw or b"") for raw in values]

    async def _scan_names(self, pattern: str) -> list[bytes]:
        """SCAN on the one node that serves the `{meta}` slot, not on every node. The
        slot map is asked for again first if a failure left it in doubt (a keyed
        command does that by itself; SCAN names its node)."""
        await self.redis.initialize()
        node = self.redis.get_node_from_key(self._meta_key(""))
        return [
            key async for key in self.redis.scan_iter(match=pattern, count=500, target_nodes=node)
        ]

    def detail(self) -> str | None:
        """The nodes the client found (after `open`): whether it sees the whole cluster."""
        if self._client is None:
            return None
        primaries = sorted(node.name for node in self._client.get_primaries())
        replicas = len(self._client.get_replicas())
        covered = len(self._client.nodes_manager.slots_cache)
        slots = "all slots served" if covered == HASH_SLOTS else f"{covered} of {HASH_SLOTS} slots"
        return (
            f"Redis Cluster: {len(primaries)} primaries ({', '.join(primaries)}),"
            f" {replicas} replicas, {slots}"
        )
