"""RCPT checks that come before any deferral: syntax, then "is this mail for us?".

A front door that forwards anything is an open relay, so every routing trick the old
relay-testers used is refused here with a 5xx, before the deferral procedure can even
answer 4xx: source routes (`@a,@b:user@example.com`), the `%` hack
(`user%elsewhere@example.com`), bang paths (`elsewhere!user@example.com`), quoted local
parts hiding another address (`"user@elsewhere"@example.com`) and address literals.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.policy.replies import RELAY_DENIED, Reply

BAD_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
_ROUTING_CHARS = set("@%!:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class AcceptDomains:
    """`relay.accept_domains`: `example.com` is that domain only; `.example.com` its subdomains."""

    exact: frozenset[str]
    parents: frozenset[str]

    @classmethod
    def parse(cls, domains: Iterable[str]) -> AcceptDomains:
        exact: set[str] = set()
        parents: set[str] = set()
        for domain in domains:
            d = domain.strip().rstrip(".").lower()
            if d.startswith("."):
                parents.add(d[1:])
            else:
                exact.add(d)
        return cls(frozenset(exact), frozenset(parents))

    def accepts(self, domain: str) -> bool:
        if domain in self.exact:
            return True
        if self.parents:
            dot = domain.find(".")
            while dot >= 0:
                if domain[dot + 1 :] in self.parents:
                    return True
                dot = domain.find(".", dot + 1)
        return False


@dataclass(frozen=True, slots=True)
class ExemptRecipients:
    """`policy.exempt_recipients`: recipients never deferred, so that a misjudged sender
    can always reach the people who can help (postgrey ships the same exemption).

    `postmaster@` is that local part at every domain, `postmaster@example.com` that
    mailbox, `@example.com` (or `example.com`) every mailbox of the domain. Local parts
    compare case-insensitively: nobody means `Postmaster` to be someone else.
    """

    locals: frozenset[str] = frozenset()
    mailboxes: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> ExemptRecipients:
        locals_: set[str] = set()
        mailboxes: set[str] = set()
        domains: set[str] = set()
        for entry in entries:
            local, at, domain = entry.strip().lower().rstrip(".").rpartition("@")
            if not at or not local:
                domains.add(domain)
            elif not domain:
                locals_.add(local)
            else:
                mailboxes.add(f"{local}@{domain}")
        return cls(frozenset(locals_), frozenset(mailboxes), frozenset(domains))

    def __bool__(self) -> bool:
        return bool(self.locals or self.mailboxes or self.domains)

    def exempt(self, address: str) -> str | None:
        """The entry that exempts `address` (one that passed the relay check), or None."""
        parts = split_address(address)
        if parts is None:
            return None
        local, domain = parts[0].lower(), parts[1]
        if not domain:  # <postmaster> without a domain (RFC 5321)
            return f"{local}@" if local in self.locals else None
        if local in self.locals:
            return f"{local}@"
        if domain in self.domains:
            return f"@{domain}"
        mailbox = f"{local}@{domain}"
        return mailbox if mailbox in self.mailboxes else None


def split_address(address: str) -> tuple[str, str] | None:
    """(local part, lower-case domain) of a mailbox, or None if it is not one."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if not text or _CONTROL.search(text):
        return None
    if text.startswith("@"):
        route, colon, mailbox = text.partition(":")
        if not colon or len(route) < 2 or "@" not in mailbox:
            return None
        return ("@route", "")  # a source route (@a,@b:user@c): refused by relay_check
    if text.startswith('"'):
        end = 1
        while end < len(text):
            if text[end] == "\\":
                end += 2
                continue
            if text[end] == '"':
                break
            end += 1
        if end >= len(text) or end + 1 >= len(text) or text[end + 1] != "@":
            return None
        local, domain = text[: end + 1], text[end + 2 :]
    else:
        local, at, domain = text.rpartition("@")
        if not at:
            return (text, "") if text.lower() == "postmaster" else None
    domain = domain.rstrip(".").lower()
    if not local or not domain or " " in domain:
        return None
    return local, domain


def recipient_syntax(address: str) -> Reply | None:
    """None when `address` is a mailbox (or a source route, refused later as a relay try)."""
    return BAD_SYNTAX if split_address(address) is None else None


@functools.lru_cache(maxsize=8192)
def relay_check(address: str, accept: AcceptDomains) -> Reply | None:
    """None when the recipient is ours and free of routing tricks; else 554 5.7.1.

    Expects an address that passed `recipient_syntax`. Pure, and the same recipients come
    back all day, so the answers are remembered (per `accept`, i.e. per configuration).
    """
    parts = split_address(address)
    if parts is None:
        return RELAY_DENIED
    local, domain = parts
    if local == "@route":
        return RELAY_DENIED
    if not domain:
        return None  # <postmaster>, which RFC 5321 says every server must accept
    if local.startswith('"'):
        if _ROUTING_CHARS & set(local[1:-1]):
            return RELAY_DENIED
    elif "%" in local or "!" in local or "@" in local:
        return RELAY_DENIED
    if domain.startswith("["):
        return RELAY_DENIED
    if not accept.accepts(domain):
        return RELAY_DENIED
    return None
