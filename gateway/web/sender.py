"""GET /: the page for the person whose mail was deferred, in English and Japanese.

What a temporary refusal is, that their server retries by itself, how long that takes
here (policy.min_retry_delay and retry_window), whom to write to (web.contact); and a
form (a plain GET, no script) that looks up one address: `/?ip=ADDRESS`. Lookups are
rate-limited per requesting address (web.lookups_per_minute) because each may ask DNS;
the page itself is not. The answer is about the address asked for and nothing else
(lookup.py decides what may be said).
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.errors import StoreError
from gateway.web.context import PAGES, render
from gateway.web.lookup import look_up, parse_address
from gateway.web.ratelimit import requester_key

log = logging.getLogger("onajimi.web")

MAX_SHOWN_INPUT = 100  # what a sender typed is echoed back (escaped), at most this much

# Why a key is deferred or boxed, in the sender's words: the reason word -> (en, ja).
_DYNAMIC = (
    "its reverse DNS name looks like an end-user connection (a dynamic address), "
    "not a mail server's",
    "逆引き（PTR）名が、メールサーバではなく一般利用者の回線（動的 IP アドレス）のように見えるため",
)
WHY = {
    "s25r_rule0": (
        "it has no reverse DNS name that points back to its address",
        "正引きと一致する逆引き（PTR）名がないため",
    ),
    **{f"s25r_rule{n}": _DYNAMIC for n in range(1, 7)},
    "s25r_blacklist": _DYNAMIC,
    "ichigen": ("it was the first time it sent mail here", "初めての送信だったため"),
    "greylist": (
        "each new pair of sender and recipient waits once",
        "新しい差出人と宛先の組み合わせは一度だけ待たされるため",
    ),
    "dnsbl": ("it is listed in a DNS block list", "DNS ブロックリストに載っているため"),
    "impatient": (
        "it tried again too soon, too many times",
        "短い間隔で何度も再送を繰り返したため",
    ),
    "auth_failures": ("too many failed log-ins", "認証の失敗が多すぎたため"),
    "autoban_relay": ("too many attempts to relay", "不正な中継の試みが多すぎたため"),
    "autoban_probe": ("too many unknown recipients", "存在しない宛先が多すぎたため"),
    "autoban_loiter": ("too many idle connections", "何もしない接続が多すぎたため"),
}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", page)


async def page(request: web.Request) -> web.Response:
    pages = request.app[PAGES]
    settings = pages.settings
    asked = request.query.get("ip", "").strip()
    context = {
        "hostname": settings.listen.hostname,
        "contact": settings.contact,
        "min_retry_delay": settings.policy.min_retry_delay,
        "retry_window": settings.policy.retry_window,
        "asked": asked[:MAX_SHOWN_INPUT],
        "standing": None,
        "problem": None,
        "retry_after": None,
        "why": WHY,
        "now": pages.backing.clock(),
    }
    status = 200
    headers = {"Cache-Control": "no-store"} if asked else {}
    if asked:
        wait = pages.lookups.take(requester_key(request.remote or ""))
        address = parse_address(asked)
        if wait:
            status, context["problem"], context["retry_after"] = 429, "rate", wait
            headers["Retry-After"] = str(max(1, round(wait)))
        elif address is None:
            status, context["problem"] = 400, "not_address"
        else:
            try:
                context["standing"] = await look_up(pages.backing.decider(), address)
            except StoreError as exc:
                log.warning("sender's page: lookup of %s failed: %s", address, exc)
                status, context["problem"] = 503, "store"
    return render(request, "sender.html", context, status=status, headers=headers)
