"""DATA and the message: DATA's order and syntax, the null sender's decisions taken at
DATA, the message screened as it streams (bare line ends, NUL, framing), the Received
header, and the backend's reply to the end of data.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.policy import replies
from gateway.policy.decision import (
    RcptDecision,
)
from gateway.policy.replies import BARE_NEWLINE, NUL
from gateway.policy.vocabulary import (
    Action,
    RelayResult,
)
from gateway.relay.content import NORMALIZED, has_bare_newline, screen_content
from gateway.relay.received import protocol_name, received_header
from gateway.relay.reply import BACKEND_ERROR, BackendReply
from gateway.smtp.core.actions import Decide, Deliver, Say, StoreFault, Then
from gateway.smtp.core.notes import BackendErrored, Normalized, Relayed
from gateway.smtp.core.phases import Happening, Phase
from gateway.smtp.core.state import SessionState


class Problem(StrEnum):
    """Why the framer (smtp/data.py) gave up on a message as it arrived."""

    TOO_LONG = "too_long"  # a line over the line limit: 500
    TOO_BIG = "too_big"  # over the size limit: 552


_FRAMING_REFUSALS = {
    Problem.TOO_LONG: replies.LINE_TOO_LONG,
    Problem.TOO_BIG: replies.TOO_MUCH_DATA,
}


class MessageStage(SessionState):
    """From DATA to the backend's reply to the end of data."""

    __slots__ = ()

    def data_command(self, arg: str) -> Say | None:
        """DATA's order and syntax, before anything is decided: a HELO in this TLS state,
        an accepted recipient, no argument. None: go on (`data()`)."""
        if self.phase in (Phase.DROPPED, Phase.CLOSED):  # pipelined behind the end
            return Say(replies.CONNECTION_LOST, Then.CLOSE)
        if self.phase is Phase.GREETED:
            return Say(replies.DATA_NEEDS_HELO)
        if self.phase in (Phase.HELLO, Phase.MAIL):
            return Say(replies.DATA_NEEDS_RCPT)
        if arg:
            return Say(replies.DATA_SYNTAX)
        return None

    def data(self) -> Say | Decide | None:
        """DATA: the refusal it gets before its 354, a null-sender recipient to decide
        first, or None: say 354 and read the message."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if self.data_would_pass():
            self._move(Happening.DATA)
            return None
        if transaction.data_refusal is not None:  # DATA again: the same answer
            return Say(transaction.data_refusal)
        if transaction.decide_at_data:  # every recipient's key is recorded
            return Decide(transaction.decide_at_data[0], dry_run=False)
        refusal = transaction.refusal_at_data
        if refusal is not None:
            transaction.data_refusal = refusal
            return Say(refusal)
        return Say(BACKEND_ERROR.as_smtp())  # the backend failed in this transaction

    def data_would_pass(self) -> bool:
        """Whether DATA, if it came now, would go to the backend as it is: nothing left to
        decide or refuse at DATA. `data()` goes by it; the adapter may write DATA to the
        backend with the last RCPT when it holds and the client pipelined DATA."""
        transaction = self.transaction
        return (
            transaction is not None
            and not transaction.decide_at_data
            and transaction.refusal_at_data is None
            and transaction.data_refusal is None
            and not transaction.backend_error
        )

    def data_decided(self, recipient: str, result: RcptDecision | StoreFault) -> Say | None:
        """A postponed decision, taken at DATA; then `data()` again. A store that could
        not decide gets 451 now, and the next DATA asks again."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if isinstance(result, StoreFault):
            if not self._store_passes(result, recipient):
                return Say(replies.STORE_TEMPFAIL)
            transaction.decide_at_data.remove(recipient)
            return None
        self.decided.keep(result)
        transaction.decide_at_data.remove(recipient)
        reply = self._judged(result, recipient)
        if reply is not None and transaction.refusal_at_data is None:
            verdict = result.verdict
            deferred = verdict.action is Action.DEFER  # 451 at DATA, not 450
            transaction.refusal_at_data = str(verdict.at_data().reply) if deferred else reply.reply
        if self.phase is Phase.DROPPED:  # the penalty box: the session ends with this reply
            return Say(transaction.refusal_at_data or "", Then.CLOSE)
        return None

    # The message streams through: `message_begins` (the trace header to send first),
    # `message_part` for each piece as it arrives (screened: what goes on to the
    # backend, or the refusal), `message_complete` at its end. `message` does all three
    # for a message at hand whole.
    def message_begins(self, now: float) -> bytes:
        """The Received header to send ahead of the content (b"" when it is off)."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        transaction.received = 0
        transaction.normalized = set()
        transaction.content_refusal = None
        if not self.rules.add_received:
            return b""
        assessment = self.assessment
        recipients = transaction.recipients
        return received_header(
            helo=self.helo,
            ptr=assessment.ptr if assessment is not None else None,
            address=self.address_text,
            protocol=protocol_name(
                self.esmtp,
                tls=self.tls is not None,
                utf8=transaction.utf8,
                authenticated=self.authenticated is not None,
            ),
            tls=self.tls,
            hostname=self.rules.hostname,
            transaction_id=transaction.id,
            recipient=recipients[0] if len(recipients) == 1 else None,
            when=now,
        )

    def message_part(self, piece: bytes) -> bytes | Say:
        """A piece of the content (dot-stuffing undone; smtp/data.py cuts pieces where
        screening each alone is screening the whole): what goes on, or the refusal the
        message meets (then nothing more goes on; the adapter stops the backend's DATA)."""
        transaction = self.transaction
        assert transaction is not None
        if transaction.content_refusal is not None:
            if transaction.content_refusal == NUL and has_bare_newline(piece):
                transaction.content_refusal = BARE_NEWLINE  # as the whole would have said
            return b""
        screened = screen_content(piece, self.rules.bare_newline)
        if screened.refusal is not None:
            transaction.content_refusal = screened.refusal
            return Say(screened.refusal)
        transaction.normalized.update(screened.normalized)
        return screened.content

    def message_complete(self, size: int, problem: Problem | None = None) -> Say | None:
        """The end of data came (`size` bytes as sent), or the framer gave up on the
        message (`problem`: a line too long, too much data): its refusal,
        or None when the backend's end of data is next.

        A message refused after the backend's 354 costs the backend connection (no end
        of data may reach it): an authenticated one cannot be replaced, so the session
        ends after the refusal and the client logs in afresh for its next message."""
        then = Then.CLOSE if self.authenticated else Then.GO_ON
        if problem is not None:
            return Say(_FRAMING_REFUSALS[problem], then)
        transaction = self.transaction
        assert transaction is not None
        transaction.received = size
        refusal = transaction.content_refusal
        if refusal is not None:
            self.notes.append(Relayed(RelayResult.REJECTED, refusal, transaction, None))
            return Say(refusal, then)
        for what in NORMALIZED:
            if what in transaction.normalized:
                self.notes.append(Normalized(what))
        return None

    def message(self, content: bytes, now: float) -> Say | Deliver:
        """A whole message (dot-stuffing undone): refused, or what goes on."""
        header = self.message_begins(now)
        part = self.message_part(content)
        refused = self.message_complete(len(content))
        if refused is not None:
            return refused
        assert isinstance(part, bytes)
        return Deliver(header + part)

    def delivered(
        self, reply: BackendReply, seconds: float | None, failure: str | None = None
    ) -> Say:
        """The backend's reply to the end of data (`failure`: there was none usable)."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if failure is not None:
            self.notes.append(BackendErrored(failure))
            result = RelayResult.BACKEND_ERROR
        elif reply.accepted:
            result = RelayResult.DELIVERED
        else:
            result = RelayResult.TEMPFAIL if reply.code < 500 else RelayResult.REJECTED
        said = reply.as_smtp()
        self.notes.append(Relayed(result, said, transaction, seconds))
        if result is RelayResult.DELIVERED:
            return Say(said, refresh=frozenset(transaction.keys))
        return Say(said)

    def end_of_data(self) -> None:
        """DATA is over (answered, or the message was too big): the transaction ends."""
        self.transaction = None
        self._move(Happening.END)

    def internal_error(self) -> Say:
        """A bug met mid-command: the transaction cannot be trusted any more."""
        if self.transaction is not None:
            self.transaction.backend_error = True
        if self.phase is Phase.DATA:  # aiosmtpd leaves the transaction as it was
            self._move(Happening.FAIL)
        return Say(replies.INTERNAL_ERROR)
