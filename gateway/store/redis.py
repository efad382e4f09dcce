"""`redis://`, `rediss://`, `redis+sentinel://`: one memory shared by every gateway.

Layout (every key carries a hash tag, so a Redis Cluster places and serves them
unchanged, see cluster.py; every hot-path operation touches one key, or keys of one
client):

    onajimi:{<client>}:defer:<key>    a record (the codec's JSON), with a Redis TTL; the
                                      tag is the client key (a triplet's first part),
                                      braces in it written as parentheses
    onajimi:{<address>}:penalty:<address>
                                      a penalty record, tagged by its address key: for an
                                      address-keyed client both records share a slot, and
                                      the connect stage reads them with one MGET
    onajimi:{idx}:<kind>         sorted set of store keys by expiry, per record kind:
                                 counts, scans and sweeps without a KEYS/SCAN of millions
    onajimi:{entries}:<role>     hash: dynamic allow/deny entries (JSON values)
    onajimi:{entries}:generation bumped with every entry change (same slot: MULTI works)
    onajimi:{meta}:<name>        small values with TTL (heartbeats)

Atomic read-modify-write is a one-key compare-and-set script: the change function runs
here, in Python, on the value read; the script writes only if the key still holds that
value, and otherwise returns the current one to try again with. Given a Snapshot from
an earlier `read`, an update needs a single round trip. Updates of one key from this
process queue behind each other, so compare-and-set retries happen only between
processes. The per-kind index is updated
after a successful write, off the caller's path: it is best effort, and every write of a
key puts it right again.

TTLs are set relative to the gateway's clock (PX, not PXAT), so clock skew between
gateways and Redis does not shorten or lengthen records; expiry as the contract defines
it is checked on every read against the store's clock.

Timeouts are small and explicit, no retries, and the pool blocks instead of failing
when exhausted: redis-py's defaults would stall a command for a minute against a hung
Redis and raise at 100 concurrent callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    RedisClusterException,
    RedisError,
)

from gateway.errors import StoreBusy, StoreError, StoreUnusable
from gateway.policy.records import Record
from gateway.store import display_url
from gateway.store.base import DynamicEntry, Outcome, Snapshot, Store, live
from gateway.store.codec import KINDS, decode, encode, kind_of

log = logging.getLogger("onajimi.store")

T = TypeVar("T")
PREFIX = "onajimi:"
CAS_ATTEMPTS = 32
POOL_SIZE = 64
TURN_MS = 200  # how long a process that lost a race may hold a key's turn
# What redis-py raises when the store does not answer as it should. RedisClusterException
# (no node of a cluster reachable, a slot nobody serves) is not a RedisError.
FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)
# Braces in a hash tag would end it early (or, `{}`, hash the whole key): a record and
# its turn key would then land in two slots, and the compare-and-set fail as CROSSSLOT.
_TAG_SAFE = str.maketrans("{}", "()")

# KEYS[1]: the record key, KEYS[2]: its turn key. ARGV: expected value ("" for absent),
# new value ("" to delete), TTL in milliseconds, the caller's turn token ("" for none).
# Returns {1} when written, {0, current} otherwise. While another process holds the
# key's turn nobody else writes; the holder's write ends its turn.
_CAS = """
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
local turn = redis.call('GET', KEYS[2])
if current ~= ARGV[1] or (turn and turn ~= ARGV[4]) then return {0, current} end
if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if turn then redis.call('DEL', KEYS[2]) end
return {1}
"""

# KEYS[1]: the record key, KEYS[2]: its turn key. ARGV: the caller's token, TTL in ms.
# Returns {1 when the turn is the caller's, the current value}.
_TAKE_TURN = """
local taken = redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2])
local current = redis.call('GET', KEYS[1])
if current == false then current = '' end
return {taken and 1 or 0, current}
"""

# KEYS[1]: a turn key. ARGV[1]: the caller's token. Ends the turn if it is the caller's.
_END_TURN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def _nodes(netloc: str, what: str) -> tuple[str | None, list[tuple[str, int]]]:
    """`[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]` -> (password, [(host, port), ...]).

    `what` names a host in messages ("sentinel", "node"). Raises ValueError.
    """
    password = None
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        password = (
            unquote(credentials.split(":", 1)[1] if ":" in credentials else credentials) or None
        )
    nodes = []
    for item in netloc.split(","):
        host, _, port = item.rpartition(":")
        if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{what} {item!r} is not HOST:PORT")
        nodes.append((host.strip("[]"), int(port)))
    return password, nodes


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """`redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`.

    Returns (sentinels, service name, db, password). Raises ValueError.
    """
    parts = urlsplit(url)
    password, sentinels = _nodes(parts.netloc, "sentinel")
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("missing the service name (/SERVICE after the sentinels)")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("expected /SERVICE or /SERVICE/DB after the sentinels")
    return sentinels, path[0], int(path[1]) if len(path) == 2 else 0, password


class RedisStore(Store):
    prefetch_saves_trips = True  # a snapshot is the compare-and-set's expected value
    remote = True  # unreachable at start: the gateway starts and waits (runtime.py)

    def __init__(
        self, url: str, clock: Callable[[], float] = time.time, timeout: float = 2.0
    ) -> None:
        super().__init__(clock)
        self.url = display_url(url)
        self._raw_url = url
        self.timeout = timeout
        self._client: aioredis.Redis | None = None
        self._cas = self._take_turn = self._end_turn = None
        self._token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._background: set[asyncio.Task] = set()
        self._key_locks: dict[str, list] = {}  # key -> [lock, users]
        self._claim_by_cas = False  # a Redis before 7.0 (SET cannot combine NX and GET)

    def _connect(self) -> aioredis.Redis:
        options: dict[str, Any] = {
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        if self._raw_url.startswith("redis+sentinel://"):
            from redis.asyncio.sentinel import Sentinel

            sentinels, service, db, password = parse_sentinel_url(self._raw_url)
            sentinel = Sentinel(
                sentinels, sentinel_kwargs={"socket_timeout": self.timeout}, **options
            )
            return sentinel.master_for(service, db=db, password=password, **options)
        pool = aioredis.BlockingConnectionPool.from_url(
            self._raw_url,
            max_connections=POOL_SIZE,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
        )
        return aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))

    async def open(self) -> None:
        if self._client is not None:
            return
        client = None
        try:
            client = self._connect()
            await client.ping()
        except (*FAILURES, ValueError) as exc:
            if client is not None:
                with contextlib.suppress(*FAILURES):
                    await client.aclose()
            refused = isinstance(exc, ValueError | AuthenticationError | AuthorizationError)
            error = StoreUnusable if refused else StoreError
            raise error(f"store.url {self.url}: cannot connect: {_one_line(exc)}") from None
        if self._client is not None:  # opened by a call that overlapped this one
            with contextlib.suppress(*FAILURES):
                await client.aclose()
            return
        self._client = client  # open only once it answered: never half-open
        self._cas = self._client.register_script(_CAS)
        self._take_turn = self._client.register_script(_TAKE_TURN)
        self._end_turn = self._client.register_script(_END_TURN)
        # Loaded now, so the first decision is one EVALSHA, not EVALSHA, NOSCRIPT, LOAD, EVALSHA.
        try:
            for script in (_CAS, _TAKE_TURN, _END_TURN):
                await self._client.script_load(script)
        except FAILURES as exc:
            raise StoreError(
                f"store.url {self.url}: cannot load the update script: {_one_line(exc)}"
            ) from None

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def redis(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreError(f"store {self.url} is not open")
        return self._client

    async def _call(self, awaitable):
        """Any Redis trouble becomes a StoreError naming the store."""
        try:
            return await awaitable
        except FAILURES as exc:
            raise StoreError(f"redis {self.url}: {type(exc).__name__}: {_one_line(exc)}") from None

    # -- records --------------------------------------------------------------------------
    @staticmethod
    def _record_key(key: str, part: str = "") -> str:
        """`defer:<client>/<sender>/<rcpt>` -> `onajimi:{<client>}:defer:...`; with a
        part (`turn:`), a companion key in the same hash slot. The tag only places the
        key (the whole store key follows it): braces in it become parentheses, and an
        empty one a dash, so that the tag is always exactly the client part."""
        client = key.split(":", 1)[1].split("/", 1)[0].translate(_TAG_SAFE) or "-"
        return f"{PREFIX}{{{client}}}:{part}{key}"

    @classmethod
    def _cas_keys(cls, key: str) -> list[str]:
        """The KEYS of the compare-and-set script: the record and its turn."""
        return [cls._record_key(key), cls._record_key(key, "turn:")]

    def _live(self, raw: bytes | None) -> Record | None:
        if not raw:
            return None
        record = decode(raw)
        return record if self.clock() < record.expires else None

    async def get(self, key: str) -> Record | None:
        return self._live(await self._call(self.redis.get(self._record_key(key))))

    async def read(self, key: str) -> Snapshot:
        raw = await self._call(self.redis.get(self._record_key(key)))
        return Snapshot(self._live(raw), raw or b"")

    async def read_many(self, keys: list[str]) -> list[Snapshot]:
        """One MGET (the connect stage's keys share their client's slot)."""
        values = await self._call(self.redis.mget([self._record_key(k) for k in keys]))
        return [Snapshot(self._live(raw), raw or b"") for raw in values]

    async def update(
        self,
        key: str,
        change: Callable[[Record | None], Outcome[T]],
        snapshot: Snapshot | None = None,
    ) -> T:
        entry = self._key_locks.setdefault(key, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                return await self._update(key, change, snapshot)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._key_locks[key]

    async def _update(
        self, key: str, change: Callable[[Record | None], Outcome[T]], snapshot: Snapshot | None
    ) -> T:
        """Compare-and-set, deciding again on the value that won when another process
        wrote first. Losing twice means the key is contended: this process then waits for
        the key's turn, so one process in a tight loop cannot starve another forever
        (found with two processes doing 400 updates of one key each on a loaded machine)."""
        keys = self._cas_keys(key)
        if snapshot is not None and isinstance(snapshot.token, bytes):
            raw = snapshot.token
        else:
            raw = await self._call(self.redis.get(keys[0])) or b""
        token = ""  # this process's turn token, once it holds the key's turn
        lost = 0
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.timeout
        try:
            while True:
                outcome = change(self._live(raw))
                if not outcome.write:
                    return outcome.value
                record = outcome.record
                new = encode(record).encode() if record is not None else b""
                ttl = max(1, int((record.expires - self.clock()) * 1000)) if record else 0
                result = await self._call(self._cas(keys=keys, args=[raw, new, ttl, token]))
                if result[0] == 1:
                    token = ""  # the write ended the turn
                    self._reindex(key, record)
                    return outcome.value
                raw = result[1] or b""  # someone else wrote first: decide again on theirs
                lost += 1
                if lost == 1:
                    continue
                pause = 0.0005
                while lost < CAS_ATTEMPTS and loop.time() < give_up:
                    # Wait for the key's turn; its holder is one write from done.
                    taken, raw = await self._call(
                        self._take_turn(keys=keys, args=[self._token, TURN_MS])
                    )
                    raw = raw or b""
                    if taken:
                        token = self._token
                        break
                    await asyncio.sleep(random.uniform(pause / 2, pause))
                    pause = min(pause * 2, 0.02)
                else:
                    raise StoreBusy(
                        f"redis {self.url}: key {key!r} is contended: {lost} updates lost"
                        " to other writers"
                    )
        finally:
            if token:  # decided not to write after all, or failed: let the others go
                with contextlib.suppress(StoreError):
                    await self._call(self._end_turn(keys=keys[1:], args=[token]))

    async def claim(self, key: str, record: Record) -> Record | None:
        """One SET NX GET (Redis 7.0 and later; before that, the compare-and-set)."""
        if self._claim_by_cas:
            return await super().claim(key, record)
        ttl = max(1, int((record.expires - self.clock()) * 1000))
        try:
            raw = await self._call(
                self.redis.set(self._record_key(key), encode(record), px=ttl, nx=True, get=True)
            )
        except StoreError as exc:
            if "syntax" not in str(exc).lower():
                raise
            self._claim_by_cas = True  # a Redis before 7.0: NX and GET do not combine
            return await super().claim(key, record)
        current = self._live(raw)
        if raw is None:
            self._reindex(key, record, fresh=True)
        elif current is None:  # there, but past its expiry by our clock: ours now
            await self.put(key, record)
        return current

    def _reindex(self, key: str, record: Record | None, fresh: bool = False) -> None:
        """Move `key` to its kind's index, after the write and off the caller's path.
        `fresh`: the key held nothing before (a claim that wrote): no other index has it."""

        async def reindex() -> None:
            pipe = self.redis.pipeline(transaction=False)
            new_kind = kind_of(record) if record is not None else None
            for kind in KINDS.values():
                if kind == new_kind:
                    pipe.zadd(f"{PREFIX}{{idx}}:{kind}", {key: record.expires})
                elif not fresh:
                    pipe.zrem(f"{PREFIX}{{idx}}:{kind}", key)
            try:
                await self._call(pipe.execute())
            except StoreError as exc:  # the next write of the key repairs it
                log.debug("index update for %s failed: %s", key, exc)

        task = asyncio.get_running_loop().create_task(reindex())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle(self) -> None:
        """Let this process's pending index updates land (read-your-writes for reports)."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _indexed(
        self, kind: str, low: float, high: float, limit: int | None = None
    ) -> list[str]:
        members = await self._call(
            self.redis.zrangebyscore(
                f"{PREFIX}{{idx}}:{kind}", low, high, start=0 if limit else None, num=limit
            )
        )
        return [m.decode() for m in members]

    async def scan(self, prefix: str = "") -> list[tuple[str, Record]]:
        await self._settle()
        now = self.clock()
        keys = []
        for kind in KINDS.values():
            keys += [
                k for k in await self._indexed(kind, f"({now}", "+inf") if k.startswith(prefix)
            ]
        if not keys:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.get(self._record_key(key))
        values = await self._call(pipe.execute())
        found = {}
        for key, raw in zip(keys, values, strict=True):
            record = self._live(raw)
            if record is not None:
                found[key] = record
        return sorted(found.items())

    async def counts(self) -> dict[str, int]:
        await self._settle()
        now = self.clock()
        pipe = self.redis.pipeline(transaction=False)
        kinds = list(KINDS.values())
        for kind in kinds:
            pipe.zcount(f"{PREFIX}{{idx}}:{kind}", f"({now}", "+inf")
        numbers = await self._call(pipe.execute())
        return {kind: n for kind, n in zip(kinds, numbers, strict=True) if n}

    # -- dynamic list entries -------------------------------------------------------------
    @staticmethod
    def _entries_key(role: str) -> str:
        return f"{PREFIX}{{entries}}:{role}"

    _GENERATION = f"{PREFIX}{{entries}}:generation"

    async def add_entry(self, role: str, entry: DynamicEntry) -> None:
        value = json.dumps(
            {"comment": entry.comment, "added": entry.added, "expires": entry.expires}
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self._entries_key(role), entry.text, value)
        pipe.incr(self._GENERATION)
        await self._call(pipe.execute())

    async def remove_entry(self, role: str, text: str) -> bool:
        raw = await self._call(self.redis.hget(self._entries_key(role), text))
        pipe = self.redis.pipeline(transaction=True)
        pipe.hdel(self._entries_key(role), text)
        pipe.incr(self._GENERATION)
        await self._call(pipe.execute())
        return raw is not None and live(json.loads(raw)["expires"], self.clock())

    async def entries(self, role: str) -> list[DynamicEntry]:
        now = self.clock()
        raw = await self._call(self.redis.hgetall(self._entries_key(role)))
        out = []
        for text, value in raw.items():
            data = json.loads(value)
            if live(data["expires"], now):
                out.append(
                    DynamicEntry(text.decode(), data["comment"], data["added"], data["expires"])
                )
        return sorted(out, key=lambda e: (e.added, e.text))

    async def generation(self) -> int:
        return int(await self._call(self.redis.get(self._GENERATION)) or 0)

    # -- meta -----------------------------------------------------------------------------
    @staticmethod
    def _meta_key(name: str) -> str:
        return f"{PREFIX}{{meta}}:{name}"

    def _meta_value(self, raw: bytes | None) -> str | None:
        """Meta values are stored as `EXPIRES|VALUE`: expiry by the store's clock."""
        if raw is None:
            return None
        expires, _, value = raw.decode().partition("|")
        return value if live(float(expires) if expires else None, self.clock()) else None

    async def set_meta(self, name: str, value: str, ttl: float | None = None) -> None:
        if ttl is not None and ttl <= 0:
            await self._call(self.redis.delete(self._meta_key(name)))
            return
        expires = "" if ttl is None else repr(self.clock() + ttl)
        px = None if ttl is None else max(1, int(ttl * 1000))
        await self._call(self.redis.set(self._meta_key(name), f"{expires}|{value}", px=px))

    async def get_meta(self, name: str) -> str | None:
        return self._meta_value(await self._call(self.redis.get(self._meta_key(name))))

    async def _scan_names(self, pattern: str) -> list[bytes]:
        """The names of the keys that match `pattern` (meta keys: a few, listed by the
        CLI, never on the hot path)."""
        return [key async for key in self.redis.scan_iter(match=pattern, count=500)]

    async def list_meta(self, prefix: str) -> dict[str, str]:
        pattern = self._meta_key(_glob_escape(prefix)) + "*"
        names = await self._call(self._scan_names(pattern))
        if not names:
            return {}
        values = await self._call(self.redis.mget(names))
        start = len(self._meta_key(""))
        found = {
            n.decode()[start:]: self._meta_value(v) for n, v in zip(names, values, strict=True)
        }
        return {name: value for name, value in found.items() if value is not None}

    # -- maintenance ----------------------------------------------------------------------
    async def sweep(self, limit: int = 1000) -> int:
        """Redis expires records itself; this drops index entries whose time has come and
        any record the gateway's clock already considers expired (clock skew, tests)."""
        await self._settle()
        now = self.clock()
        removed = 0
        for kind in KINDS.values():
            if removed >= limit:
                break
            index = f"{PREFIX}{{idx}}:{kind}"
            due = await self._indexed(kind, "-inf", now, limit=limit - removed)
            if not due:
                continue
            pipe = self.redis.pipeline(transaction=False)
            for key in due:
                pipe.get(self._record_key(key))
            values = await self._call(pipe.execute())
            for key, raw in zip(due, values, strict=True):
                record = self._live(raw)
                if record is not None:  # rewritten since it was indexed: index it again
                    self._reindex(key, record)
                    continue
                if raw:
                    result = await self._call(
                        self._cas(keys=self._cas_keys(key), args=[raw, b"", 0, ""])
                    )
                    removed += result[0] == 1
                await self._call(self.redis.zrem(index, key))
        return removed


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line: redis-py's cluster errors span several."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
