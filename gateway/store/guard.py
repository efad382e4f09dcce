"""A circuit breaker around the store, so an outage costs the clients seconds, not minutes.

When an operation fails, the store is considered down for `retry_after` seconds: every
operation fails at once with the same StoreError instead of each connection waiting out
the store's timeout. After that the next operation tries the real store again; the
first success closes the breaker. The gateway hears about both edges (to log and count
them) through the callbacks, and needs no restart when the store comes back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.errors import StoreBusy, StoreError
from gateway.policy.records import Record
from gateway.store.base import DynamicEntry, Outcome, Snapshot, Store

T = TypeVar("T")


class GuardedStore(Store):
    def __init__(
        self,
        inner: Store,
        *,
        retry_after: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_failure: Callable[[StoreError], None] = lambda exc: None,
        on_recovery: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(inner.clock)
        self.inner = inner
        self.url = inner.url
        self.retry_after = retry_after
        self._monotonic = monotonic
        self._on_failure = on_failure
        self._on_recovery = on_recovery
        self._down_until = 0.0
        self._last_error: StoreError | None = None
        self._opened = True  # False: started while the store was unreachable (start_down)
        self._opening = asyncio.Lock()

    @property
    def down(self) -> bool:
        return self._last_error is not None

    def start_down(self, error: StoreError) -> None:
        """The store could not be opened at start: down from the first moment, opened by
        the first operation that tries it again (every `retry_after` seconds)."""
        self._opened = False
        self._last_error = error
        self._down_until = self._monotonic() + self.retry_after
        self._on_failure(error)

    async def _guard(self, operation: Awaitable[T]) -> T:
        if self._last_error is not None and self._monotonic() < self._down_until:
            operation.close()  # type: ignore[attr-defined] - never awaited: no warning
            raise StoreError(f"{self._last_error} (store considered down, retrying shortly)")
        try:
            if not self._opened:
                try:
                    await self._open_once()
                except BaseException:
                    operation.close()  # type: ignore[attr-defined] - never awaited: no warning
                    raise
            result = await operation
        except StoreBusy:
            raise  # one contended key, not an outage: the others keep the store
        except StoreError as exc:
            self._last_error = exc
            self._down_until = self._monotonic() + self.retry_after
            self._on_failure(exc)
            raise
        if self._last_error is not None:
            self._last_error = None
            self._on_recovery()
        return result

    async def _open_once(self) -> None:
        """One attempt to open at a time. Operations arrive together when the breaker
        lets them through; each trying the store's open() meanwhile saw an open under
        way as done and ran on a store that was never opened, while the attempt that
        failed left it closed: "not open" for good, however well the store came back."""
        async with self._opening:
            if not self._opened:
                await self.inner.open()
                self._opened = True

    def detail(self) -> str | None:
        return self.inner.detail()

    def describe(self) -> str:
        return self.inner.describe()

    @property
    def prefetch_saves_trips(self) -> bool:  # type: ignore[override]
        return self.inner.prefetch_saves_trips

    async def open(self) -> None:
        await self.inner.open()
        self._opened = True

    async def close(self) -> None:
        await self.inner.close()

    async def check(self) -> str | None:
        return await self.inner.check()

    async def get(self, key: str) -> Record | None:
        return await self._guard(self.inner.get(key))

    async def read(self, key: str) -> Snapshot:
        return await self._guard(self.inner.read(key))

    async def read_many(self, keys: list[str]) -> list[Snapshot]:
        return await self._guard(self.inner.read_many(keys))

    async def update(
        self,
        key: str,
        change: Callable[[Record | None], Outcome[T]],
        snapshot: Snapshot | None = None,
    ) -> T:
        return await self._guard(self.inner.update(key, change, snapshot))

    async def claim(self, key: str, record: Record) -> Record | None:
        return await self._guard(self.inner.claim(key, record))

    async def scan(self, prefix: str = "") -> list[tuple[str, Record]]:
        return await self._guard(self.inner.scan(prefix))

    async def counts(self) -> dict[str, int]:
        return await self._guard(self.inner.counts())

    async def add_entry(self, role: str, entry: DynamicEntry) -> None:
        await self._guard(self.inner.add_entry(role, entry))

    async def remove_entry(self, role: str, text: str) -> bool:
        return await self._guard(self.inner.remove_entry(role, text))

    async def entries(self, role: str) -> list[DynamicEntry]:
        return await self._guard(self.inner.entries(role))

    async def generation(self) -> int:
        return await self._guard(self.inner.generation())

    async def set_meta(self, name: str, value: str, ttl: float | None = None) -> None:
        await self._guard(self.inner.set_meta(name, value, ttl))

    async def get_meta(self, name: str) -> str | None:
        return await self._guard(self.inner.get_meta(name))

    async def list_meta(self, prefix: str) -> dict[str, str]:
        return await self._guard(self.inner.list_meta(prefix))

    async def sweep(self, limit: int = 1000) -> int:
        return await self._guard(self.inner.sweep(limit))

    def __getattr__(self, name: str) -> Any:  # backend extras (e.g. RedisStore.redis)
        return getattr(self.inner, name)
