"""The rules of one SMTP session: facts in, what to say and do next out. No I/O.

Everything that decides the course of a session lives in the session core; the adapter
(server.py, early.py) reads and writes the socket, awaits DNS, the store and the
backend, and feeds what they said back in. Nothing in the core awaits, reads a clock or
touches a socket: time arrives as a `now` argument, DNS as an `RDNS`, the store's
verdict as an `RcptDecision` (or a `StoreFault`), the backend's answers as
`BackendReply` values. What happened worth a log line or a metric is left in `notes`,
which the adapter hands to the observer.

The core is one module per stage, postscreen-style, read in this order:

    core/phases.py    the phases, the only moves between them, the session's invariants
    core/actions.py   what the core asks of its driver (Say, Decide, Tarpit, ...)
    core/state.py     the session's settings and fields, and the phase moves
    core/transaction.py  one transaction: MAIL to the end of DATA
    core/notes.py     what happened, for the observer
    core/connect.py   the connect stage and the pregreet test
    core/envelope.py  HELO, STARTTLS, MAIL, RCPT
    core/tarpit.py    a suspect's deferral held
    core/auth.py      SMTP AUTH
    core/message.py   DATA and the message
    core/limits.py    junk commands, timeouts, strikes

`Session` is all of them; this module also names what a driver passes and receives (the
notes are core/notes.py's, for the observer).
"""

from __future__ import annotations

from gateway.policy import replies
from gateway.smtp.core.actions import (
    GREET,
    Decide,
    Deliver,
    Greet,
    LookUp,
    Promote,
    RelayAuth,
    RelayRcpt,
    Say,
    StoreFault,
    Strike,
    Tarpit,
    Then,
)
from gateway.smtp.core.auth import SASL_LINE_LIMIT, AuthStage, sasl_syntax
from gateway.smtp.core.connect import REFUSED_COMMANDS, ConnectStage
from gateway.smtp.core.envelope import EnvelopeStage
from gateway.smtp.core.limits import LimitsStage
from gateway.smtp.core.message import MessageStage
from gateway.smtp.core.phases import TRANSITIONS, Happening, Phase, SessionError
from gateway.smtp.core.state import SessionRules, TarpitState
from gateway.smtp.core.tarpit import SUSPECT_REASONS, TarpitStage
from gateway.smtp.core.transaction import Transaction, declared_size

__all__ = [
    "GREET",
    "REFUSED_COMMANDS",
    "SASL_LINE_LIMIT",
    "SUSPECT_REASONS",
    "TRANSITIONS",
    "Decide",
    "Deliver",
    "Greet",
    "Happening",
    "LookUp",
    "Phase",
    "Promote",
    "RelayAuth",
    "RelayRcpt",
    "Say",
    "Session",
    "SessionError",
    "SessionRules",
    "StoreFault",
    "Strike",
    "Tarpit",
    "TarpitState",
    "Then",
    "Transaction",
    "declared_size",
    "sasl_syntax",
]


class Session(ConnectStage, EnvelopeStage, TarpitStage, AuthStage, MessageStage, LimitsStage):
    """One SMTP session's state and rules: every stage of core/, and its end."""

    __slots__ = ()

    def quit(self) -> Say:
        self._move(Happening.CLOSE)
        return Say(replies.BYE, Then.CLOSE)

    def ended(self) -> bool:
        """The connection is gone. True once, if the limits must release the client."""
        counted, self.counted = self.counted, False
        self.phase = Phase.CLOSED
        return counted
