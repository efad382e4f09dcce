"""`onajimi run`: serve until SIGTERM. Errors before serving are one line, exit status 2.

With `server.workers > 1` this process becomes the supervisor of N worker processes
(`onajimi run --worker N`, started by it); see gateway/supervisor.py. Nothing here may
import prometheus_client before the supervisor has chosen its multiprocess directory,
hence the imports inside the functions.
"""

from __future__ import annotations

import asyncio
import logging
import resource
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


def raise_open_files_limit(max_connections: int) -> None:
    """Every session holds two sockets (client and backend): lift the soft limit on open
    files to what `limits.max_connections` needs, as far as the hard limit allows. The
    usual soft limit of 1,024 would otherwise cap a gateway near 500 sessions."""
    need = 2 * max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < need:
        logging.getLogger("onajimi").warning(
            "limits.max_connections = %d needs %d open files, the hard limit is %d: "
            "raise it (ulimit -n, LimitNOFILE=) or expect refused connections",
            max_connections,
            need,
            hard,
        )


def run(args: Any) -> int:
    settings = settings_from(args)
    logs.configure(settings.log.level, settings.log.format)
    raise_open_files_limit(settings.limits.max_connections)
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
