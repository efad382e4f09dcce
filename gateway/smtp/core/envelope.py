"""HELO/EHLO, STARTTLS and the envelope: MAIL, each RCPT through the policy (the
Decider's verdict, the store's faults) and the backend's own reply, mirrored.
"""

from __future__ import annotations

from gateway.policy import replies
from gateway.policy.decision import (
    RcptDecision,
    Verdict,
    decided_at_data,
)
from gateway.policy.keys import is_null_sender
from gateway.policy.recipients import recipient_syntax
from gateway.policy.vocabulary import (
    Action,
    Event,
    OnError,
    PregreetAction,
    Reason,
)
from gateway.relay.reply import BACKEND_ERROR, BackendReply
from gateway.smtp.addresses import helo_fault
from gateway.smtp.core.actions import Decide, Promote, RelayRcpt, Say, StoreFault, Strike, Tarpit
from gateway.smtp.core.notes import BackendErrored, Decided, Encrypted, StoreTrouble
from gateway.smtp.core.phases import Happening
from gateway.smtp.core.state import SessionState
from gateway.smtp.core.transaction import Transaction, declared_size

_SENDER_OK = Say(replies.SENDER_OK)


class EnvelopeStage(SessionState):
    """From HELO to the last RCPT."""

    __slots__ = ()

    def hello_refused(self, name: str, esmtp: bool) -> Say | None:
        """HELO/EHLO's syntax: a name is required, and one a host could have (RFC 5321
        4.1.1.1; smtp/addresses.py). None: `hello` may follow."""
        if name and helo_fault(name) is None:
            return None
        return Say(replies.EHLO_SYNTAX if esmtp else replies.HELO_SYNTAX)

    def hello(self, name: str, esmtp: bool) -> None:
        self.helo, self.esmtp = name, esmtp
        self.transaction = None
        self._move(Happening.HELLO)

    def starttls(self) -> Say | None:
        """STARTTLS once (RFC 3207): inside TLS it is refused (a second handshake would
        make the session forget its AUTH). None: the handshake may start."""
        return Say(replies.TLS_ALREADY) if self.tls is not None else None

    def tls_started(self, version: str, cipher: str) -> None:
        """STARTTLS is done: a new EHLO is due (RFC 3207), and nothing said before counts."""
        self.tls = f"using {version} with cipher {cipher}"
        self.tls_version = f"{version}/{cipher}"
        self.notes.append(Encrypted(version, cipher))
        self.transaction = None
        self.authenticated = None  # RFC 3207: nothing from before the handshake counts
        self._move(Happening.TLS)

    def reset(self) -> None:
        self.transaction = None
        self._move(Happening.RESET)

    def mail(self, sender: str, options: list[str], utf8: bool) -> Say:
        self.junk = 0  # a transaction is progress
        self.transactions += 1
        self.decided.transaction = self.transactions
        self.transaction = Transaction(
            f"{self.id}.{self.transactions}", sender, options, utf8, declared_size(options)
        )
        self._move(Happening.MAIL)
        return _SENDER_OK

    def rcpt(self, recipient: str) -> Say | Decide | RelayRcpt:
        """RCPT: max recipients (452), syntax (501), then the policy."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if len(transaction.recipients) >= self.rules.max_recipients:
            return Say(replies.TOO_MANY_RECIPIENTS)
        bad_syntax = recipient_syntax(recipient)
        if bad_syntax is not None:
            return Say(str(bad_syntax))
        if self.authenticated is not None:  # the backend decides (permit_sasl_authenticated)
            verdict = Verdict(
                Action.PASS, Reason.AUTHENTICATED, detail=f"SMTP AUTH {self.authenticated}"
            )
            self.notes.append(Decided(verdict, transaction.sender, recipient))
            return self._to_backend(recipient)
        null_sender = is_null_sender(transaction.sender)
        if (
            self.pregreeted
            and self.rules.pregreet_action is PregreetAction.DEFER
            and not null_sender
            and self.policy.exempt(recipient) is None
        ):
            # Relay attempts still get their 5xx first; everything else waits.
            verdict = self.policy.relay_check(recipient) or Verdict(
                Action.DEFER,
                Reason.PREGREET,
                self.policy.rules.wording.defer(Reason.PREGREET.value),
                detail="talked before the greeting",
            )
            self.notes.append(Decided(verdict, transaction.sender, recipient))
            return Say(str(verdict.reply))
        return Decide(recipient, dry_run=null_sender)

    def rcpt_decided(
        self, recipient: str, result: RcptDecision | StoreFault
    ) -> Say | RelayRcpt | Strike | Tarpit | Promote:
        """The policy's decision for a recipient: refuse it, or relay it to the backend.

        The null sender's deferral (and anything else that would write its record) waits
        for DATA: RCPT is mirrored so that a callback learns whether the mailbox exists.
        """
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if isinstance(result, StoreFault):
            if not self._store_passes(result, recipient):
                return Say(replies.STORE_TEMPFAIL)
            return self._to_backend(recipient)
        self.decided.keep(result)
        if decided_at_data(transaction.sender, result.verdict):
            transaction.decide_at_data.append(recipient)
        else:
            held = self._tarpitted(result, recipient)
            if held is not None:
                return held
            refusal = self._judged(result, recipient)
            if refusal is not None:
                if result.verdict.reason is Reason.RELAY_DENIED and self._strikable():
                    return Strike(Reason.AUTOBAN_RELAY, refusal)
                return refusal
        return self._to_backend(recipient)

    def _to_backend(self, recipient: str) -> Say | RelayRcpt:
        """A recipient the policy let through: to the backend, unless it already failed
        or refused the sender in this transaction."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if transaction.backend_error:
            return Say(BACKEND_ERROR.as_smtp())
        if transaction.sender_refused is not None:
            return Say(transaction.sender_refused.as_smtp())
        return RelayRcpt(recipient, mail_first=not transaction.mail_sent)

    def _store_passes(self, fault: StoreFault, recipient: str) -> bool:
        """A recipient the store could not decide: whether it goes on unscreened."""
        if fault is StoreFault.BUSY:  # its key is hammered through several gateways
            self.notes.append(StoreTrouble(Event.STORE_BUSY, recipient, OnError.TEMPFAIL))
            return False
        on_error = self.rules.on_error
        self.notes.append(StoreTrouble(Event.STORE_ERROR, recipient, on_error))
        if on_error is not OnError.PASS:
            return False
        assert self.assessment is not None
        assert self.transaction is not None
        self.transaction.keys.add(self.assessment.client_key)
        return True

    def _judged(self, decision: RcptDecision, recipient: str) -> Say | None:
        """Note a decision and act on it: the refusal, or None when it passes."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        verdict = decision.verdict
        self.notes.append(Decided(verdict, transaction.sender, recipient, decision))
        if verdict.action is Action.PENALTY:
            return self._drop(str(verdict.reply))
        if verdict.action is not Action.PASS:
            return Say(str(verdict.reply))
        if verdict.reason is Reason.FAMILIAR:
            # Its last_seen is refreshed by an accepted delivery. Other passes hold no
            # familiar record (a promotion has just written a fresh one).
            assert self.assessment is not None
            transaction.keys.add(decision.key or self.assessment.client_key)
        return None

    def mail_relayed(self, reply: BackendReply) -> Say | None:
        """The backend's answer to MAIL: None goes on to RCPT; a refusal is mirrored (and
        given again to every later RCPT of the transaction)."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        transaction.mail_sent = True
        if reply.accepted:
            return None
        transaction.sender_refused = reply
        return Say(reply.as_smtp())

    def rcpt_relayed(self, recipient: str, reply: BackendReply) -> Say | Strike:
        """The backend's answer to RCPT, mirrored; an accepted recipient joins, and an
        unknown one (5.1.1) is a strike against a client under suspicion."""
        say = Say(reply.as_smtp())
        if reply.accepted:
            assert self.transaction is not None
            self.transaction.recipients.append(recipient)
            self._move(Happening.RCPT)
        elif reply.code >= 500 and reply.text.startswith("5.1.1") and self._strikable():
            return Strike(Reason.AUTOBAN_PROBE, say)
        return say

    def backend_error(self, reply: BackendReply, detail: str) -> Say:
        """No usable reply from the backend during MAIL or RCPT."""
        assert self.transaction is not None
        self.transaction.backend_error = True
        self.notes.append(BackendErrored(detail))
        return Say(reply.as_smtp())
