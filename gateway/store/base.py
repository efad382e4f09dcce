"""The Store interface: what every backend must do, and the contract it must keep.

Contract (tests/test_store_contract.py runs it against every backend):

* A record whose `expires` is not in the future does not exist, whether or not a sweep
  has removed it yet.
* `update(key, change)` is an atomic read-modify-write of one key: `change` sees the
  current record and decides what to write; no concurrent update of the same key, from
  this process or another, can slip in between. It may be called more than once (a
  backend that retries on conflict), so it must be a pure function of its argument.
* Only single-key operations are on the hot path, so a Redis backend can implement them
  with one-key scripts and Redis Cluster works unchanged.
* `read(key)` returns a Snapshot: the record and an opaque token of what the store saw.
  `update(key, change, snapshot=...)` may start from it instead of reading again (the
  Redis backend then needs one round trip: a compare-and-set against the token, which
  falls back to the current value if the snapshot went stale). Backends that gain
  nothing from it ignore it.
* Dynamic list entries carry an optional expiry; every add/remove bumps a generation
  number that gateways poll cheaply to know when to reload them.
* Errors from the backend surface as `StoreError` with a message an operator can act on.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.policy.records import Record
from gateway.policy.values import value

T = TypeVar("T")


@value
class Outcome(Generic[T]):
    """What an update's change function decided: its result, and whether to write."""

    value: T
    write: bool = False
    record: Record | None = None  # when writing: the new record, or None to delete


@value
class Snapshot:
    """A record as read, and the store's token for it (None when the store needs none)."""

    record: Record | None
    token: object = None


@dataclass(frozen=True, slots=True)
class DynamicEntry:
    """An allow/deny entry added with `onajimi allow|deny add`."""

    text: str
    comment: str = ""
    added: float = 0.0
    expires: float | None = None  # None: until removed


class Store(ABC):
    url: str = ""
    # Whether reading a record ahead (at connect, while the client is still talking)
    # saves the RCPT decision a trip: true where an update needs the value it replaces
    # (Redis compare-and-set), false where the update reads under its own lock anyway
    # (SQLite) or reads are free (memory).
    prefetch_saves_trips: bool = False
    # A store on the network (Redis): one that may be unreachable for a while, so the
    # gateway starts without it and serves per store.on_error until it answers. A local
    # file that cannot be opened is a configuration error instead.
    remote: bool = False

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    async def open(self) -> None:  # noqa: B027 - optional hook, a no-op for memory:
        """Connect / create what is needed. Raises StoreError with a clear message."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op for memory:
        """Release connections and threads."""

    async def check(self) -> str | None:
        """A problem that needs the operator although every operation succeeds (None:
        none); /healthz reports it. E.g. a SQLite file deleted while in use."""
        return None

    # -- records --------------------------------------------------------------------------
    @abstractmethod
    async def get(self, key: str) -> Record | None: ...

    async def read(self, key: str) -> Snapshot:
        return Snapshot(await self.get(key))

    async def read_many(self, keys: list[str]) -> list[Snapshot]:
        """Several reads at once (one round trip where the backend allows it)."""
        return [await self.read(key) for key in keys]

    @abstractmethod
    async def update(
        self,
        key: str,
        change: Callable[[Record | None], Outcome[T]],
        snapshot: Snapshot | None = None,
    ) -> T:
        """Atomically apply `change` to the live record under `key`.

        `snapshot`, a read of this key made earlier in the same session, lets a store
        skip its own read: when `change` of the snapshot's record writes nothing, the
        answer is final without touching the store (the decision is as of the snapshot's
        read, and nothing is lost since nothing is written). When it writes, the store
        checks the record still is the snapshot's and decides again on the real one if
        not, so no update is ever lost.
        """

    async def put(self, key: str, record: Record) -> None:
        await self.update(key, lambda _current: Outcome(None, True, record))

    async def claim(self, key: str, record: Record) -> Record | None:
        """Write `record` unless a live one is there: None when written, else the live
        record, unchanged (a message's trace keeps its first try: policy/proof.py)."""

        def put_if_absent(current: Record | None) -> Outcome[Record | None]:
            if current is None:
                return Outcome(None, True, record)
            return Outcome(current)

        return await self.update(key, put_if_absent)

    async def delete(self, key: str) -> bool:
        return await self.update(
            key, lambda current: Outcome(current is not None, current is not None, None)
        )

    @abstractmethod
    async def scan(self, prefix: str = "") -> list[tuple[str, Record]]:
        """Every live record whose key starts with `prefix` (CLI use: not for the hot path)."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Live records by kind: {"pending": n, "familiar": n, "penalty": n, "tally": n}."""

    # -- dynamic list entries -------------------------------------------------------------
    @abstractmethod
    async def add_entry(self, role: str, entry: DynamicEntry) -> None: ...

    @abstractmethod
    async def remove_entry(self, role: str, text: str) -> bool: ...

    @abstractmethod
    async def entries(self, role: str) -> list[DynamicEntry]:
        """Live entries of one role ("allow" or "deny"), oldest first."""

    @abstractmethod
    async def generation(self) -> int:
        """A number that changes whenever a dynamic entry is added or removed."""

    # -- small shared values (heartbeat, ...) ---------------------------------------------
    @abstractmethod
    async def set_meta(self, name: str, value: str, ttl: float | None = None) -> None: ...

    @abstractmethod
    async def get_meta(self, name: str) -> str | None: ...

    @abstractmethod
    async def list_meta(self, prefix: str) -> dict[str, str]:
        """Live meta values whose name starts with `prefix` (e.g. every gateway's heartbeat)."""

    # -- maintenance ----------------------------------------------------------------------
    @abstractmethod
    async def sweep(self, limit: int = 1000) -> int:
        """Delete up to `limit` expired records; returns how many went."""

    def detail(self) -> str | None:
        """What the open store knows of its own shape beyond its URL (a cluster's nodes),
        for the start-up line and `onajimi status`; None when the URL says it all."""
        return None

    def describe(self) -> str:
        detail = self.detail()
        return f"{self.url} ({detail})" if detail else self.url


def live(expires: float | None, now: float) -> bool:
    return expires is None or now < expires
