"""The management HTTP server on `metrics.listen`: `/metrics` and `/healthz`.

A few lines of HTTP/1.0 on the event loop, no web framework: one request per
connection, small timeouts, nothing that can hold up SMTP. Rendering the exposition
text runs in a thread (prometheus_client is thread-safe), and the health check asks
the store with a deadline, so a slow scrape or a hung store never stalls a session.

    GET /metrics  200, Prometheus text format
    GET /healthz  200 "ok" when the store answers; 503 and the reason otherwise
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from gateway.errors import StoreError

log = logging.getLogger("onajimi.endpoint")

REQUEST_TIMEOUT = 5.0
HEALTH_TIMEOUT = 2.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ManagementServer:
    def __init__(
        self,
        exposition: Callable[[], bytes],
        health: Callable[[], Awaitable[str | None]],
    ) -> None:
        """`exposition()` renders metrics; `health()` returns None when healthy, else why not."""
        self._exposition = exposition
        self._health = health
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            while (await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)).strip():
                pass  # headers: nothing here needs them
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, body, content_type = await self._route(method, path)
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + (body if method != "HEAD" else b""))
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        except Exception:
            log.exception("endpoint request failed")
        finally:
            writer.close()

    async def _route(self, method: str, path: str) -> tuple[str, bytes, str]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"GET only\n", "text/plain"
        if path == "/metrics":
            body = await asyncio.to_thread(self._exposition)
            return "200 OK", body, CONTENT_TYPE
        if path == "/healthz":
            try:
                problem = await asyncio.wait_for(self._health(), HEALTH_TIMEOUT)
            except TimeoutError:
                problem = f"store did not answer within {HEALTH_TIMEOUT:g} s"
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                return "200 OK", b"ok\n", "text/plain"
            return "503 Service Unavailable", f"unhealthy: {problem}\n".encode(), "text/plain"
        return "404 Not Found", b"/metrics or /healthz\n", "text/plain"


async def store_health(store) -> str | None:
    """/healthz's store check, for a gateway and a supervisor alike: None when the store
    answers and needs no operator, else what is wrong."""
    try:
        await store.generation()
    except StoreError as exc:
        return str(exc)
    return await store.check()
