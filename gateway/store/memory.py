"""`memory:`: records in a dict, for tests and single-process experiments.

Updates run to completion without awaiting, so they are atomic within the process. The
sweep pops expired keys from a heap (stale heap entries for re-written keys are skipped),
so it costs the number of expired records, not the number of records.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from gateway.policy.records import Record
from gateway.store.base import DynamicEntry, Outcome, Snapshot, Store, live
from gateway.store.codec import kind_of

T = TypeVar("T")


class MemoryStore(Store):
    url = "memory:"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._records: dict[str, Record] = {}
        self._expiry: list[tuple[float, str]] = []
        self._entries: dict[str, dict[str, DynamicEntry]] = {"allow": {}, "deny": {}}
        self._generation = 0
        self._meta: dict[str, tuple[str, float | None]] = {}

    def _live(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is None:
            return None
        if self.clock() >= record.expires:
            del self._records[key]
            return None
        return record

    async def get(self, key: str) -> Record | None:
        return self._live(key)

    async def update(
        self,
        key: str,
        change: Callable[[Record | None], Outcome[T]],
        snapshot: Snapshot | None = None,
    ) -> T:
        outcome = change(self._live(key))
        if outcome.write:
            if outcome.record is None:
                self._records.pop(key, None)
            else:
                self._records[key] = outcome.record
                heapq.heappush(self._expiry, (outcome.record.expires, key))
        return outcome.value

    async def scan(self, prefix: str = "") -> list[tuple[str, Record]]:
        now = self.clock()
        return sorted(
            (key, record)
            for key, record in self._records.items()
            if key.startswith(prefix) and now < record.expires
        )

    async def counts(self) -> dict[str, int]:
        now = self.clock()
        return dict(Counter(kind_of(r) for r in self._records.values() if now < r.expires))

    async def add_entry(self, role: str, entry: DynamicEntry) -> None:
        self._entries[role][entry.text] = entry
        self._generation += 1

    async def remove_entry(self, role: str, text: str) -> bool:
        found = self._entries[role].pop(text, None)
        self._generation += 1
        return found is not None and live(found.expires, self.clock())

    async def entries(self, role: str) -> list[DynamicEntry]:
        now = self.clock()
        items = [e for e in self._entries[role].values() if live(e.expires, now)]
        return sorted(items, key=lambda e: (e.added, e.text))

    async def generation(self) -> int:
        return self._generation

    async def set_meta(self, name: str, value: str, ttl: float | None = None) -> None:
        self._meta[name] = (value, None if ttl is None else self.clock() + ttl)

    async def get_meta(self, name: str) -> str | None:
        item = self._meta.get(name)
        if item is None or not live(item[1], self.clock()):
            return None
        return item[0]

    async def list_meta(self, prefix: str) -> dict[str, str]:
        now = self.clock()
        return {
            name: value
            for name, (value, expires) in self._meta.items()
            if name.startswith(prefix) and live(expires, now)
        }

    async def sweep(self, limit: int = 1000) -> int:
        now = self.clock()
        removed = 0
        while self._expiry and self._expiry[0][0] <= now and removed < limit:
            _, key = heapq.heappop(self._expiry)
            record = self._records.get(key)
            if record is not None and record.expires <= now:
                del self._records[key]
                removed += 1
        for role in self._entries.values():
            for text in [t for t, e in role.items() if not live(e.expires, now)]:
                del role[text]
        return removed
