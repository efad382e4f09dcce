"""`onajimi check`: validate the configuration and every list file; print what would run."""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from gateway.assembly import build_policy, display_path
from gateway.cli.common import print_table, settings_from
from gateway.store import describe_url


def _files(paths) -> str:
    return ", ".join(display_path(p) for p in paths) or "none"


def run(args: Any) -> int:
    settings = settings_from(args)
    policy = build_policy(settings)
    s = settings
    nameservers = ", ".join(str(ns) for ns in s.dns.nameservers) or "from /etc/resolv.conf"
    rules = ", ".join(str(r) for r in s.s25r.rules) or "none"
    rows = [
        ("config", f"{s.source}: OK"),
        ("listen", ", ".join(str(a) for a in s.listen.addresses) + f" as {s.listen.hostname}"),
        ("proxy", "PROXY protocol required" if s.listen.proxy_protocol else "off"),
        ("tls", _tls(s)),
        (
            "backend",
            f"{s.backend.host}:{s.backend.port} (tls {s.backend.tls}, "
            f"forward_client {s.backend.forward_client}, helo {s.backend_helo})",
        ),
        ("auth", _auth(s)),
        ("relay", "accept " + ", ".join(s.relay.accept_domains)),
        (
            "policy",
            f"defer {s.policy.defer}, key {s.policy.key}, prefixes /{s.policy.ipv4_prefix} "
            f"/{s.policy.ipv6_prefix}, min_retry_delay {s.policy.min_retry_delay:g}s, "
            f"retry_window {s.policy.retry_window:g}s",
        ),
        (
            "s25r",
            f"rules {rules}; blacklist {len(policy.classifier.blacklist)} entries "
            f"({_files(s.s25r.blacklist_files)})",
        ),
        ("allow", f"{len(policy.allow)} entries ({_files(s.lists.allow_files)})"),
        ("deny", f"{len(policy.deny)} entries ({_files(s.lists.deny_files)})"),
        ("trusted", ", ".join(str(n) for n in s.policy.trusted_networks) or "none"),
        ("dns", f"{nameservers}; timeout {s.dns.timeout:g}s; cache {s.dns.cache_size}"),
        ("store", describe_url(s.store.url, f"on error: {s.store.on_error}")),
        ("metrics", str(s.metrics.listen) if s.metrics.listen else "off"),
        ("web", _web(s)),
        ("help url", s.help_url or "none (deferral replies name no page)"),
        ("workers", str(s.server.workers)),
    ]
    print_table(rows)
    return 0


def _web(s) -> str:
    """The pages: where they listen, who may use /admin, and a warning when the sender's
    page cannot be reached by the senders its URL is given to."""
    web = s.web
    if web.listen is None:
        return "off (web.listen)"
    admin = (
        f"admin with the token in {display_path(web.admin_token_file)}"
        if web.admin_token_file
        else "admin off (no web.admin_token_file: /admin answers 404)"
    )
    served = "worker 0 serves it" if s.server.workers > 1 else "served by the gateway"
    out = (
        f"{web.listen}, {served}; sender's page at {s.web_url}, contact {s.contact}, "
        f"{web.lookups_per_minute} lookups/min per address; {admin}"
    )
    if not web.public_url and _loopback(web.listen.host):
        out += "; warning: listening on loopback, set web.public_url to the proxy's URL"
    return out


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _auth(s) -> str:
    if s.auth.mode == "off":
        return "off (auth.mode): AUTH gets 502"
    if not s.tls_enabled:
        return "off: AUTH is only offered after STARTTLS, and tls.mode is off"
    box = (
        f"{s.auth.max_failures} failures in {s.auth.failure_window:g}s: penalty box "
        f"{s.auth.penalty_ttl:g}s"
        if s.auth.max_failures
        else "failures never penalised (auth.max_failures = 0)"
    )
    return f"the backend's mechanisms, relayed after STARTTLS when it offers AUTH; {box}"


def _tls(s) -> str:
    if not s.tls_enabled:
        return "off (tls.mode)"
    if s.tls.cert is not None:
        return f"STARTTLS offered with {display_path(s.tls.cert)}"
    where = s.tls.self_signed_dir
    existing = next((p for p in (where, *where.parents) if p.exists()), where)
    if not os.access(existing, os.W_OK):  # check makes no file: it only looks
        return f"self-signed, but {where} cannot be written: STARTTLS will be off"
    return f"STARTTLS offered, self-signed for {s.listen.hostname} (kept in {where})"
