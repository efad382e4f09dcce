"""`onajimi run`: serve until SIGTERM. Errors before serving are one line, exit status 2.

With `server.workers > 1` this process becomes the supervisor of N worker processes
(`onajimi run --worker N`, started by it); see gateway/supervisor.py. Nothing here may
import prometheus_client before the supervisor has chosen its multiprocess directory,
hence the imports inside the functions.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import logs
from gateway.cli.common import settings_from


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
    runner = _event_loop_runner()
    if settings.server.workers > 1 and args.worker is None:
        from gateway.supervisor import supervise

        return supervise(settings, args.config, runner)

    from gateway.runtime import Gateway

    async def main() -> None:
        gateway = Gateway(settings, own_logging=True, worker=args.worker)
        await gateway.serve(args.config)

    runner(main())
    return 0
