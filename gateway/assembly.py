"""Settings and list files -> the `Policy`: the one place that reads list files.

Called at start-up, by `onajimi check`/`explain`, and on SIGHUP; never per connection.
`gateway.policy` itself reads neither configuration nor files (tests/test_layers.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.policy import deferral, dnsbl, strikes
from gateway.policy.decision import Policy
from gateway.policy.lists import ClientList, EntryError, ParsedEntry, Role, parse_entry
from gateway.policy.net import NetSet
from gateway.policy.recipients import AcceptDomains, ExemptRecipients
from gateway.policy.replies import Wording
from gateway.policy.s25r import S25RClassifier
from gateway.policy.vocabulary import (
    BareNewline,
    DeferMode,
    DnsblAction,
    KeyMode,
    OnError,
    PregreetAction,
    PromoteOn,
    SuspectAction,
)
from gateway.smtp.session import SessionRules

log = logging.getLogger("onajimi.policy")


def display_path(path: Path) -> str:
    """A path as an operator would type it: relative to the working directory if inside."""
    try:
        return os.path.relpath(path) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def _load(paths: tuple[Path, ...], role: Role) -> ClientList:
    return load_list(paths, role, [display_path(p) for p in paths])


def rules_from(settings: Settings) -> deferral.DeferralRules:
    p = settings.policy
    return deferral.DeferralRules(
        min_retry_delay=p.min_retry_delay,
        retry_window=p.retry_window,
        familiar_ttl=p.familiar_ttl,
        impatient_retries=p.impatient_retries,
        penalty_ttl=p.penalty_ttl,
        auto_familiar_after=p.auto_familiar_after,
        burst_window=p.burst_window,
        pace_allowance=p.pace_allowance,
        pace_rate=p.pace_rate,
        promote_on=PromoteOn(p.promote_on),
        wording=Wording(defer_text=p.defer_text, help_url=settings.help_url),
    )


def session_rules_from(settings: Settings) -> SessionRules:
    """The rules an SMTP session goes by: the gateway's, and the simulation's."""
    return SessionRules(
        hostname=settings.listen.hostname,
        max_recipients=settings.limits.max_recipients,
        on_error=OnError(settings.store.on_error),
        bare_newline=BareNewline(settings.relay.bare_newline),
        add_received=settings.relay.add_received,
        greet_wait=settings.pregreet.greet_wait,
        pregreet_action=PregreetAction(settings.pregreet.action),
        auth_limit=settings.auth.max_failures,
        suspect_action=SuspectAction(settings.policy.suspect_action),
        tarpit_delay=settings.tarpit.delay,
    )


def strike_rules_from(settings: Settings) -> strikes.StrikeRules:
    a, ban = settings.auth, settings.autoban

    def limit(count: int) -> strikes.StrikeLimit:
        return strikes.StrikeLimit(count, ban.window, ban.penalty_ttl)

    return strikes.StrikeRules(
        auth=strikes.StrikeLimit(a.max_failures, a.failure_window, a.penalty_ttl),
        relay=limit(ban.relay_limit),
        probe=limit(ban.probe_limit),
        loiter=limit(ban.loiter_limit),
    )


def dnsbl_rules_from(settings: Settings) -> dnsbl.DnsblRules:
    d = settings.dnsbl
    return dnsbl.DnsblRules(
        sites=tuple(dnsbl.parse_site(text) for text in d.sites),
        threshold=d.threshold,
        allowlist_threshold=d.allowlist_threshold,
        action=DnsblAction(d.action),
        reply_names=d.reply_names,
        min_ttl=d.min_ttl,
        max_ttl=d.max_ttl,
    )


def build_policy(settings: Settings) -> Policy:
    """Raises ConfigError (naming file and line) when a list file is bad."""
    trusted: NetSet[str] = NetSet()
    for network in settings.policy.trusted_networks:
        trusted.add(network, str(network))
    blacklist = _load(settings.s25r.blacklist_files, Role.BLACKLIST)
    return Policy(
        trusted=trusted,
        allow=_load(settings.lists.allow_files, Role.ALLOW),
        deny=_load(settings.lists.deny_files, Role.DENY),
        classifier=S25RClassifier(settings.s25r.rules, blacklist),
        accept_domains=AcceptDomains.parse(settings.relay.accept_domains),
        rules=rules_from(settings),
        defer_mode=DeferMode(settings.policy.defer),
        key_mode=KeyMode(settings.policy.key),
        ipv4_prefix=settings.policy.ipv4_prefix,
        ipv6_prefix=settings.policy.ipv6_prefix,
        lump_by_rdns=settings.policy.lump_by_rdns,
        strike_rules=strike_rules_from(settings),
        exempt_recipients=ExemptRecipients.parse(settings.policy.exempt_recipients),
        dnsbl_rules=dnsbl_rules_from(settings),
    )


def dynamic_list(entries: list[tuple[str, str]], role: Role) -> ClientList:
    """Entries from the store, as (entry text, comment).

    `onajimi allow|deny add` refuses bad entries, but the store is shared and outlives
    versions: a line this version cannot read is skipped (and logged), never fatal.
    """
    parsed = []
    for text, _comment in entries:
        try:
            item = parse_entry(text, role, f"dynamic {role.value}")
        except EntryError as exc:
            log.warning("dynamic %s entry %r skipped: %s", role.value, text, exc)
            continue
        if item is not None:
            parsed.append(item)
    return ClientList(role, parsed)


def read_list_file(path: Path, role: Role, label: str | None = None) -> list[ParsedEntry]:
    """Read a list file; errors name file, line and problem (as ConfigError)."""
    shown = label or str(path)
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: list file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read list file: {exc}") from None
    entries: list[ParsedEntry] = []
    for number, line in enumerate(content.splitlines(), start=1):
        try:
            parsed = parse_entry(line, role, f"{shown}:{number}")
        except EntryError as exc:
            raise ConfigError(f"{shown}:{number}: {exc}") from None
        if parsed is not None:
            entries.append(parsed)
    return entries


def load_list(paths: Iterable[Path], role: Role, labels: Iterable[str] | None = None) -> ClientList:
    paths = list(paths)
    shown = list(labels) if labels is not None else [str(p) for p in paths]
    entries: list[ParsedEntry] = []
    for path, label in zip(paths, shown, strict=True):
        entries.extend(read_list_file(path, role, label))
    return ClientList(role, entries)
