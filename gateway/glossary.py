"""One glossary: each word operators meet, where it is set, logged and counted.

A word is one value of an enum (policy/vocabulary.py), and the same word everywhere:
the config value that selects it, the value of the log line's field, the metric's label
value. TERMS says, for each enum, which config key, which log field of which line and
which metric label carry its words; tests/test_glossary.py fails when any of those
places uses a word the enum does not have, or misses one it has. README "Glossary"
lists the same table for operators.

No I/O: names only (the test reads the config, the observer's lines and the metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.policy.vocabulary import (
    Action,
    AuthResult,
    BareNewline,
    DeferMode,
    DnsblAction,
    KeyMode,
    Limit,
    OnError,
    PregreetAction,
    PromoteOn,
    Reason,
    RelayResult,
    Retry,
    SuspectAction,
    TarpitResult,
)


@dataclass(frozen=True, slots=True)
class Term:
    """One enum's words and the places that use them (None: not used there)."""

    words: type[StrEnum]
    meaning: str
    setting: str | None = None  # "section.key" whose values are the words
    log: tuple[str, str] | None = None  # (the log line's name, its field)
    metric: tuple[str, str] | None = None  # (the metric family, its label)
    # Words that stand for settings: each word's "section.key" (the metric's word is
    # the shorter one, fixed by dashboards).
    stands_for: dict[str, str] | None = None


TERMS: tuple[Term, ...] = (
    Term(
        Action,
        "what a decision did with a recipient (or a client at connect)",
        log=("decision", "action"),
        metric=("onajimi_decisions_total", "action"),
    ),
    Term(
        Reason,
        "why: the rule or list behind a decision",
        log=("decision", "reason"),
        metric=("onajimi_decisions_total", "reason"),
    ),
    Term(
        Retry,
        "what a returning pending key turned out to be",
        metric=("onajimi_retries_total", "outcome"),
    ),
    Term(
        Limit,
        "the limit that refused or ended a session, named by its setting",
        log=("limit", "limit"),
        metric=("onajimi_limit_refusals_total", "limit"),
        stands_for={
            Limit.CONNECTIONS: "limits.max_connections",
            Limit.CLIENT_CONNECTIONS: "limits.max_connections_per_client",
            Limit.JUNK_COMMANDS: "limits.junk_commands",
            Limit.COMMAND_TIMEOUT: "limits.command_timeout",
        },
    ),
    Term(
        RelayResult,
        "how a relayed transaction ended",
        log=("relay", "result"),
        metric=("onajimi_relay_transactions_total", "result"),
    ),
    Term(
        AuthResult,
        "how an AUTH exchange ended",
        log=("auth", "result"),
        metric=("onajimi_auth_total", "result"),
    ),
    Term(
        TarpitResult,
        "how a tarpit hold ended",
        log=("tarpit", "result"),
        metric=("onajimi_tarpit_total", "result"),
    ),
    Term(
        OnError,
        "what a client that needs the store gets while it is down",
        setting="store.on_error",
        log=("store_error", "on_error"),
    ),
    Term(
        DeferMode,
        "who goes through the deferral procedure (all: every ichigen-san, reason ichigen)",
        setting="policy.defer",
    ),
    Term(
        KeyMode,
        "what a deferral is remembered under (triplet: greylisting, reason greylist)",
        setting="policy.key",
    ),
    Term(
        PromoteOn,
        "what makes a pending key familiar",
        setting="policy.promote_on",
    ),
    Term(
        DnsblAction,
        "what a client the DNS lists score as listed gets",
        setting="dnsbl.action",
    ),
    Term(
        SuspectAction,
        "what a suspect's first deferral meets",
        setting="policy.suspect_action",
    ),
    Term(
        PregreetAction,
        "what talking before the greeting earns",
        setting="pregreet.action",
    ),
    Term(
        BareNewline,
        "what a message with a bare CR or LF, or a NUL, gets",
        setting="relay.bare_newline",
    ),
)
