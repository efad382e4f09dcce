"""A session's state: its settings (`SessionRules`), its transaction, and the fields
every stage reads and writes (`SessionState`: the slots, the phase moves). The rules are
in the stage modules; the flags' invariants are in phases.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from gateway.policy.decision import (
    Assessment,
    Policy,
    RcptDecision,
    Screening,
    SessionDecisions,
)
from gateway.policy.net import IPAddress
from gateway.policy.vocabulary import (
    BareNewline,
    OnError,
    PregreetAction,
    SuspectAction,
)
from gateway.smtp.core.actions import Say, Then
from gateway.smtp.core.phases import TRANSITIONS, Happening, Phase, SessionError

if TYPE_CHECKING:
    from gateway.smtp.core.notes import Note
    from gateway.smtp.core.transaction import Transaction


class TarpitState(StrEnum):
    HELD = "held"  # the adapter is holding the reply
    WAITED = "waited"  # the client waited it out
    FULL = "full"  # no room: the plain deferral


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The settings a session goes by (from Settings, rebuilt on reload)."""

    hostname: str = "localhost"  # listen.hostname
    max_recipients: int = 100  # limits.max_recipients
    on_error: OnError = OnError.TEMPFAIL  # store.on_error
    bare_newline: BareNewline = BareNewline.REJECT  # relay.bare_newline
    add_received: bool = True  # relay.add_received
    greet_wait: float = 0.0  # pregreet.greet_wait: 0 = no pregreet test
    pregreet_action: PregreetAction = PregreetAction.DROP  # pregreet.action
    auth_limit: int = 5  # auth.max_failures: refused AUTHs that end a session (0: never)
    suspect_action: SuspectAction = SuspectAction.DEFER  # policy.suspect_action
    tarpit_delay: float = 65.0  # tarpit.delay


class SessionState:
    """The fields of one session, shared by every stage; the phase moves."""

    __slots__ = (
        "address",
        "address_text",
        "assessment",
        "auth_failures",
        "authenticated",
        "counted",
        "decided",
        "esmtp",
        "familiar",
        "helo",
        "id",
        "junk",
        "notes",
        "peer_port",
        "phase",
        "place",
        "policy",
        "pregreeted",
        "rules",
        "screening",
        "tarpit",
        "tarpit_held",
        "tls",
        "tls_version",
        "transaction",
        "transactions",
    )

    def __init__(self, policy: Policy, rules: SessionRules, id: str = "") -> None:
        self.id = id  # every log line of the session carries it (the adapter draws it)
        self.policy = policy  # as it was at connect: a reload applies to new sessions
        self.rules = rules
        self.phase = Phase.CONNECTED
        self.notes: list[Note] = []  # for the observer; the adapter drains it
        self.peer_port: int | None = None  # the TCP peer's (the balancer's, behind PROXY)
        self.place = ""  # which of our listening addresses it reached (keys.place_key)
        self.address: IPAddress | None = None  # the client: PROXY source or TCP peer
        self.address_text = ""
        self.counted = False
        self.screening: Screening | None = None
        self.assessment: Assessment | None = None  # None until reverse DNS is known
        self.helo = ""
        self.esmtp = False
        self.tls: str | None = None  # "using TLSv1.3 with cipher ..." once STARTTLS is done
        self.tls_version = ""  # "TLSv1.3/TLS_AES_256_GCM_SHA384" for the relay line
        self.decided = SessionDecisions()
        self.transactions = 0
        self.transaction: Transaction | None = None
        self.junk = 0  # junk commands since the last MAIL
        self.pregreeted = False  # talked before the greeting (now, or within pregreet.ttl)
        self.familiar = False  # its address key's record is familiar (no pregreet wait)
        self.authenticated: str | None = None  # the SASL mechanism the backend said 235 to
        self.auth_failures = 0
        self.tarpit: TarpitState | None = None
        self.tarpit_held: RcptDecision | None = None  # the decision the hold postponed

    def _move(self, happening: Happening) -> None:
        target = TRANSITIONS[self.phase].get(happening)
        if target is None:
            raise SessionError(f"{happening.value} in phase {self.phase.value}")
        self.phase = target

    def _drop(self, reply: str) -> Say:
        self._move(Happening.DROP)
        return Say(reply, Then.CLOSE)
