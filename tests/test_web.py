"""The sender's and the administrator's pages over real sockets on loopback: a whole
gateway (tests/gatewayenv.py) with [web] on, asked with aiohttp's client.

The pieces without sockets (token buckets, durations, the ring) are at the end."""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import aiohttp
import pytest

from gateway import entries
from gateway.config import ConfigError
from gateway.policy.lists import Role
from gateway.policy.records import Penalty
from gateway.web.auth import COOKIE
from gateway.web.ratelimit import TokenBuckets, requester_key
from gateway.web.recent import RecentDecisions
from gateway.web.render import duration
from tests.conftest import FakeClock, make_settings
from tests.gatewayenv import start_env
from tests.test_smtp_policy import attempt

TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin.token"
    path.write_text(TOKEN + "\n")
    return path


async def web_env(web: dict | None = None, **policy):
    overrides = {"web": {"listen": "127.0.0.1:0", **(web or {})}}
    if policy:
        overrides["policy"] = policy
    return await start_env(overrides)


@pytest.fixture
async def env(token_file: Path):
    environment = await web_env({"admin_token_file": str(token_file)})
    yield environment
    await environment.close()


def url(env, path: str) -> str:
    return f"http://127.0.0.1:{env.gateway.web.port}{path}"


def browser() -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's jar refuses IP hosts unless
    told) and does not follow redirects on its own, so tests see them."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def get(session: aiohttp.ClientSession, env, path: str, **kwargs):
    async with session.get(url(env, path), allow_redirects=False, **kwargs) as response:
        return response, await response.text()


async def post(session: aiohttp.ClientSession, env, path: str, data: dict):
    async with session.post(url(env, path), data=data, allow_redirects=False) as response:
        return response, await response.text()


async def logged_in(env) -> tuple[aiohttp.ClientSession, str]:
    """A session logged in as alice, and its CSRF token (read from a page, as a browser)."""
    session = browser()
    response, _ = await post(session, env, "/admin/login", {"token": TOKEN, "name": "alice"})
    assert response.status == 303
    _, page = await get(session, env, "/admin/entries")
    return session, re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def state_of(page: str) -> str:
    return re.search(r'data-state="([a-z_]+)"', page).group(1)


# -- the sender's page ----------------------------------------------------------------
async def test_the_page_explains_in_english_and_japanese(env) -> None:
    async with browser() as session:
        response, page = await get(session, env, "/")
    assert response.status == 200
    assert "temporary refusal" in page and "一時的な拒否" in page
    assert "at least <strong>5 minutes</strong>" in page and "<strong>5分</strong>" in page
    assert "24 hours" in page and "24時間" in page  # retry_window
    assert "postmaster@example.com" in page  # web.contact's default
    assert "script-src" not in response.headers["Content-Security-Policy"]  # none allowed
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "<script" not in page
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_a_deferred_address_learns_since_when_and_until_when(env) -> None:
    assert (await attempt(env, "127.0.0.3")).code == 450
    assert (await attempt(env, "127.0.0.4")).code == 450  # someone else, never shown
    first = env.clock.now
    env.clock.advance(60)
    async with browser() as session:
        response, page = await get(session, env, "/?ip=127.0.0.3")
    assert response.status == 200
    assert state_of(page) == "deferred"
    assert response.headers["Cache-Control"] == "no-store"
    from gateway.web.render import utc

    assert utc(first) in page and utc(first + 300) in page and utc(first + 86400) in page
    assert "end-user connection" in page and "動的 IP アドレス" in page
    assert "Attempts so far: 1" in page
    assert "messages waiting for their retry: 1" in page and "a new message is refused" in page
    for other in ("127.0.0.4", "host12345", "p1234-ip45", "dyn.example.jp"):
        assert other not in page  # no other address, and no PTR name or key either


