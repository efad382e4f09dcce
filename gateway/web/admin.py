"""/admin: the administrator's pages, for the rescue work S25R needs people for.

    GET  /admin/            the rescue list (`onajimi candidates`: regular retriers first,
                            grouped by rDNS domain), each group with an allow button
    GET  /admin/penalty     the penalty box
    GET  /admin/decisions   recent decisions by reason (recent.py: this process's ring)
    GET  /admin/entries     the dynamic allow and deny entries, each with a remove button
    POST /admin/add         add an entry (role, entry, comment, ttl)      } CSRF token,
    POST /admin/remove      remove an entry (role, entry)                 } logged
    GET/POST /admin/login, POST /admin/logout

Changes go through gateway/entries.py, the CLI's own code path, and are written to the
decision log with the login's name and address; the running gateway picks them up at
once. A page seen without a session sends the browser to the login; a change without
one, or without the session's CSRF token, is refused with 403. auth.py has the why.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote_plus

from aiohttp import web

from gateway import entries, logs
from gateway.cli.common import parse_duration
from gateway.errors import StoreError, UserError
from gateway.policy.lists import Role
from gateway.policy.records import Penalty, split_store_key
from gateway.reports import NO_PTR, candidate_records, candidates
from gateway.store.base import Store
from gateway.web.auth import COOKIE, SESSION_TTL, AdminSession
from gateway.web.context import PAGES, render
from gateway.web.ratelimit import requester_key

log = logging.getLogger("onajimi.web")

PAGES_BACK = ("/admin/", "/admin/penalty", "/admin/decisions", "/admin/entries")
_NAME = re.compile(r"[^\w.@+-]")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/admin", to_index)
    router.add_get("/admin/", rescue_list)
    router.add_get("/admin/penalty", penalty_box)
    router.add_get("/admin/decisions", decisions)
    router.add_get("/admin/entries", dynamic_entries)
    router.add_post("/admin/add", add)
    router.add_post("/admin/remove", remove)
    router.add_get("/admin/login", login_form)
    router.add_post("/admin/login", login)
    router.add_post("/admin/logout", logout)


def _go(location: str) -> web.HTTPSeeOther:
    """303 (to raise): after a POST the browser GETs the page, so a reload does not
    repeat the change."""
    return web.HTTPSeeOther(location)


async def to_index(request: web.Request) -> web.Response:
    raise _go("/admin/")


def _session(request: web.Request) -> AdminSession | None:
    return request.app[PAGES].sessions.get(request.cookies.get(COOKIE))


def _page(request: web.Request, template: str, session: AdminSession, **context: Any):
    pages = request.app[PAGES]
    workers = pages.settings.server.workers
    base = {
        "session": session,
        "path": request.path,
        "now": pages.backing.clock(),
        "worker": pages.backing.worker,
        "workers": workers,
        "notice": request.query.get("done", "")[:300],
    }
    return render(request, template, {**base, **context})


def _viewer(request: web.Request) -> AdminSession:
    session = _session(request)
    if session is None:
        raise _go("/admin/login")
    return session


def _refused(request: web.Request, why: str, status: int = 403) -> web.Response:
    return render(request, "admin_refused.html", {"why": why, "session": None}, status=status)


async def _unavailable(request: web.Request, exc: StoreError) -> web.Response:
    log.warning("admin page %s: %s", request.path, exc)
    return _refused(request, f"The state store does not answer: {exc}", 503)


# -- pages ------------------------------------------------------------------------------
async def rescue_list(request: web.Request) -> web.Response:
    session = _viewer(request)
    pages = request.app[PAGES]
    settings = pages.settings
    try:
        min_attempts = max(1, int(request.query.get("min_attempts", "2")))
    except ValueError:
        min_attempts = 2
    store = pages.backing.store()
    try:
        records = await candidate_records(store)
    except StoreError as exc:
        return await _unavailable(request, exc)
    groups = candidates(
        records,
        pages.backing.clock(),
        min_attempts=min_attempts,
        impatient_retries=settings.policy.impatient_retries,
    )
    choices = [_choices(group) for group in groups]
    return _page(
        request,
        "admin_candidates.html",
        session,
        groups=list(zip(groups, choices, strict=True)),
        min_attempts=min_attempts,
    )


def _choices(group) -> list[str]:
    """What the allow button of a group may add: the suggested entry first, then the
    domain, then each address (an operator may want less than the whole domain)."""
    out = [group.suggested_entry()]
    if group.domain != NO_PTR and all(c.ptr and c.reason != "s25r_rule0" for c in group.candidates):
        out.append(group.domain)
    out += [c.client for c in group.candidates if c.client]
    return list(dict.fromkeys(out))


async def penalty_box(request: web.Request) -> web.Response:
    session = _viewer(request)
    try:
        records = await request.app[PAGES].backing.store().scan("penalty:")
    except StoreError as exc:
        return await _unavailable(request, exc)
    boxed = [
        (split_store_key(stored)[1], record)
        for stored, record in records
        if isinstance(record, Penalty)
    ]
    boxed.sort(key=lambda item: -item[1].expires)
    return _page(request, "admin_penalty.html", session, boxed=boxed)


async def decisions(request: web.Request) -> web.Response:
    session = _viewer(request)
    recent = request.app[PAGES].backing.recent
    reason = request.query.get("reason") or None
    return _page(
        request,
        "admin_decisions.html",
        session,
        groups=recent.by_reason(latest=10 if reason is None else 100, reason=reason),
        reason=reason,
        kept=len(recent),
        size=recent.size,
        since=recent.since,
    )


async def dynamic_entries(request: web.Request) -> web.Response:
    session = _viewer(request)
    store = request.app[PAGES].backing.store()
    try:
        listed = {role: await store.entries(role.value) for role in (Role.ALLOW, Role.DENY)}
    except StoreError as exc:
        return await _unavailable(request, exc)
    return _page(request, "admin_entries.html", session, listed=listed, roles=Role)


# -- changes ----------------------------------------------------------------------------
async def _change(request: web.Request) -> tuple[AdminSession, Any, Role] | web.Response:
    """The session, form and list role of a change; or the refusal to send instead."""
    session = _session(request)
    if session is None:
        return _refused(request, "Not logged in, or the session has ended: log in again.")
    form = await request.post()
    if not request.app[PAGES].sessions.csrf_ok(session, _field(form, "csrf")):
        log.warning("admin change refused: CSRF token missing or wrong (from %s)", request.remote)
        return _refused(request, "The form's CSRF token is missing or wrong: reload the page.")
    try:
        role = Role(_field(form, "role") or "allow")
    except ValueError:
        return _refused(request, "The list must be allow or deny.", 400)
    if role not in (Role.ALLOW, Role.DENY):
        return _refused(request, "The list must be allow or deny.", 400)
    return session, form, role


def _field(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _back(form: Any) -> str:
    back = _field(form, "back")
    return back if back in PAGES_BACK else "/admin/entries"


def _via(request: web.Request) -> str:
    return f"web {request.remote}"


Change = Callable[[Store, AdminSession, Any, Role, str], Awaitable[str]]


async def _make(request: web.Request, change: Change) -> web.Response:
    """Check the session and CSRF token, make the change (it returns what was done, for
    the notice), let the running gateway pick it up, and send the browser back (303)."""
    checked = await _change(request)
    if isinstance(checked, web.Response):
        return checked
    session, form, role = checked
    pages = request.app[PAGES]
    try:
        done = await change(pages.backing.store(), session, form, role, _via(request))
    except UserError as exc:
        return _refused(request, str(exc), 400)
    except StoreError as exc:
        return await _unavailable(request, exc)
    await pages.backing.entries_changed()
    raise _go(f"{_back(form)}?done={quote_plus(done[:300])}")


async def add(request: web.Request) -> web.Response:
    async def change(store: Store, session: AdminSession, form: Any, role: Role, via: str):
        ttl_text = _field(form, "ttl").strip()
        entry = await entries.add(
            store,
            role,
            _field(form, "entry"),
            comment=_field(form, "comment"),
            ttl=parse_duration(ttl_text) if ttl_text else None,
            who=session.who,
            via=via,
        )
        return f"{role.value} {entry.text} added"

    return await _make(request, change)


async def remove(request: web.Request) -> web.Response:
    async def change(store: Store, session: AdminSession, form: Any, role: Role, via: str):
        text = _field(form, "entry").strip()
        removed = await entries.remove(store, role, text, who=session.who, via=via)
        return f"{role.value} {text} {'removed' if removed else 'was not there'}"

    return await _make(request, change)


# -- login ------------------------------------------------------------------------------
async def login_form(request: web.Request) -> web.Response:
    if _session(request) is not None:
        raise _go("/admin/")
    return render(request, "admin_login.html", {"session": None, "wrong": False})


async def login(request: web.Request) -> web.Response:
    pages = request.app[PAGES]
    wait = pages.logins.take(requester_key(request.remote or ""))
    if wait:
        return _refused(request, f"Too many login attempts: wait {wait:.0f} s.", 429)
    form = await request.post()
    name = _NAME.sub("", _field(form, "name"))[:40] or "admin"
    via = _via(request)
    session = pages.sessions.login(_field(form, "token"), name, request.remote or "")
    if session is None:
        logs.emit(logs.decision_log, "admin", {"who": name, "via": via, "change": "login_refused"})
        context = {"session": None, "wrong": True}
        return render(request, "admin_login.html", context, status=403)
    logs.emit(logs.decision_log, "admin", {"who": name, "via": via, "change": "login"})
    response = _go("/admin/")
    response.set_cookie(
        COOKIE,
        session.id,
        path="/admin",
        max_age=int(SESSION_TTL),
        httponly=True,
        samesite="Strict",
        secure=pages.settings.web.cookie_secure,
    )
    raise response


async def logout(request: web.Request) -> web.Response:
    session = _session(request)
    form = await request.post()
    if session is not None and request.app[PAGES].sessions.csrf_ok(session, _field(form, "csrf")):
        request.app[PAGES].sessions.logout(session.id)
    response = _go("/admin/login")
    response.del_cookie(COOKIE, path="/admin")
    raise response
