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
import functools
import logging
import re
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, login_always_fail, syntax

from gateway.errors import StoreError
from gateway.policy.decision import Assessment
from gateway.policy.keys import place_key
from gateway.policy.net import IPAddress, address_text, client_address
from gateway.policy.vocabulary import Action, Reason
from gateway.smtp.addresses import helo_fault, path_fault, plain_path
from gateway.smtp.limits import REFUSALS
from gateway.smtp.proxy import proxied_client
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


def _counted_as_junk(command: Any, usage: str) -> Any:
    """aiosmtpd's `command`, counted against limits.junk_commands first (see `_junk`);
    `usage` keeps its HELP entry."""

    @syntax(usage)
    async def counted(self: GatewaySMTP, arg: str) -> None:
        if not await self._junk():
            await command(self, arg)

    return counted


class GatewaySMTP(SMTP):
    line_length_limit = 1 << 16

    def __init__(self, gateway: Gateway) -> None:
        """aiosmtpd's __init__ without its per-connection introspection.

        aiosmtpd 1.4.6 runs dir(), inspect.getmembers() and inspect.signature() over the
        handler and itself on every connection: a quarter of a deferred session's CPU.
        What they compute never changes within a process, so it is computed once (the
        hooks in `hook_table`, the commands in `_SMTPCommands`). The attributes set here
        are the ones aiosmtpd's __init__ sets, with the values our settings give them;
        tests/test_smtp_protocol.py compares the two lists, so an aiosmtpd upgrade that
        adds one fails loudly instead of half-working.
        """
        settings = gateway.settings
        handler = gateway.handler
        self.gateway = gateway
        self.state: SessionState = SessionState.new(None)
        self._plain_replies = False  # True while answering HELO/EHLO (no enhanced codes)
        # An instance dict: aiosmtpd clears the shared class-level one on every connection.
        self.command_size_limits = collections.defaultdict(_default_command_size)
        self.__ident__ = "ESMTP"
        self.loop = loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(limit=self.line_length_limit, loop=loop),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = settings.limits.max_message_size
        self.enable_SMTPUTF8 = gateway.capabilities.offers("smtputf8")
        self._decode_data = False
        self.hostname = settings.listen.hostname
        self.tls_context = gateway.tls_context
        self.require_starttls = False
        self._timeout_duration = settings.limits.command_timeout
        self._timeout_handle = None
        self._deadline = 0.0  # the current command's timeout, on the loop's clock
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = PROXY_HEADER_TIMEOUT if settings.listen.proxy_protocol else None
        self._auth_callback = login_always_fail
        self._authenticator = None
        self._auth_required = False
        self._auth_methods = {}  # no AUTH on port 25: smtp_AUTH answers 502
        self._handle_hooks = handler.hooks
        self._ehlo_hook_ver = "new"
        self._smtp_methods = _SMTPCommands(self)
        self._enforce_call_limit = False

    # -- connection lifecycle -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            peer = transport.get_extra_info("peername")
            self.state.peer_port = peer[1] if peer else None
            local = transport.get_extra_info("sockname")
            if local:
                self.state.place = place_key(f"{local[0]}:{local[1]}")
            self.gateway.session_started(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self.gateway.session_ended(self)

    def eof_received(self) -> bool:
        """The client is done: aiosmtpd cancels the session's task; the transport closes too.

        aiosmtpd keeps a half-closed transport open (StreamReaderProtocol's default), and
        relies on its task to close it. A client that connects and closes at once (a port
        scan, a health check) can have its EOF arrive before that task first runs (uvloop
        delivers both in one loop round): a task cancelled before it starts runs nothing,
        so nothing closed the transport, `connection_lost` never came, and the session
        stayed counted for ever. Returning False makes the loop close it.
        """
        super().eof_received()
        return False

    def _set_rset_state(self) -> None:
        """HELO, EHLO, RSET and STARTTLS end the transaction (the backend RSETs lazily)."""
        super()._set_rset_state()
        state = getattr(self, "state", None)
        if state is not None:
            state.transaction = None

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the command deadline; the timer is re-armed only if it would fire late.

        aiosmtpd cancels and creates a timer for every command. Here a command only
        moves `_deadline`; the timer, when it fires early, re-arms itself for the rest.
        Under stress (smtp/limits.py) the deadline is the short one.
        """
        loop = self.loop
        if duration is None:
            duration = self.gateway.command_timeout()
        self._set_deadline(loop.time() + duration)

    def shorten_timeout(self, duration: float) -> None:
        """Stress began: this session's current deadline is at most `duration` away."""
        deadline = self.loop.time() + duration
        if deadline < self._deadline:
            self._set_deadline(deadline)

    def _set_deadline(self, deadline: float) -> None:
        loop = self.loop
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = loop.call_at(deadline, self._timeout_due)

    def _timeout_due(self) -> None:
        if self.loop.time() < self._deadline:  # the client spoke since: wait the rest
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_due)
        else:
            self._timeout_cb()

    def _timeout_cb(self) -> None:
        transport = self.transport
        self.gateway.limit_reached(self.state, "command_timeout")
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
        except (ConnectionError, asyncio.IncompleteReadError):
            # The client hung up while we answered: normal SMTP life, not an error.
            log.debug("session %s: the client hung up", self.state.id)
            if self.transport is not None:
                self.transport.close()

    async def proxy_received(self, proxy_data: Any) -> bool:
        """The PROXY hook: is the header from a trusted balancer, and who is the client?"""
        peer = self.session.peer
        balancer = client_address(peer[0]) if peer else None
        if balancer is None or self.gateway.proxy_trusted.lookup(balancer) is None:
            log.warning("PROXY header from untrusted %s refused (listen.proxy_trusted)", balancer)
            return False
        client = proxied_client(proxy_data, balancer)
        if client.address is None:
            log.warning("PROXY header from %s refused: %s", balancer, client.refusal)
            await self.push(f"421 4.3.0 {self.hostname} Error: {client.refusal}")
            return False
        self.state.peer_port = client.port or self.state.peer_port
        if client.destination:  # the address the client reached, not the balancer's own
            self.state.place = place_key(client.destination)
        return await self._guarded_connect_stage(client.address)

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
        limit = gateway.limits.admit(address, exempt=exempt)
        if limit is not None:
            gateway.limit_reached(state, limit)
            await self.push(f"421 4.7.0 {self.hostname} Error: {REFUSALS[limit]}, try again later")
            return False
        state.counted = True
        gateway.load_changed()
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
        assessment = gateway.decider.assess_cached(screening)
        if assessment is not None:  # a returning host: its reverse DNS is cached
            state.assessment = assessment
            self._plan_snapshot(assessment)
        else:  # a new host: PTR and A lookups, overlapping the client's EHLO and MAIL
            state.assessment_task = self.loop.create_task(self._assess(screening))
            if not policy.deny_has_names:
                return True
            # A deny entry may name this client's PTR: learn it before the greeting.
            assessment = await state.assessed()
        if _denied(assessment):
            gateway.decision(state, assessment.verdict)
            await self._refuse_session(str(assessment.verdict.reply))
            return False
        return True

    async def _assess(self, screening) -> Assessment:
        """Reverse DNS, then (while the client is still talking) the record RCPT will need."""
        assessment = await self.gateway.decider.assess(screening)
        self._plan_snapshot(assessment)
        return assessment

    def _plan_snapshot(self, assessment: Assessment) -> None:
        """The deferral record for RCPT: at hand already, or read ahead in a task."""
        state, decider = self.state, self.gateway.decider
        snapshot, key = decider.prefetch_plan(assessment, known=state.connect_snapshot)
        if key is None:
            state.snapshot = snapshot
        else:
            state.snapshot_task = self.loop.create_task(decider.store.read(key))

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
        transport = self.transport
        if transport is None or transport.is_closing():
            # The client has gone (uvloop raises RuntimeError on a write to a closed
            # transport): end the session the way aiosmtpd ends a reset connection.
            raise ConnectionResetError("the client has gone")
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

    @syntax("HELO hostname")  # overrides keep their HELP entry
    async def smtp_HELO(self, hostname: str) -> None:
        if hostname and helo_fault(hostname) is not None:
            await self._plainly(self.push("501 Syntax: HELO hostname"))
            return
        await self._plainly(super().smtp_HELO(hostname))

    @syntax("EHLO hostname")  # overrides keep their HELP entry
    async def smtp_EHLO(self, hostname: str) -> None:
        await self._plainly(self._ehlo(hostname))

    async def _ehlo(self, hostname: str) -> None:
        """aiosmtpd's EHLO, with the reply in one write (aiosmtpd writes and drains each
        of its six lines: six system calls where one will do)."""
        if not hostname or helo_fault(hostname) is not None:
            await self.push("501 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        # Room for the MAIL parameters EHLO advertises, as aiosmtpd reserves it.
        self.command_size_limits["MAIL"] += 26 + (10 if self.enable_SMTPUTF8 else 0)
        lines = await self._call_handler_hook("EHLO", hostname, [])
        await self.push("\r\n".join(lines))

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Plain `<local@domain>` and `<>` without the email package (see addresses.py);
        what the email package forgives but SMTP does not is refused (501)."""
        plain = plain_path(arg)
        if plain is None or self.local_part_limit:
            address, rest = super()._getaddr(arg)
        else:
            address, rest = plain
        if address and address != "<>" and path_fault(arg, address) is not None:
            return None, None
        return address, rest

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

    async def _junk(self) -> bool:
        """One more command that makes no progress; True when it is one too many (the
        session ends with 421). A new transaction (MAIL) starts the count again."""
        state = self.state
        state.junk += 1
        if state.junk <= self.gateway.junk_limit():
            return False
        self.gateway.limit_reached(state, "junk_commands")
        await self.push(f"421 4.7.0 {self.hostname} Error: too many commands that do nothing")
        self.close_after_reply()
        return True

    smtp_NOOP = _counted_as_junk(SMTP.smtp_NOOP, "NOOP [ignored]")
    smtp_RSET = _counted_as_junk(SMTP.smtp_RSET, "RSET")
    smtp_HELP = _counted_as_junk(SMTP.smtp_HELP, "HELP [command]")
    smtp_VRFY = _counted_as_junk(SMTP.smtp_VRFY, "VRFY <address>")

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 Error: AUTH not available on this port")

    async def smtp_EXPN(self, arg: str) -> None:
        if not await self._junk():
            await self.push("502 5.5.1 Error: EXPN not available")

    @syntax("DATA")  # overrides keep their HELP entry
    async def smtp_DATA(self, arg: str) -> None:
        transaction = self.state.transaction
        if self.envelope is not None and self.envelope.rcpt_tos and transaction is not None:
            refusal = await self.event_handler.before_data(self)
            if refusal is not None:
                await self.push(refusal)
                return
        await super().smtp_DATA(arg)

    async def handle_exception(self, error: Exception) -> str:
        state = self.state
        if isinstance(error, ConnectionError | asyncio.IncompleteReadError):
            # A hook met the client's hang-up: end the session quietly (the reply that
            # aiosmtpd pushes next raises ConnectionResetError, which ends it).
            log.debug("session %s: the client hung up", state.id)
            if self.transport is not None:
                self.transport.close()
            return "421 4.4.2 Connection lost"
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


def _default_command_size() -> int:
    return SMTP.command_size_limit


class _SMTPCommands:
    """`smtp_*` methods by command name, bound on demand.

    aiosmtpd binds every one of them into a dict per connection; a session uses four or
    five. The names are read once per class.
    """

    __slots__ = ("_functions", "_server")

    def __init__(self, server: GatewaySMTP) -> None:
        self._server = server
        self._functions = _commands_of(type(server))

    def get(self, command: str, default: Any = None) -> Any:
        function = self._functions.get(command)
        return default if function is None else function.__get__(self._server)

    def items(self) -> list[tuple[str, Any]]:
        server = self._server
        return [(name, function.__get__(server)) for name, function in self._functions.items()]


@functools.cache
def _commands_of(cls: type) -> dict[str, Any]:
    return {name[5:]: getattr(cls, name) for name in dir(cls) if name.startswith("smtp_")}


def _denied(assessment: Assessment) -> bool:
    verdict = assessment.verdict
    return verdict is not None and verdict.reason is Reason.DENYLIST
