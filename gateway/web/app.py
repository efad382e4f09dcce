"""The web application on `web.listen`: aiohttp on the gateway's running event loop.

    WebServer(backing).start(listen)   bind (BindError: one line, exit 2), serve
    WebServer.reload(settings)         SIGHUP: token and limits re-read (listen is not)
    WebServer.stop()

`Backing` is everything the pages use from the gateway, as getters, so a reload's new
policy and settings are seen at the next request. Every response carries headers that
keep the pages inert in a browser whatever they echo (a Content-Security-Policy that
allows no script at all, no framing, no sniffing, no referrer), and every /admin path
answers 404 unless an admin token is configured, so a gateway without one shows no
sign of having an admin page.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from gateway.config import HostPort, Settings
from gateway.errors import UserError
from gateway.listening import BindError, bind_reason
from gateway.web import admin, sender
from gateway.web.auth import Sessions, read_token
from gateway.web.context import PAGES, Backing, Pages
from gateway.web.ratelimit import TokenBuckets
from gateway.web.render import environment

log = logging.getLogger("onajimi.web")

STATIC = Path(__file__).parent / "static"
MAX_REQUEST_BODY = 16 * 1024  # the largest form is an entry, a comment and a TTL
LOGINS_PER_MINUTE = 5
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def _guard(request: web.Request, handler):
    """Security headers on every answer; /admin is 404 without a token, never cached.
    (aiohttp wants HTTP exceptions raised, redirects included: they get the headers too.)"""
    is_admin = request.path == "/admin" or request.path.startswith("/admin/")
    try:
        if is_admin and request.app[PAGES].sessions.token is None:
            raise web.HTTPNotFound()
        response = await handler(request)
    except web.HTTPException as exc:
        _headers(exc.headers, is_admin)
        raise
    _headers(response.headers, is_admin)
    return response


def _headers(headers, is_admin: bool) -> None:
    headers.update(SECURITY_HEADERS)
    if is_admin:
        headers["Cache-Control"] = "no-store"


async def _style(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "style.css", headers={"Cache-Control": "max-age=3600"})


def _token(settings: Settings) -> str | None:
    path = settings.web.admin_token_file
    return None if path is None else read_token(path)


def build_app(backing: Backing) -> web.Application:
    """The aiohttp application; raises ConfigError when the token file is unusable."""
    settings = backing.settings()
    per_minute = settings.web.lookups_per_minute
    pages = Pages(
        backing=backing,
        templates=environment(),
        lookups=TokenBuckets(per_minute, per_minute / 60),
        logins=TokenBuckets(LOGINS_PER_MINUTE, LOGINS_PER_MINUTE / 60),
        sessions=Sessions(_token(settings), clock=backing.clock),
    )
    app = web.Application(middlewares=[_guard], client_max_size=MAX_REQUEST_BODY)
    app[PAGES] = pages
    app.router.add_get("/style.css", _style)
    sender.add_routes(app.router)
    admin.add_routes(app.router)
    return app


class WebServer:
    def __init__(self, backing: Backing) -> None:
        self.app = build_app(backing)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def pages(self) -> Pages:
        return self.app[PAGES]

    async def start(self, listen: HostPort) -> None:
        # access_log=None: the decision log is the log; a page view is not a decision.
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, listen.host, listen.port, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise BindError(f"web.listen: cannot listen on {listen}: {bind_reason(exc)}") from None

    @property
    def port(self) -> int:
        assert self._runner is not None
        for address in self._runner.addresses:
            return address[1]
        raise RuntimeError("not listening")

    def reload(self, settings: Settings) -> None:
        """SIGHUP: the token file again (a changed token ends every session) and the lookup
        rate; a bad token file keeps the old one. web.listen changes need a restart."""
        try:
            self.pages.sessions.rekey(_token(settings))
        except UserError as exc:
            log.error("reload: %s; keeping the admin token in use", exc)
        per_minute = settings.web.lookups_per_minute
        self.pages.lookups.capacity = per_minute
        self.pages.lookups.rate = per_minute / 60

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
