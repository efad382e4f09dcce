"""The SMTP protocol object: aiosmtpd's SMTP, with its sharp edges handled on purpose.

One instance per connection. What it changes in aiosmtpd 1.4.6, and why:

* connect stage: aiosmtpd has no connect hook, so `_handle_client` (private API, pinned
  version, covered by tests) runs the pre-greeting decisions first: connection limits,
  deny list (554), penalty box (421). Behind PROXY protocol the same stage runs from the
  PROXY hook, once the real client address is known. The PTR lookup starts here too, so
  it overlaps the client's EHLO and MAIL.
* per-connection state lives on this object (`state`), because STARTTLS replaces
  aiosmtpd's Session and the handler is shared by every connection.
* `command_size_limits` is an instance dict: aiosmtpd's class-level one is cleared by
  every new connection, shrinking other sessions' MAIL allowance.
* EHLO lists PIPELINING and ENHANCEDSTATUSCODES, never AUTH; replies aiosmtpd writes
  itself get enhanced status codes added (RFC 2034 requires them once advertised).
* the command timeout says `421` before closing (aiosmtpd closes silently).
* any exception becomes `451 4.3.0` (aiosmtpd's default is a permanent 500 that leaks
  the exception text), with the traceback in the log.
* DATA lines up to 64 KiB are accepted (real mail breaks the 1,000 limit).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP

from gateway.errors import StoreError
from gateway.policy.decision import Assessment
from gateway.policy.net import IPAddress, address_text, client_address
from gateway.policy.vocabulary import Action, Reason
from gateway.smtp.state import SessionState

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = logging.getLogger("onajimi.smtp")

PROXY_HEADER_TIMEOUT = 5.0  # seconds a load balancer gets to send its PROXY header
REFUSED_COMMANDS = 20  # after a 554 greeting: this many 503s, then the door closes

# Enhanced status codes (RFC 3463) for the replies aiosmtpd phrases itself.
_ENHANCED = {
    221: "2.0.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.5.0",
    421: "4.3.0",
    451: "4.3.0",
    452: "4.5.3",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    550: "5.0.0",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")


def with_enhanced_code(reply: str) -> str:
    """`503 Error: need MAIL command` -> `503 5.5.1 Error: need MAIL command`."""
    if len(reply) < 4 or reply[3] != " " or "\r" in reply or not reply[:3].isdigit():
        return reply
    rest = reply[4:]
    if _HAS_ENHANCED.match(rest):
        return reply
    enhanced = _ENHANCED.get(int(reply[:3]))
    return f"{reply[:3]} {enhanced} {rest}".rstrip() if enhanced else reply


class GatewaySMTP(SMTP):
    line_length_limit = 1 << 16

    def __init__(self, gateway: Gateway) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.state: SessionState = SessionState.new(None)
        self._plain_replies = False  # True while answering HELO/EHLO (no enhanced codes)
        # An instance dict: aiosmtpd clears the shared class-level one on every connection.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(
            gateway.handler,
            hostname=settings.listen.hostname,
            ident="ESMTP",
            data_size_limit=settings.limits.max_message_size,
            enable_SMTPUTF8=gateway.capabilities.offers("smtputf8"),
            decode_data=False,
            tls_context=gateway.tls_context,
            timeout=settings.limits.command_timeout,
            proxy_protocol_timeout=PROXY_HEADER_TIMEOUT if settings.listen.proxy_protocol else None,
            loop=asyncio.get_running_loop(),
        )

    # -- connection lifecycle -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            peer = transport.get_extra_info("peername")
            self.state.peer_port = peer[1] if peer else None
            self.gateway.session_started(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self.gateway.session_ended(self)

    def _set_rset_state(self) -> None:
        """HELO, EHLO, RSET and STARTTLS end the transaction (the backend RSETs lazily)."""
        super()._set_rset_state()
        state = getattr(self, "state", None)
        if state is not None:
            state.transaction = None

    def _timeout_cb(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(f"421 4.4.2 {self.hostname} Error: timeout exceeded\r\n".encode())
        super()._timeout_cb()

    async def _handle_client(self) -> None:
        try:
            if self._proxy_timeout is None:
                peer = self.session.peer
                address = client_address(peer[0]) if peer else None
                if address is None or not await self._guarded_connect_stage(address):
                    if self.transport is not None:
                        self.transport.close()
                    return
            await super()._handle_client()
        except asyncio.CancelledError:
            # A client half-close (EOF) cancels this task but leaves the transport open;
            # aiosmtpd's command loop closes it, the stages before the loop must too.
            if self.transport is not None:
                self.transport.close()
            raise

    async def proxy_received(self, proxy_data: Any) -> bool:
        """The PROXY hook: is the header from a trusted balancer, and who is the client?"""
        peer = self.session.peer
        balancer = client_address(peer[0]) if peer else None
        if balancer is None or self.gateway.proxy_trusted.lookup(balancer) is None:
            log.warning("PROXY header from untrusted %s refused (listen.proxy_trusted)", balancer)
            return False
        source = getattr(proxy_data, "src_addr", None)
        address = client_address(source) if source is not None else balancer
        self.state.peer_port = getattr(proxy_data, "src_port", None) or self.state.peer_port
        return await self._guarded_connect_stage(address)

    async def _guarded_connect_stage(self, address: IPAddress) -> bool:
        try:
            return await self.connect_stage(address)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session %s: internal error before the greeting", self.state.id)
            await self.push(f"421 4.3.0 {self.hostname} Internal error, try again later")
            return False

    async def connect_stage(self, address: IPAddress) -> bool:
        """Everything decided before the greeting. False: the session ends here."""
        gateway, state = self.gateway, self.state
        policy = gateway.policy
        state.address = address
        state.address_text = address_text(address)
        exempt = policy.trusted.lookup(address) is not None
        refusal = gateway.limits.admit(address, exempt=exempt)
        if refusal is not None:
            gateway.event("limit", state, reason=refusal)
            await self.push(f"421 4.7.0 {self.hostname} Error: {refusal}, try again later")
            return False
        state.counted = True
        try:
            connect = await gateway.decider.at_connect(address)
        except StoreError:  # no penalty box without the store: the RCPT stage decides
            screening = policy.screen(address)
            verdict = policy.before_greeting(screening, None, gateway.clock())
            connect = None
        else:
            screening, verdict = connect.screening, connect.verdict
            state.connect_snapshot = connect.snapshot
        state.screening = screening
        if verdict is not None and verdict.action is Action.REJECT:
            gateway.decision(state, verdict)
            await self._refuse_session(str(verdict.reply))
            return False
        if verdict is not None and verdict.action is Action.PENALTY:
            gateway.decision(state, verdict)
            await self.push(str(verdict.reply))
            return False
        if verdict is not None:  # trusted or allow-listed by address: no DNS needed
            state.assessment = policy.assess(screening, None)
            return True
        state.assessment_task = self.loop.create_task(self._assess(screening))
        if policy.deny_has_names:
            # A deny entry may name this client's PTR: learn it before the greeting.
            assessment = await state.assessed()
            if _denied(assessment):
                gateway.decision(state, assessment.verdict)
                await self._refuse_session(str(assessment.verdict.reply))
                return False
        return True

    async def _assess(self, screening) -> Assessment:
        """Reverse DNS, then (while the client is still talking) the record RCPT will need."""
        decider = self.gateway.decider
        assessment = await decider.assess(screening)
        self.state.snapshot_task = self.loop.create_task(
            decider.prefetch(assessment, known=self.state.connect_snapshot)
        )
        return assessment

    async def _refuse_session(self, greeting: str) -> None:
        """RFC 5321 3.1: a 554 greeting, then 503 to everything until QUIT."""
        await self.push(greeting)
        for _ in range(REFUSED_COMMANDS):
            try:
                line = await self._reader.readuntil()
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            if line.strip().upper() == b"QUIT":
                await self.push("221 2.0.0 Bye")
                return
            await self.push("503 5.5.1 Error: access denied, say QUIT")

    # -- replies ------------------------------------------------------------------------
    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str) and not self._plain_replies:
            status = with_enhanced_code(status)
        await super().push(status)

    async def _plainly(self, command) -> None:
        """Replies to HELO/EHLO carry no enhanced status codes (RFC 2034)."""
        self._plain_replies = True
        try:
            await command
        finally:
            self._plain_replies = False

    async def smtp_HELO(self, hostname: str) -> None:
        await self._plainly(super().smtp_HELO(hostname))

    async def smtp_EHLO(self, hostname: str) -> None:
        await self._plainly(super().smtp_EHLO(hostname))

    def ehlo_lines(self) -> list[str]:
        lines = [
            self.hostname,
            "PIPELINING",
            f"SIZE {self.data_size_limit}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.enable_SMTPUTF8:
            lines.append("SMTPUTF8")
        if self.tls_context is not None and self._tls_protocol is None:
            lines.append("STARTTLS")
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 Error: AUTH not available on this port")

    async def smtp_EXPN(self, arg: str) -> None:
        await self.push("502 5.5.1 Error: EXPN not available")

    async def smtp_DATA(self, arg: str) -> None:
        transaction = self.state.transaction
        if self.envelope is not None and self.envelope.rcpt_tos and transaction is not None:
            if transaction.defer_at_data is not None:
                await self.push(str(transaction.defer_at_data.reply))
                return
            if transaction.backend_failed:
                await self.push("451 4.4.1 Delivery temporarily unavailable, try again later")
                return
        await super().smtp_DATA(arg)

    async def handle_exception(self, error: Exception) -> str:
        state = self.state
        log.error("session %s: internal error", state.id, exc_info=error)
        if state.backend is not None:
            state.backend.abort()  # the transaction cannot be trusted any more
        if state.transaction is not None:
            state.transaction.backend_failed = True
        return "451 4.3.0 Internal error, try again later"

    def close_after_reply(self) -> None:
        """End the session once the current reply is written (421 mid-session)."""
        self.state.closing = True
        if self.transport is not None:
            self.loop.call_soon(self.transport.close)


def _denied(assessment: Assessment) -> bool:
    verdict = assessment.verdict
    return verdict is not None and verdict.reason is Reason.DENYLIST
