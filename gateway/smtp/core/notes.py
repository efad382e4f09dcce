"""What happened in a session worth a log line or a metric: the core leaves these in
`Session.notes`, the driver hands them to the observer (observer.py), which writes them
down and decides nothing.
"""

from __future__ import annotations

from gateway.policy.decision import (
    RcptDecision,
    Verdict,
)
from gateway.policy.values import value
from gateway.policy.vocabulary import (
    AuthResult,
    Event,
    Limit,
    OnError,
    Reason,
    RelayResult,
    TarpitResult,
)
from gateway.smtp.core.transaction import Transaction


@value
class Decided:
    verdict: Verdict
    sender: str | None = None
    recipient: str | None = None
    decision: RcptDecision | None = None


@value
class LimitReached:
    limit: Limit


@value
class StoreTrouble:
    event: Event  # STORE_BUSY or STORE_ERROR
    recipient: str
    on_error: OnError


@value
class BackendErrored:
    detail: str


@value
class Encrypted:
    version: str  # "TLSv1.3"
    cipher: str


@value
class TarpitEnded:
    result: TarpitResult
    seconds: float


@value
class Struck:
    reason: Reason
    count: int  # live strikes for the reason against the address key, this one included


@value
class AuthEnded:
    mechanism: str
    result: AuthResult
    code: int  # the reply's code (the text is the backend's; what was sent is never here)


@value
class Normalized:
    what: str  # among relay.content.NORMALIZED


@value
class Relayed:
    result: RelayResult
    reply: str
    transaction: Transaction
    seconds: float | None  # the backend's DATA round trip; None: never asked


Note = (
    Decided
    | LimitReached
    | StoreTrouble
    | BackendErrored
    | Normalized
    | Relayed
    | Encrypted
    | AuthEnded
    | Struck
    | TarpitEnded
)
