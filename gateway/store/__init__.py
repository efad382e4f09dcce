"""The state edge: deferral, familiar and penalty records, and dynamic list entries.

base.py    the Store interface every backend implements (and its contract)
codec.py   records <-> text, shared by every backend so they agree byte for byte
memory.py  `memory:` for tests, one process
sqlite.py  `sqlite:///PATH`, the embedded default, safe for several processes
redis.py   `redis://`, `rediss://`, `redis+sentinel://`: shared by several gateways
cluster.py `redis+cluster://`, `rediss+cluster://`: the same, on a Redis Cluster
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.store.base import Store


def open_store(url: str, clock: Callable[[], float] = time.time, timeout: float = 2.0) -> Store:
    """A store for a URL validated by the config loader (not yet opened: `await .open()`).

    `timeout`: how long any one store operation may wait (Redis socket timeouts, SQLite
    lock waits) before it fails with StoreError.
    """
    if url == "memory:":
        from gateway.store.memory import MemoryStore

        return MemoryStore(clock=clock)
    if url.startswith("sqlite://"):
        from gateway.store.sqlite import SQLiteStore

        return SQLiteStore(url[len("sqlite://") :], clock=clock, busy_timeout=timeout)
    if url.startswith(("redis://", "rediss://", "redis+sentinel://")):
        from gateway.store.redis import RedisStore

        return RedisStore(url, clock=clock, timeout=timeout)
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from gateway.store.cluster import RedisClusterStore

        return RedisClusterStore(url, clock=clock, timeout=timeout)
    raise ConfigError(f"store.url: unsupported store {url!r}")


def display_url(url: str) -> str:
    """`store.url` fit to print or log: a Redis URL without its password and options."""
    if not url.startswith("redis"):
        return url
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def describe_url(url: str, *notes: str) -> str:
    """`store.url` for `onajimi check`, which connects to nothing: what the URL says,
    with `notes` in the same parentheses."""
    said = list(notes)
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        seeds = urlsplit(url).netloc.rpartition("@")[2].count(",") + 1
        tls = ", TLS" if url.startswith("rediss") else ""
        said.insert(0, f"Redis Cluster, {seeds} seed node{'s' if seeds > 1 else ''}{tls}")
    return f"{display_url(url)} ({'; '.join(said)})" if said else display_url(url)