async def test_familiar_penalty_and_unknown_addresses(env) -> None:
    await attempt(env, "127.0.0.3")
    env.clock.advance(400)
    assert (await attempt(env, "127.0.0.3")).code == 250  # promoted
    now = env.clock.now
    await env.gateway.store.put(
        "penalty:127.0.0.6", Penalty(now, now + 3600, 6, "127.0.0.6", "ip1.10-20-30.example.net")
    )
    async with browser() as session:
        _, familiar = await get(session, env, "/?ip=127.0.0.3")
        _, boxed = await get(session, env, "/?ip=127.0.0.6")
        _, new = await get(session, env, "/?ip=127.0.0.5")  # rule 3, never seen
        _, clean = await get(session, env, "/?ip=127.0.0.2")
        _, mapped = await get(session, env, "/?ip=%3A%3Affff%3A127.0.0.3")  # ::ffff:127.0.0.3
    assert state_of(familiar) == "familiar" and "passes without delay" in familiar
    assert state_of(boxed) == "penalty" and "421" in boxed and "tried again too soon" in boxed
    assert state_of(new) == "new" and "deferred once" in new
    assert state_of(clean) == "clean"
    assert state_of(mapped) == "familiar" and "127.0.0.3 is familiar" in mapped


async def test_allowed_and_denied_without_telling_the_entry(env) -> None:
    store = env.gateway.store
    await entries.add(store, Role.DENY, "127.0.0.8/32", comment="secret note")
    await entries.add(store, Role.ALLOW, "dyn.example.jp", comment="another note")
    await env.gateway._refresh_dynamic()
    async with browser() as session:
        _, denied = await get(session, env, "/?ip=127.0.0.8")
        _, allowed = await get(session, env, "/?ip=127.0.0.3")  # p1234-ip45.dyn.example.jp
    assert state_of(denied) == "denied" and state_of(allowed) == "allowed"
    for secret in ("127.0.0.8/32", "secret note", "dyn.example.jp", "another note"):
        assert secret not in denied + allowed


@pytest.mark.parametrize(
    "typed",
    [
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>',
        "1.2.3.4<b>bold</b>",
    ],
)
async def test_what_is_typed_comes_back_inert(env, typed: str) -> None:
    async with browser() as session:
        response, page = await get(session, env, "/", params={"ip": typed})
    assert response.status == 400
    assert "is not an IP address" in page
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;" in page  # it is shown, as text
    assert re.search(r'<input[^>]*name="ip" value="[^"<>]*"', page)  # the attribute stays closed


async def test_lookups_are_rate_limited_per_address(token_file: Path) -> None:
    environment = await web_env({"lookups_per_minute": 3})
    try:
        async with browser() as session:
            codes = [
                (await get(session, environment, "/?ip=127.0.0.2"))[0].status for _ in range(3)
            ]
            response, page = await get(session, environment, "/?ip=127.0.0.2")
            plain, _ = await get(session, environment, "/")  # the page itself is not limited
        assert codes == [200, 200, 200]
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 20  # one token in 20 s
        assert "Too many lookups" in page and "確認の回数が多すぎます" in page
        assert plain.status == 200
    finally:
        await environment.close()


# -- the administrator's page ---------------------------------------------------------
async def test_without_a_token_every_admin_path_is_404() -> None:
    environment = await web_env()
    try:
        async with browser() as session:
            for path in ("/admin", "/admin/", "/admin/login", "/admin/entries", "/admin/nope"):
                assert (await get(session, environment, path))[0].status == 404, path
            for path in ("/admin/login", "/admin/add", "/admin/remove"):
                response, _ = await post(session, environment, path, {"token": "x", "entry": "a"})
                assert response.status == 404, path
            assert (await get(session, environment, "/"))[0].status == 200
        assert await environment.gateway.store.entries("allow") == []
    finally:
        await environment.close()


