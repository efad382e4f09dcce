"""One transaction, MAIL to the end of DATA (or RSET): its envelope, what the backend
and the policy made of it so far, and what its content met.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.relay.reply import BackendReply


@dataclass(slots=True)
class Transaction:
    """MAIL to the end of DATA (or RSET)."""

    id: str  # "<session>.<n>": in the Received header and the logs
    sender: str  # as the client gave it; "<>" for the null sender
    options: list[str]  # MAIL parameters, upper-cased (aiosmtpd checked them)
    utf8: bool = False  # SMTPUTF8 was given
    size: int | None = None  # the SIZE it declared at MAIL, if any
    recipients: list[str] = field(default_factory=list)  # accepted by the backend
    decide_at_data: list[str] = field(default_factory=list)  # null sender: decided at DATA
    refusal_at_data: str | None = None  # the first refusal among those, while deciding
    data_refusal: str | None = None  # what DATA was refused with (said again if repeated)
    backend_error: bool = False
    mail_sent: bool = False
    sender_refused: BackendReply | None = None
    keys: set[str] = field(default_factory=set)  # familiar keys (refreshed on 250)
    received: int = 0  # bytes of the message as received (0 until DATA)
    normalized: set[str] = field(default_factory=set)  # what normalize mode normalized in it
    content_refusal: str | None = None  # what the content met (bare line end, NUL)


def declared_size(options: list[str]) -> int | None:
    """The SIZE=n parameter of MAIL (aiosmtpd has checked its syntax and upper-cased it)."""
    for option in options:
        if option.startswith("SIZE="):
            text = option[5:]
            return int(text) if text.isdigit() else None
    return None
