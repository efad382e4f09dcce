"""Waiting for something another process or task does, without guessing how long.

A fixed sleep before an assertion passes on a fast machine and fails on a slow CI runner;
polling with a generous deadline is as fast as the machine allows and fails only when
the thing never happens.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    until: Callable[[T], bool] = bool,
    timeout: float = 15.0,
    step: float = 0.05,
) -> T:
    """The first value of `probe` that satisfies `until`; AssertionError with the last
    value seen when none does within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if until(value) or loop.time() >= deadline:
            break
        await asyncio.sleep(step)
    assert until(value), f"still {value!r} after {timeout} s"
    return value