async def test_a_wrong_token_opens_nothing(env, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi.decision")
    async with browser() as session:
        response, _ = await get(session, env, "/admin/")
        assert response.status == 303 and response.headers["Location"] == "/admin/login"
        response, page = await post(session, env, "/admin/login", {"token": "wrong" * 5})
        assert response.status == 403 and "Wrong token" in page
        assert COOKIE not in response.cookies
        response, _ = await get(session, env, "/admin/entries")
        assert response.status == 303  # still sent to the login
    assert any("change=login_refused" in r.getMessage() for r in caplog.records)


async def test_the_right_token_opens_a_strict_http_only_session(env) -> None:
    async with browser() as session:
        response, _ = await post(session, env, "/admin/login", {"token": TOKEN, "name": "alice"})
        assert response.status == 303
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/admin" in cookie
        assert "Secure" not in cookie  # web.cookie_secure = false
        response, page = await get(session, env, "/admin/entries")
    assert response.status == 200 and "logged in as alice" in page
    assert response.headers["Cache-Control"] == "no-store"


async def test_changes_without_the_csrf_token_are_refused(env) -> None:
    session, csrf = await logged_in(env)
    async with session:
        form = {"role": "allow", "entry": "127.0.0.3", "comment": "x"}
        missing, _ = await post(session, env, "/admin/add", form)
        wrong, page = await post(session, env, "/admin/add", {**form, "csrf": csrf[:-2] + "xx"})
        assert missing.status == 403 and wrong.status == 403 and "CSRF" in page
        assert await env.gateway.store.entries("allow") == []
        gone, _ = await post(session, env, "/admin/remove", {"role": "allow", "entry": "x"})
        assert gone.status == 403
    async with browser() as stranger:  # no session at all, even with a token-like field
        response, _ = await post(stranger, env, "/admin/add", {**form, "csrf": csrf})
        assert response.status == 403
    assert await env.gateway.store.entries("allow") == []


async def test_allow_and_remove_through_the_cli_code_path_logged(env, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi.decision")
    assert (await attempt(env, "127.0.0.3")).code == 450
    session, csrf = await logged_in(env)
    async with session:
        form = {"csrf": csrf, "role": "allow", "entry": "127.0.0.3", "comment": "ok", "ttl": "7d"}
        response, _ = await post(session, env, "/admin/add", {**form, "back": "/admin/"})
        assert response.status == 303 and response.headers["Location"].startswith("/admin/?done=")
        (entry,) = await env.gateway.store.entries("allow")
        assert (entry.text, entry.comment, entry.expires) == (
            "127.0.0.3",
            "ok",
            entry.added + 7 * 86400,
        )
        assert (await attempt(env, "127.0.0.3")).code == 250  # at once: no poll interval
        bad, page = await post(session, env, "/admin/add", {**form, "entry": "not an entry!"})
        assert bad.status == 400 and "allow entry" in page
        removed, _ = await post(session, env, "/admin/remove", {**form, "entry": "127.0.0.3"})
        assert removed.status == 303
        assert await env.gateway.store.entries("allow") == []
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin ")]
    assert any("who=alice" in line and "change=allow_add" in line and "entry=127.0.0.3" in line
               for line in lines)  # fmt: skip
    assert any("change=allow_remove" in line and 'via="web 127.0.0.1"' in line for line in lines)


async def test_admin_pages_show_candidates_penalty_box_and_decisions(env) -> None:
    await attempt(env, "127.0.0.3")
    env.clock.advance(60)
    await attempt(env, "127.0.0.3")
    now = env.clock.now
    await env.gateway.store.put("penalty:127.0.0.6", Penalty(now, now + 3600, 6, "127.0.0.6"))
    session, _ = await logged_in(env)
    async with session:
        _, rescue = await get(session, env, "/admin/")
        _, boxed = await get(session, env, "/admin/penalty")
        _, recent = await get(session, env, "/admin/decisions")
        _, one = await get(session, env, "/admin/decisions?reason=s25r_rule1")
    assert "dyn.example.jp" in rescue and "p1234-ip45.dyn.example.jp" in rescue
    assert 'value="p1234-ip45.dyn.example.jp"' in rescue and 'value="127.0.0.3"' in rescue
    assert "127.0.0.6" in boxed and "impatient" in boxed
    assert 'id="reason-s25r_rule1"' in recent and "127.0.0.3" in recent
    assert 'id="reason-s25r_rule1"' in one


async def test_logout_ends_the_session(env) -> None:
    session, csrf = await logged_in(env)
    async with session:
        response, _ = await post(session, env, "/admin/logout", {"csrf": csrf})
        assert response.status == 303
        response, _ = await get(session, env, "/admin/entries")
        assert response.status == 303


async def test_a_short_token_is_a_config_error(tmp_path: Path) -> None:
    short = tmp_path / "short.token"
    short.write_text("tooshort\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        await web_env({"admin_token_file": str(short)})


# -- without sockets ------------------------------------------------------------------
def test_help_url_defaults_to_the_senders_page_when_it_is_on() -> None:
    off = make_settings()
    on = make_settings({"web": {"listen": "0.0.0.0:8025"}})
    behind = make_settings({"web": {"listen": "127.0.0.1:8025", "public_url": "https://x/why"}})
    own = make_settings({"web": {"listen": "0.0.0.0:80"}, "policy": {"help_url": "https://y"}})
    assert off.help_url == ""
    assert on.help_url == "http://mx.example.com:8025/"
    assert behind.help_url == "https://x/why"
    assert own.help_url == "https://y" and own.web_url == "http://mx.example.com/"


@pytest.mark.parametrize(
    ("web", "message"),
    [
        ({"public_url": "https://x/"}, "web.public_url: needs web.listen"),
        ({"listen": "127.0.0.1:1", "public_url": "ftp://x"}, "must start with http"),
        ({"listen": "127.0.0.1:1", "contact": "nobody"}, "web.contact: must be a mail address"),
        ({"listen": "127.0.0.1:1", "lookups_per_minute": 0}, "web.lookups_per_minute"),
    ],
)
def test_web_settings_errors_name_the_key(web: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_settings({"web": web})


def test_token_buckets_refill_and_stay_bounded() -> None:
    clock = FakeClock(0.0)
    buckets = TokenBuckets(2, 2 / 60, max_keys=3, clock=clock)
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") == 30.0  # one token in 30 s
    clock.advance(30)
    assert buckets.take("a") == 0.0
    for key in "bcdef":
        buckets.take(key)
    assert len(buckets) <= 3


def test_an_ipv6_requester_is_one_slash_64() -> None:
    assert requester_key("2001:db8::1") == requester_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert requester_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert requester_key("192.0.2.1") == "192.0.2.1"


def test_durations_in_both_languages() -> None:
    assert [duration(s) for s in (300, 3600, 86400, 3024000)] == [
        "5 minutes",
        "1 hour",
        "24 hours",
        "35 days",
    ]
    assert duration(300, "ja") == "5分" and duration(86400, "ja") == "24時間"


def test_the_ring_keeps_the_latest_lines_by_reason() -> None:
    ring = RecentDecisions(3, clock=FakeClock())
    for reason in ("clean", "s25r_rule1", "s25r_rule1", "familiar"):
        ring.add({"action": "pass", "reason": reason, "client": "192.0.2.1", "session": "x"})
    groups = ring.by_reason()
    assert [(g.reason, g.count) for g in groups] == [("s25r_rule1", 2), ("familiar", 1)]
    assert ring.seen == 4 and len(ring) == 3
    assert "session" not in groups[0].latest[0].fields  # only what the page shows


async def test_deferral_replies_name_the_senders_page() -> None:
    environment = await web_env({"public_url": "https://mx.example.com/why"})
    try:
        reply = await attempt(environment, "127.0.0.3")
        assert reply.code == 450 and reply.text.endswith(", see https://mx.example.com/why")
    finally:
        await environment.close()


async def test_a_new_token_at_reload_ends_every_session(env, tmp_path: Path) -> None:
    session, _ = await logged_in(env)
    new = tmp_path / "new.token"
    new.write_text("another-token-0123456789\n")
    settings = env.gateway.settings
    web = dataclasses.replace(settings.web, admin_token_file=new)
    env.gateway.web.reload(dataclasses.replace(settings, web=web))
    async with session:
        response, _ = await get(session, env, "/admin/entries")
        assert response.status == 303  # back to the login
        response, _ = await post(session, env, "/admin/login", {"token": TOKEN})
        assert response.status == 403
        response, _ = await post(
            session, env, "/admin/login", {"token": "another-token-0123456789"}
        )
        assert response.status == 303
