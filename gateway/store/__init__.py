"""The state edge: deferral, familiar and penalty records, and dynamic list entries.

base.py    the Store interface every backend implements (and its contract)
codec.py   records <-> text, shared by every backend so they agree byte for byte
memory.py  `memory:` for tests, one process
sqlite.py  `sqlite:///PATH`, the embedded default, safe for several processes
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import ConfigError
from gateway.store.base import Store


def open_store(url: str, clock: Callable[[], float] = time.time) -> Store:
    """A store for a URL validated by the config loader (not yet opened: `await .open()`)."""
    if url == "memory:":
        from gateway.store.memory import MemoryStore

        return MemoryStore(clock=clock)
    if url.startswith("sqlite://"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite://") :], clock=clock)
    raise ConfigError(f"store.url: unsupported store {url!r}")
