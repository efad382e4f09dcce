"""What every handler reaches through `request.app[PAGES]`: the gateway's backing, the
templates, the rate limits and the admin sessions; and the one way pages are rendered.

Its own module so that app.py (which builds it) and the handlers (which use it) do not
import each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from gateway.config import Settings
from gateway.decider import Decider
from gateway.store.base import Store
from gateway.web.auth import Sessions
from gateway.web.ratelimit import TokenBuckets
from gateway.web.recent import RecentDecisions


@dataclass
class Backing:
    """What the pages use from the running gateway (runtime.Gateway builds it)."""

    settings: Callable[[], Settings]
    decider: Callable[[], Decider]
    store: Callable[[], Store]
    recent: RecentDecisions
    entries_changed: Callable[[], Awaitable[None]]  # pick up an allow/deny change at once
    clock: Callable[[], float]
    worker: int | None = None  # which worker serves the pages (None: the only process)


@dataclass
class Pages:
    """The application's state, shared by the handlers (`request.app[PAGES]`)."""

    backing: Backing
    templates: jinja2.Environment
    lookups: TokenBuckets
    logins: TokenBuckets
    sessions: Sessions

    @property
    def settings(self) -> Settings:
        return self.backing.settings()


PAGES = web.AppKey("pages", Pages)


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any],
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """A template as an HTML response (autoescaped: see render.py)."""
    text = request.app[PAGES].templates.get_template(template).render(context)
    return web.Response(text=text, status=status, content_type="text/html", headers=headers)
