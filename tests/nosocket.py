"""`make unit`'s guard (pytest -p tests.nosocket): the pure tests open no network socket
and start no process, so they stay a seconds-long loop.

A test that does either under the guard fails with NotPure, naming what it tried: it
belongs to `make test` alone (take its file out of UNIT_TESTS in the Makefile), or the
code under test grew I/O it should not have. Unix sockets stay allowed: asyncio's event
loop wakes itself through a socketpair.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any


class NotPure(RuntimeError):
    """A unit test reached for the network or a process."""


def pytest_configure(config: Any) -> None:
    open_socket = socket.socket.__init__
    start_process = subprocess.Popen.__init__

    def no_network(self: socket.socket, family: int = -1, *args: Any, **kwargs: Any) -> None:
        fileno = kwargs.get("fileno", args[2] if len(args) > 2 else None)
        if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
            raise NotPure("a network socket in a unit test (make unit): run it in make test")
        open_socket(self, family, *args, **kwargs)

    def no_process(self: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        raise NotPure(f"a process in a unit test (make unit): {args!r}")

    socket.socket.__init__ = no_network  # type: ignore[method-assign]
    subprocess.Popen.__init__ = no_process  # type: ignore[method-assign]
    config.add_cleanup(lambda: _restore(open_socket, start_process))


def _restore(open_socket: Any, start_process: Any) -> None:
    socket.socket.__init__ = open_socket  # type: ignore[method-assign]
    subprocess.Popen.__init__ = start_process  # type: ignore[method-assign]
