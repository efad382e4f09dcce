"""aiosmtpd hooks: what happens at each SMTP command. One instance serves every
connection, so it keeps nothing of its own: per-session facts are on `server.state`.

RCPT is where the policy meets the relay:
    max recipients (452) -> syntax (501) -> relay check (554) -> deferral (450) ->
    the backend's own reply, mirrored.
The backend connection opens at the first RCPT that passes: deferred bots never touch
it. The null sender is the exception the SPEC makes: its RCPT is mirrored even when its
deferral is pending, and the decision is taken (and recorded) only at DATA, so that
sender-verification callbacks from servers we send to still learn whether a mailbox
exists, and a server verifying many addresses is not taken for one retrying.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.decider import RcptDecision
from gateway.errors import StoreBusy, StoreError
from gateway.policy.decision import decided_at_data
from gateway.policy.facts import RDNSStatus
from gateway.policy.keys import is_null_sender
from gateway.policy.recipients import recipient_syntax
from gateway.policy.vocabulary import Action, Reason
from gateway.relay.backend import (
    UNAVAILABLE,
    BackendError,
    BackendReply,
    BackendSession,
    ClientIdentity,
)
from gateway.relay.content import screen_content
from gateway.relay.received import protocol_name, received_header

if TYPE_CHECKING:
    from gateway.runtime import Gateway
    from gateway.smtp.protocol import GatewaySMTP
    from gateway.smtp.state import SessionState, Transaction

log = logging.getLogger("onajimi.smtp")

STORE_TEMPFAIL = "451 4.3.0 Temporary local problem, try again later"


def declared_size(mail_options: list[str]) -> int | None:
    """The SIZE=n parameter of MAIL (aiosmtpd has checked its syntax and upper-cased it)."""
    for option in mail_options:
        if option.startswith("SIZE="):
            value = option[5:]
            return int(value) if value.isdigit() else None
    return None


class Handler:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @functools.cached_property
    def hooks(self) -> dict[str, Callable[..., Any]]:
        """The handle_* hooks by command, the table aiosmtpd wants; built once, not per
        connection as aiosmtpd would."""
        return {name[7:]: getattr(self, name) for name in dir(self) if name.startswith("handle_")}

    # -- greeting and hello -------------------------------------------------------------
    async def handle_PROXY(self, server: GatewaySMTP, session, envelope, proxy_data) -> bool:
        return await server.proxy_received(proxy_data)

    def handle_STARTTLS(self, server: GatewaySMTP, session, envelope) -> bool:
        ssl_object = (session.ssl or {}).get("ssl_object")
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            server.state.tls = (
                f"using {ssl_object.version()} with cipher {cipher[0] if cipher else '?'}"
            )
        else:
            server.state.tls = "using TLS"
        return True

    async def handle_HELO(self, server: GatewaySMTP, session, envelope, hostname: str) -> str:
        session.host_name = hostname
        server.state.helo, server.state.esmtp = hostname, False
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: GatewaySMTP, session, envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        server.state.helo, server.state.esmtp = hostname, True
        return server.ehlo_lines()

    # -- envelope -----------------------------------------------------------------------
    async def handle_MAIL(
        self, server: GatewaySMTP, session, envelope, address: str, mail_options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        server.state.junk = 0  # a transaction is progress
        transaction = server.state.begin_transaction()
        transaction.sender = address
        transaction.size = declared_size(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: GatewaySMTP, session, envelope, address: str, rcpt_options: list[str]
    ) -> str:
        gateway, state = self.gateway, server.state
        transaction = state.transaction
        assert transaction is not None  # aiosmtpd refuses RCPT before MAIL
        if len(envelope.rcpt_tos) >= gateway.settings.limits.max_recipients:
            return "452 4.5.3 Error: too many recipients"
        bad_syntax = recipient_syntax(address)
        if bad_syntax is not None:
            return str(bad_syntax)
        null_sender = is_null_sender(transaction.sender)
        decision = await self._decide(server, address, dry_run=null_sender)
        if isinstance(decision, str):
            return decision
        if decision is not None:  # None: the store is down and store.on_error says pass
            if decided_at_data(transaction.sender, decision.verdict):
                # Mirror RCPT, so that a callback learns whether the mailbox exists; the
                # deferral (or promotion) is decided, and recorded, at DATA.
                transaction.decide_at_data.append(address)
            else:
                refusal = self._judged(server, decision, address)
                if refusal is not None:
                    return refusal
        return await self._mirror_rcpt(server, envelope, transaction, address, rcpt_options)

    def _judged(self, server: GatewaySMTP, decision: RcptDecision, recipient: str) -> str | None:
        """Log a decision and act on it: the reply that refuses, or None when it passes."""
        state = server.state
        transaction = state.transaction
        assert transaction is not None
        verdict = decision.verdict
        self.gateway.decision(
            state, verdict, sender=transaction.sender, recipient=recipient, decision=decision
        )
        if verdict.action is Action.PENALTY:
            server.close_after_reply()
        if verdict.action is not Action.PASS:
            return str(verdict.reply)
        if verdict.reason is Reason.FAMILIAR:
            # Its last_seen is refreshed by an accepted delivery. Other passes hold no
            # familiar record (a promotion has just written a fresh one).
            transaction.keys.add(decision.key or state.assessment.client_key)
        return None

    async def _decide(
        self, server: GatewaySMTP, recipient: str, *, dry_run: bool = False
    ) -> RcptDecision | str | None:
        """The policy's decision for one recipient of the current transaction.

        Returns the reply instead when the store cannot decide (451 4.3.0), or None when
        it is down and `store.on_error = "pass"` lets the client through. A dry run (the
        null sender at RCPT) reads the store but records nothing.
        """
        gateway, state = self.gateway, server.state
        transaction = state.transaction
        assert transaction is not None
        assessment = await state.assessed()
        try:
            return await gateway.decider.at_rcpt(
                assessment,
                transaction.sender,
                recipient,
                dry_run=dry_run,
                session=None if dry_run else state.decided,
                snapshot=None if dry_run else await state.prefetched(),
                place=state.place,
                size=transaction.size,
            )
        except StoreBusy:  # its key is hammered through several gateways: not an outage
            gateway.event("store_busy", state, to=recipient, action="tempfail")
            return STORE_TEMPFAIL
        except StoreError:
            # The client needed the store and it is down (store.on_error decides).
            passing = gateway.settings.store.on_error == "pass"
            gateway.event(
                "store_error", state, to=recipient, action="pass" if passing else "tempfail"
            )
            if not passing:
                return STORE_TEMPFAIL
            transaction.keys.add(assessment.client_key)
            return None

    async def before_data(self, server: GatewaySMTP) -> str | None:
        """The refusal DATA gets before its 354, if any: the null sender's decisions, taken
        now that a message is really coming, or a backend that already failed."""
        state = server.state
        transaction = state.transaction
        assert transaction is not None
        if transaction.data_refusal is not None:  # DATA again: the same answer
            return transaction.data_refusal
        refusal = None
        postponed = transaction.decide_at_data
        while postponed:  # every recipient's key (triplet mode: one each) is recorded
            decision = await self._decide(server, postponed[0])
            if isinstance(decision, str):
                return decision  # the store could not decide: the next DATA asks again
            recipient = postponed.pop(0)
            reply = None if decision is None else self._judged(server, decision, recipient)
            if reply is not None and refusal is None:
                deferred = decision.verdict.action is Action.DEFER
                refusal = str(decision.verdict.at_data().reply) if deferred else reply
            if state.closing:  # the penalty box: the session ends with this reply
                return refusal
        if refusal is not None:
            transaction.data_refusal = refusal
            return refusal
        if transaction.backend_failed:
            return "451 4.4.1 Delivery temporarily unavailable, try again later"
        return None

    async def _mirror_rcpt(
        self, server: GatewaySMTP, envelope, transaction: Transaction, address: str, rcpt_options
    ) -> str:
        """RCPT at the backend; an accepted recipient joins the envelope."""
        reply = await self._relay_rcpt(server, envelope, transaction, address)
        if reply.accepted:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
            transaction.recipients += 1
        return reply.as_smtp()

    async def _relay_rcpt(
        self, server: GatewaySMTP, envelope, transaction: Transaction, address: str
    ) -> BackendReply:
        state = server.state
        if transaction.backend_failed:
            return UNAVAILABLE
        if transaction.sender_refused is not None:
            return transaction.sender_refused
        try:
            backend = state.backend or self._backend_for(state)
            if not transaction.mail_sent:
                reply = await backend.begin(
                    transaction.sender, envelope.mail_options, envelope.smtp_utf8
                )
                transaction.mail_sent = True
                if not reply.accepted:
                    transaction.sender_refused = reply
                    return reply
            return await backend.rcpt(address, envelope.smtp_utf8)
        except BackendError as exc:
            transaction.backend_failed = True
            self.gateway.backend_failed(state, exc)
            return exc.reply

    def _backend_for(self, state: SessionState) -> BackendSession:
        assessment = state.assessment
        rdns = assessment.rdns if assessment is not None else None
        identity = ClientIdentity(
            address=state.address_text,
            name=rdns.confirmed[0] if rdns is not None and rdns.confirmed else None,
            reverse_name=rdns.ptr_names[0] if rdns is not None and rdns.ptr_names else None,
            dns_tempfail=rdns is not None and rdns.status is RDNSStatus.TEMPFAIL,
            helo=state.helo,
            esmtp=state.esmtp,
            port=state.peer_port,
        )
        state.backend = BackendSession(
            self.gateway.backend_config, identity, self.gateway.capabilities
        )
        return state.backend

    # -- content ------------------------------------------------------------------------
    async def handle_DATA(self, server: GatewaySMTP, session, envelope) -> str:
        gateway, state = self.gateway, server.state
        transaction = state.transaction
        assert transaction is not None and state.backend is not None
        content: bytes = envelope.original_content
        started = server.loop.time()
        screened = screen_content(content, gateway.settings.relay.bare_newline)
        if screened.refusal is not None:
            gateway.relayed(state, transaction, envelope, "rejected", screened.refusal, None)
            return screened.refusal
        for what in screened.repaired:
            gateway.metrics.normalised.labels(what).inc()
        content = screened.content
        if gateway.settings.relay.add_received:
            assessment = state.assessment
            header = received_header(
                helo=state.helo,
                ptr=assessment.ptr if assessment is not None else None,
                address=state.address_text,
                protocol=protocol_name(state.esmtp, state.tls is not None, envelope.smtp_utf8),
                tls=state.tls,
                hostname=server.hostname,
                transaction_id=transaction.id,
                recipient=envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None,
                when=gateway.clock(),
            )
            content = header + content
        try:
            reply = await state.backend.data(content)
        except BackendError as exc:
            gateway.backend_failed(state, exc)
            reply = exc.reply
            result = "backend_error"
        else:
            result = (
                "delivered" if reply.accepted else "tempfail" if reply.code < 500 else "rejected"
            )
        gateway.relayed(
            state, transaction, envelope, result, reply.as_smtp(), server.loop.time() - started
        )
        if reply.accepted:
            await gateway.refresh_familiar(transaction.keys)
        return reply.as_smtp()

    # -- the rest -----------------------------------------------------------------------
    async def handle_RSET(self, server: GatewaySMTP, session, envelope) -> str:
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server: GatewaySMTP, session, envelope) -> str:
        backend, server.state.backend = server.state.backend, None
        if backend is not None:
            await backend.quit()
        return "221 2.0.0 Bye"

    async def handle_VRFY(self, server: GatewaySMTP, session, envelope, address: str) -> str:
        return "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"

    async def handle_NOOP(self, server: GatewaySMTP, session, envelope, arg: Any) -> str:
        return "250 2.0.0 Ok"
