"""SMTP AUTH: whether an exchange may start, its syntax, and how it ended. The exchange
itself passes between the client and the backend through the driver, never the core:
what the client sent is never handed here, noted or kept.
"""

from __future__ import annotations

import re

from gateway.policy import replies
from gateway.policy.vocabulary import (
    AuthResult,
    Reason,
)
from gateway.relay.reply import BackendReply
from gateway.smtp.core.actions import RelayAuth, Say, Strike
from gateway.smtp.core.notes import AuthEnded, BackendErrored
from gateway.smtp.core.phases import Phase
from gateway.smtp.core.state import SessionState

# What a client may send in an AUTH exchange: base64 (`=`: an empty initial response,
# RFC 4954), or `*` to cancel, within RFC 4954's line length. Nothing else reaches the
# backend.
_SASL_RESPONSE = re.compile(rb"[A-Za-z0-9+/]*={0,2}|\*")


SASL_LINE_LIMIT = 12288  # octets, RFC 4954 section 4 (the AUTH line as well)


def sasl_syntax(answer: bytes) -> bool:
    """Whether a client's AUTH answer (its CRLF removed) may go to the backend."""
    return len(answer) <= SASL_LINE_LIMIT and _SASL_RESPONSE.fullmatch(answer) is not None


# A 5xx to AUTH that is about the exchange, not the credentials: not a failed guess.
_AUTH_SYNTAX_CODES = frozenset({500, 501, 502, 503, 504})


class AuthStage(SessionState):
    """AUTH: refused here, or relayed, and how it ended."""

    __slots__ = ()

    def auth_command(
        self, mechanism: str, offered: tuple[str, ...], junk_limit: int
    ) -> Say | RelayAuth:
        """The AUTH command: it counts as a junk command first (limits.
        junk_commands), so cancels and refused mechanisms cannot go on for ever; MAIL
        starts the count again. Then `auth`."""
        return self.junk_command(junk_limit) or self.auth(mechanism, offered)

    def auth_initial(self, mechanism: str, initial: str) -> Say | None:
        """AUTH's initial response, before anything reaches the backend: base64, `=` (an
        empty one, RFC 4954) or `*`; anything else ends the exchange here."""
        if initial and not sasl_syntax(initial.encode("utf-8", "replace")):
            self.auth_aborted(mechanism)
            return Say(replies.AUTH_SYNTAX)
        return None

    def auth(self, mechanism: str, offered: tuple[str, ...]) -> Say | RelayAuth:
        """AUTH: refused here, or relayed to the backend. `offered`: the backend's
        mechanisms that may be relayed (empty: no AUTH here: auth.mode is off, the
        backend offers none, or there is no TLS to offer it under)."""
        if not offered:
            return Say(replies.NO_AUTH)
        if self.tls is None:  # never credentials in clear (nor an offer of AUTH)
            return Say(replies.AUTH_NEEDS_TLS)
        if self.authenticated is not None:  # RFC 4954 section 4
            return Say(replies.AUTH_AGAIN)
        if self.phase is Phase.GREETED or not self.esmtp:
            return Say(replies.AUTH_NEEDS_EHLO)
        if self.phase is not Phase.HELLO:
            return Say(replies.AUTH_IN_TRANSACTION)
        if not mechanism:
            return Say(replies.AUTH_USAGE)
        if mechanism not in offered:
            return Say(replies.AUTH_MECHANISM)
        return RelayAuth(mechanism)

    def auth_answered(
        self, mechanism: str, reply: BackendReply, failure: str | None = None
    ) -> Say | Strike:
        """The backend's final reply to an AUTH exchange (`failure`: there was none
        usable), mirrored; a refusal of the credentials is counted first."""
        if failure is not None:
            self.notes.append(BackendErrored(failure))
            result = AuthResult.BACKEND_ERROR
        elif reply.accepted:
            self.authenticated = mechanism
            result = AuthResult.OK
        elif reply.code >= 500 and reply.code not in _AUTH_SYNTAX_CODES:
            self.auth_failures += 1
            self.notes.append(AuthEnded(mechanism, AuthResult.FAILED, reply.code))
            return Strike(Reason.AUTH_FAILURES, Say(reply.as_smtp()))
        else:
            result = AuthResult.TEMPFAIL if reply.code < 500 else AuthResult.ABORTED
        self.notes.append(AuthEnded(mechanism, result, reply.code))
        return Say(reply.as_smtp())

    def auth_aborted(self, mechanism: str) -> None:
        """The client cancelled, or answered a challenge with what is not base64; the
        adapter has cancelled the exchange at the backend and replies itself."""
        self.notes.append(AuthEnded(mechanism, AuthResult.ABORTED, 501))
