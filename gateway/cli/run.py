"""`onajimi run`: serve until SIGTERM. Errors before serving are one line, exit status 2."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import logs
from gateway.cli.common import settings_from
from gateway.runtime import Gateway


def _event_loop_runner():
    """uvloop when installed (it is a dependency on Linux), asyncio otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux platforms
        return asyncio.run
    return uvloop.run


def run(args: Any) -> int:
    settings = settings_from(args)
    logs.configure(settings.log.level, settings.log.format)

    async def main() -> None:
        gateway = Gateway(settings, own_logging=True)
        await gateway.serve(args.config)

    _event_loop_runner()(main())
    return 0
