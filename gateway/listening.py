"""Binding listening sockets, and the one-line errors when that fails.

    check_listen_addresses(settings)   the supervisor, before it starts any worker
    listen_smtp(addresses, factory)    the SMTP listeners of a gateway (or of a worker)
    start_management(listen, ...)      the /metrics and /healthz server, if configured
    check_web_address(settings)        the supervisor: web.listen can be bound (worker 0 will)

A port that cannot be bound is a `BindError`: a `UserError` whose message names the
setting, the address and why (`bind_reason`), so `onajimi run` says it in one line and
exits 2. An unavailable `[::]` is only a warning when another address was bound: a host
without IPv6 still serves on IPv4 with the default `listen.addresses`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

from gateway.config import HostPort, Settings
from gateway.errors import UserError
from gateway.management import ManagementServer

log = logging.getLogger("onajimi")

BACKLOG = 1024


class BindError(UserError):
    """A listening address could not be bound (the message says which and why)."""


def bind_reason(exc: OSError) -> str:
    """Why a bind failed, in words an operator can act on."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (is another MTA or gateway listening there?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this host"
    if exc.errno == errno.EAFNOSUPPORT:
        return "IPv6 is not available on this host"
    return exc.strerror or str(exc)


def check_listen_addresses(settings: Settings) -> None:
    """Bind (without listening) every address the workers will use; one line if not."""
    for address in settings.listen.addresses:
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address.host, address.port))
        except OSError as exc:
            if address.host == "::" and len(settings.listen.addresses) > 1:
                log.warning("listen.addresses: %s skipped: %s", address, bind_reason(exc))
                continue
            raise BindError(
                f"listen.addresses: cannot listen on {address}: {bind_reason(exc)}"
            ) from None


def check_web_address(settings: Settings) -> None:
    """The supervisor, before its workers: can web.listen be bound? (worker 0 serves the
    pages; a port it cannot bind is one line and exit 2 here, not a worker restart loop)."""
    listen = settings.web.listen
    if listen is None:
        return
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((listen.host, listen.port))
    except OSError as exc:
        raise BindError(f"web.listen: cannot listen on {listen}: {bind_reason(exc)}") from None


async def listen_smtp(
    addresses: tuple[HostPort, ...],
    factory: Callable[[], asyncio.Protocol],
    *,
    reuse_port: bool,
) -> list[asyncio.AbstractServer]:
    """Listen on every address, each connection served by `factory()`; the servers.

    `reuse_port` sets SO_REUSEPORT (workers of a supervisor share the addresses). Every
    address is tried; an unavailable `[::]` is skipped with a warning when another
    address was bound. Any other failure closes whatever was bound and raises BindError.
    """
    loop = asyncio.get_running_loop()
    servers: list[asyncio.AbstractServer] = []
    failures: list[tuple[HostPort, OSError]] = []
    for address in addresses:
        try:
            server = await loop.create_server(
                factory,
                host=address.host,
                port=address.port,
                reuse_address=True,
                reuse_port=reuse_port or None,
                backlog=BACKLOG,
            )
        except OSError as exc:
            failures.append((address, exc))
            continue
        servers.append(server)
    for address, exc in failures:
        unavailable_v6 = address.host == "::" and exc.errno in (
            errno.EAFNOSUPPORT,
            errno.EADDRNOTAVAIL,
        )
        if unavailable_v6 and servers:
            log.warning("listen.addresses: %s skipped: %s", address, bind_reason(exc))
            continue
        for server in servers:
            server.close()
        raise BindError(f"listen.addresses: cannot listen on {address}: {bind_reason(exc)}")
    return servers


async def start_management(
    listen: HostPort | None,
    exposition: Callable[[], bytes],
    health: Callable[[], Awaitable[str | None]],
) -> ManagementServer | None:
    """Serve /metrics and /healthz on `listen` (`metrics.listen`); None when that is off.

    Raises BindError when the address cannot be bound. It closes nothing else: a caller
    that has already bound its SMTP listeners (or opened a store) closes them itself.
    """
    if listen is None:
        return None
    server = ManagementServer(exposition, health)
    try:
        await server.start(listen.host, listen.port)
    except OSError as exc:
        raise BindError(f"metrics.listen: cannot listen on {listen}: {bind_reason(exc)}") from None
    return server
