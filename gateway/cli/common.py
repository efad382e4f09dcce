"""Helpers shared by the subcommands: settings, store access, durations, output."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway.config import Settings, load_settings
from gateway.errors import UserError
from gateway.store import open_store
from gateway.store.base import Store
from gateway.store.memory import MemoryStore

T = TypeVar("T")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`3600`, `90m`, `12h`, `7d`, `2w` -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise UserError(f"{text!r} is not a duration (examples: 3600, 90m, 12h, 7d, 2w)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def settings_from(args: Any) -> Settings:
    return load_settings(Path(args.config))


def with_store(
    settings: Settings, work: Callable[[Store], Awaitable[T]], *, read_only: bool = False
) -> T:
    """Run `work` against the configured store, opened and closed around it.

    With `read_only`, a SQLite database that does not exist yet is not created: the
    command sees an empty store, as the gateway would.
    """

    async def run() -> T:
        url = settings.store.url
        if read_only and url.startswith("sqlite://") and not Path(url[len("sqlite://") :]).exists():
            store: Store = MemoryStore()
        else:
            store = open_store(url, timeout=settings.store.timeout)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def timestamp(value: float | None) -> str:
    if value is None:
        return "never"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max((len(label) for label, _ in rows), default=0)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
