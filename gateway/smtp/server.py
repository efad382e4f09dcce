"""The aiosmtpd adapter: commands in, session-core calls, the awaits it asks for, replies out.

One `GatewaySMTP` per connection; it owns the socket side of a session (the backend
connection, the DNS and store reads started ahead) and its `core` (smtp/session.py)
owns every rule. `Hooks` are aiosmtpd's handle_* hooks, shared by every connection.

What it changes in aiosmtpd 1.4.6, and why:

* connect stage: aiosmtpd has no connect hook, so `_handle_client` (private API, pinned
  version, covered by tests) runs early.py's connect stage first; behind PROXY protocol
  the PROXY hook runs it, once the real client address is known.
* the envelope is a view of the core's transaction (`TransactionEnvelope`), so sender
  and recipients are held once; aiosmtpd reads it for its own order checks.
* `command_size_limits` is an instance dict: aiosmtpd's class-level one is cleared by
  every new connection, shrinking other sessions' MAIL allowance.
* EHLO lists PIPELINING and ENHANCEDSTATUSCODES; replies aiosmtpd writes itself get
  enhanced status codes added (RFC 2034 requires them once advertised).
* AUTH is the backend's: after STARTTLS, EHLO offers the backend's mechanisms, and the
  exchange is relayed line by line to the backend (aiosmtpd's own AUTH, which checks
  credentials itself, is not used). MAIL accepts an `AUTH=` parameter (RFC 4954
  requires it once AUTH is offered) and drops it: the backend knows who logged in.
* the command timeout says `421` before closing (aiosmtpd closes silently).
* any exception becomes `451 4.3.0` (aiosmtpd's default is a permanent 500 that leaks
  the exception text), with the traceback in the log.
* DATA is read in bulk (smtp/data.py: chunks, one search for the end, one replace for
  the dots) instead of a line at a time, with aiosmtpd's framing and limits; lines up
  to 64 KiB are accepted (real mail breaks the 1,000 limit).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import re
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from aiosmtpd.smtp import SMTP, Envelope, TLSSetupException, login_always_fail, syntax

from gateway.errors import StoreBusy, StoreError
from gateway.policy import replies
from gateway.policy.decision import Assessment, RcptDecision
from gateway.policy.facts import RDNSStatus
from gateway.policy.keys import place_key
from gateway.policy.net import client_address
from gateway.policy.vocabulary import Event
from gateway.relay.backend import BackendError, BackendSession, ClientIdentity, DotStuffer
from gateway.smtp import steps
from gateway.smtp.addresses import path_fault, plain_path
from gateway.smtp.data import CHUNK, Framer, data_is_next, unread
from gateway.smtp.early import PROXY_HEADER_TIMEOUT, EarlyStage, ReadAhead
from gateway.smtp.services import Services
from gateway.smtp.session import (
    SASL_LINE_LIMIT,
    Decide,
    Phase,
    Promote,
    RelayAuth,
    RelayRcpt,
    Say,
    Session,
    StoreFault,
    Strike,
    Tarpit,
    Then,
    sasl_syntax,
)
from gateway.store.base import Snapshot

log = logging.getLogger("onajimi.smtp")

_ENDED = (Phase.DROPPED, Phase.CLOSED)

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


class TransactionEnvelope(Envelope):
    """aiosmtpd's Envelope as a view of the core's transaction: aiosmtpd reads it for its
    order checks (nested MAIL, RCPT before MAIL, DATA before RCPT) and writes only
    `smtp_utf8` (before the MAIL hook) and the content (before the DATA hook)."""

    def __init__(self, core: Session) -> None:  # no super().__init__: nothing to hold twice
        self._core = core
        self.smtp_utf8 = False
        self.content: bytes | None = None
        self.original_content: bytes | None = None

    @property
    def mail_from(self) -> str | None:  # type: ignore[override]
        transaction = self._core.transaction
        return transaction.sender if transaction is not None else None

    @property
    def rcpt_tos(self) -> list[str]:  # type: ignore[override]
        transaction = self._core.transaction
        return transaction.recipients if transaction is not None else []


def _wake(woken: asyncio.Future[None]) -> None:
    """The tarpit's timer: the hold is over (unless the session went meanwhile)."""
    if not woken.done():
        woken.set_result(None)


def _counted_as_junk(command: Any, usage: str) -> Any:
    """aiosmtpd's `command`, counted against limits.junk_commands first (see `_junk`);
    `usage` keeps its HELP entry."""

    @syntax(usage)
    async def counted(self: GatewaySMTP, arg: str) -> None:
        if not await self._junk():
            await command(self, arg)

    return counted


class GatewaySMTP(EarlyStage):
    line_length_limit = 1 << 16

    def __init__(self, services: Services) -> None:
        """aiosmtpd's __init__ without its per-connection introspection.

        aiosmtpd 1.4.6 runs dir(), inspect.getmembers() and inspect.signature() over the
        handler and itself on every connection: a quarter of a deferred session's CPU.
        What they compute never changes within a process, so it is computed once (the
        hooks in `Hooks.table`, the commands in `_SMTPCommands`). Every attribute
        aiosmtpd's __init__ sets is here with the value our settings give it: set per
        connection, a class attribute (the same for every session), or a property (read
        off the services); tests/test_smtp_server.py checks them all, so an aiosmtpd
        upgrade that adds one fails loudly instead of half-working.

        Few attributes per instance, on purpose: CPython shares one key table among the
        instance dicts of a class while they hold at most 30 attributes; past that each
        session carries a table of its own (about 1.5 KiB, for 10,000 idle or tarpitted
        sessions 15 MB).
        """
        self.services = services
        self.core = Session(services.policy(), services.rules, secrets.token_hex(4))
        # An instance dict: aiosmtpd clears the shared class-level one on every connection.
        self.command_size_limits = collections.defaultdict(_default_command_size)
        self.command_size_limits["AUTH"] = SASL_LINE_LIMIT
        loop = asyncio.get_running_loop()
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(limit=self.line_length_limit, loop=loop),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        # asyncio's flow control keeps its drain waiters in a deque: 624 bytes for what is
        # almost always empty. It only appends, removes and iterates: a list does that in
        # 56 (for 10,000 idle or tarpitted sessions, 5 MB).
        self._drain_waiters = []
        self._timeout_handle = None
        self._deadline = 0.0  # the current command's timeout, on the loop's clock
        self.session = None
        self.envelope = TransactionEnvelope(self.core)
        self.transport = None
        self._handler_coroutine = None
        self._smtp_methods = _SMTPCommands(self)
        self.ahead = ReadAhead()
        self.backend: BackendSession | None = None  # opened at the first relayed RCPT (or AUTH)

    # aiosmtpd's per-connection attributes that are the same for every session here
    # (STARTTLS and the adapter assign some per instance when they change).
    __ident__ = "ESMTP"
    _decode_data = False
    require_starttls = False
    _tls_handshake_okay = True
    _tls_protocol = None
    _original_transport = None
    _auth_require_tls = True
    _auth_callback = staticmethod(login_always_fail)
    _authenticator = None
    _auth_required = False
    _auth_methods: ClassVar[dict] = {}  # aiosmtpd's AUTH is unused (smtp_AUTH relays it)
    _ehlo_hook_ver = "new"
    _enforce_call_limit = False
    # event_handler and _handle_hooks: set below, once HOOKS exists.

    @property
    def enable_SMTPUTF8(self) -> bool:
        return self.services.capabilities.offers("smtputf8")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def hostname(self) -> str:
        return self.services.rules.hostname

    @property
    def tls_context(self):
        return self.services.tls_context

    @property
    def data_size_limit(self) -> int:
        return self.services.max_message_size

    @property
    def _timeout_duration(self) -> float:
        return self.services.limits.command_timeout

    @property
    def _proxy_timeout(self) -> float | None:
        return PROXY_HEADER_TIMEOUT if self.services.proxy_trusted is not None else None

    def _create_envelope(self) -> Envelope:
        return self.envelope  # the one view of the core's transaction, for the session

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        """aiosmtpd's, with the hooks always there (MISSING never happens) and a session
        that has ended (a command pipelined behind a 421, read before the close took
        effect) ended as a hang-up is: quietly, unanswered."""
        if self.core.phase in _ENDED:
            raise ConnectionResetError("the session has ended")
        return await self._handle_hooks[command](self, self.session, self.envelope, *args)

    # -- connection lifecycle -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            peer = transport.get_extra_info("peername")
            local = transport.get_extra_info("sockname")
            self.core.connected_via(
                peer[1] if peer else None, place_key(f"{local[0]}:{local[1]}") if local else None
            )
            self.services.sessions.opened(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            key = self.core.tarpit_abandoned()
            if key is not None and self.core.screening is not None:  # hung up in the tarpit
                _on_the_side(self.services.decider.tarpit_abandoned(self.core.screening, key))
            if self.core.notes:  # what a cancelled command had decided
                self.services.observer.noted(self.core)
            self.services.sessions.closed(self)
            backend, self.backend = self.backend, None
            if backend is not None:  # an unfinished backend transaction is abandoned
                backend.release()
            for task in (self.ahead.assessment_task, self.ahead.snapshot_task):
                if task is not None and not task.done():
                    task.cancel()

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

    def _set_post_data_state(self) -> None:
        """After DATA (answered, or too big) and on RSET/HELO/EHLO/STARTTLS. aiosmtpd
        makes a new envelope here; ours is a view that stays (what aiosmtpd writes on it,
        `smtp_utf8` and the content, it writes afresh for every transaction)."""
        core = self.core
        if core.phase is Phase.DATA:
            core.end_of_data()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Move the command deadline; the timer is re-armed only if it would fire late.

        aiosmtpd cancels and creates a timer for every command. Here a command only
        moves `_deadline`; the timer, when it fires early, re-arms itself for the rest.
        Under stress (smtp/limits.py) the deadline is the short one.
        """
        if duration is None:
            duration = self.services.limits.command_timeout
        self._set_deadline(self.loop.time() + duration)

    def shorten_timeout(self, duration: float) -> None:
        """Stress began: this session's current deadline is at most `duration` away."""
        deadline = self.loop.time() + duration
        if deadline < self._deadline:
            self._set_deadline(deadline)

    def _set_deadline(self, deadline: float) -> None:
        self._deadline = deadline
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._timeout_due)

    def _timeout_due(self) -> None:
        if self.loop.time() < self._deadline:  # the client spoke since: wait the rest
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_due)
        else:
            self._timeout_cb()

    def _timeout_cb(self) -> None:
        core = self.core
        say = core.timed_out()
        self.services.observer.noted(core)
        reason = core.loitered()
        if reason is not None and core.screening is not None:
            # The session is over: counted on the side, the penalty box meets it next time.
            _on_the_side(self.services.decider.struck(core.screening, reason))
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(f"{say.reply}\r\n".encode())
        super()._timeout_cb()

    async def _handle_client(self) -> None:
        try:
            if self._proxy_timeout is None:
                peer = self.session.peer
                address = client_address(peer[0]) if peer else None
                if address is None or not await self.connect_stage(address):
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
            log.debug("session %s: the client hung up", self.core.id)
            if self.transport is not None:
                self.transport.close()

    # -- what the core asks for -----------------------------------------------------------
    async def _prefetched(self) -> Snapshot | None:
        """The prefetched deferral record, once: later transactions read afresh."""
        ahead = self.ahead
        task, ahead.snapshot_task = ahead.snapshot_task, None
        if task is None:
            snapshot, ahead.snapshot = ahead.snapshot, None
            return snapshot
        try:
            return await task
        except StoreError:
            return None  # the decision will meet the outage itself

    async def assessed(self) -> Assessment:
        """The assessment, waiting for the PTR lookup started at connect if need be."""
        core = self.core
        if core.assessment is None:
            assert self.ahead.assessment_task is not None
            await asyncio.shield(self.ahead.assessment_task)
        assert core.assessment is not None
        return core.assessment

    # -- the awaits of smtp/steps.py's rcpt and data_gate (TransactionEffects) ------------
    async def decide(self, ask: Decide) -> RcptDecision | StoreFault:
        """decider.at_rcpt for the current transaction; a dry run records nothing."""
        core = self.core
        transaction = core.transaction
        assert transaction is not None
        assessment = await self.assessed()
        dry_run = ask.dry_run
        result: RcptDecision | StoreFault
        try:
            result = await self.services.decider.at_rcpt(
                assessment,
                transaction.sender,
                ask.recipient,
                dry_run=dry_run,
                session=None if dry_run else core.decided,
                snapshot=None if dry_run else await self._prefetched(),
                place=core.place,
                size=transaction.size,
            )
        except StoreBusy:
            result = StoreFault.BUSY
        except StoreError:
            result = StoreFault.ERROR
        self._still_on()
        return result

    async def promote(self, key: str) -> None:
        await self.services.decider.promote(key)
        self._still_on()

    async def relay_rcpt(self, ask: RelayRcpt) -> Say | Strike:
        """MAIL (once per transaction) and RCPT at the backend, opened on first need; DATA
        with them when the client sent it right behind (pipelined) and it will pass."""
        core = self.core
        transaction = core.transaction
        assert transaction is not None
        then_data = data_is_next(self._reader) and core.data_would_pass()
        try:
            backend = self.backend or self._open_backend()
            if ask.mail_first:
                mail, reply = await backend.begin(
                    transaction.sender,
                    transaction.options,
                    transaction.utf8,
                    ask.recipient,
                    then_data,
                )
                self._still_on()
                said = core.mail_relayed(mail)
                if said is not None:
                    return said
                assert reply is not None  # MAIL was accepted
            else:
                reply = await backend.rcpt(ask.recipient, transaction.utf8, then_data)
        except BackendError as exc:
            self._still_on()
            return core.backend_error(exc.reply, str(exc))
        self._still_on()
        return core.rcpt_relayed(ask.recipient, reply)

    def _open_backend(self) -> BackendSession:
        core = self.core
        assessment = core.assessment
        rdns = assessment.rdns if assessment is not None else None
        identity = ClientIdentity(
            address=core.address_text,
            name=rdns.confirmed[0] if rdns is not None and rdns.confirmed else None,
            reverse_name=rdns.ptr_names[0] if rdns is not None and rdns.ptr_names else None,
            dns_tempfail=rdns is not None and rdns.status is RDNSStatus.TEMPFAIL,
            helo=core.helo,
            esmtp=core.esmtp,
            port=core.peer_port,
        )
        services = self.services
        self.backend = BackendSession(
            services.backend,
            identity,
            services.capabilities,
            services.backend_pool,
            services.observer.backend_connection,
        )
        return self.backend

    def said(self, say: Say) -> str:
        """The reply for aiosmtpd to write, once what the core noted is written down."""
        if self.core.notes:
            self.services.observer.noted(self.core)
        if say.then is Then.CLOSE:
            self.close_after_reply()
        return say.reply

    def _still_on(self) -> None:
        """After an await: the session may have ended meanwhile (a timeout's 421, a
        hang-up); then whatever came back is not the session's business any more."""
        if self.core.phase in _ENDED:
            raise ConnectionResetError("the session has ended")

    # -- replies --------------------------------------------------------------------------
    async def push(self, status: str | bytes, plain: bool = False) -> None:
        """`plain`: no enhanced status code added (replies to HELO and EHLO, RFC 2034)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            # The client has gone (uvloop raises RuntimeError on a write to a closed
            # transport): end the session the way aiosmtpd ends a reset connection.
            raise ConnectionResetError("the client has gone")
        if isinstance(status, str) and not plain:
            status = with_enhanced_code(status)
        await super().push(status)

    def close_after_reply(self) -> None:
        """End the session once the current reply is written (421 mid-session)."""
        if self.transport is not None:
            self.loop.call_soon(self.transport.close)

    # -- commands -------------------------------------------------------------------------
    @syntax("HELO hostname")  # overrides keep their HELP entry
    async def smtp_HELO(self, hostname: str) -> None:
        """aiosmtpd's HELO, its reply without an enhanced status code."""
        if await self._hello(hostname, esmtp=False):
            await self.push(await self._call_handler_hook("HELO", hostname), plain=True)

    @syntax("EHLO hostname")  # overrides keep their HELP entry
    async def smtp_EHLO(self, hostname: str) -> None:
        """aiosmtpd's EHLO, with the reply in one write (aiosmtpd writes and drains each
        of its six lines: six system calls where one will do)."""
        if not await self._hello(hostname, esmtp=True):
            return
        # Room for the MAIL parameters EHLO advertises, as aiosmtpd reserves it (and
        # 500 for AUTH=, RFC 4954 section 5); set, not added, so EHLO again adds nothing.
        room = 26 + (10 if self.enable_SMTPUTF8 else 0) + (500 if self._auth_offer() else 0)
        self.command_size_limits["MAIL"] = SMTP.command_size_limit + room
        lines = await self._call_handler_hook("EHLO", hostname, [])
        await self.push("\r\n".join(lines), plain=True)

    async def _hello(self, hostname: str, esmtp: bool) -> bool:
        """HELO's and EHLO's start: the core's word on the name (501 said, False), else
        aiosmtpd's reset of the transaction and the protocol noted."""
        refused = self.core.hello_refused(hostname, esmtp=esmtp)
        if refused is not None:
            await self.push(refused.reply, plain=True)
            return False
        self._set_rset_state()
        self.session.extended_smtp = esmtp
        return True

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
        mechanisms = self._auth_offer()
        if mechanisms:
            lines.append(f"AUTH {' '.join(mechanisms)}")
        return [f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"]

    def _auth_mechanisms(self) -> tuple[str, ...]:
        """What AUTH may relay (auth.mode auto, the backend offers it, TLS is possible)."""
        if not self.services.auth or self.tls_context is None:
            return ()
        return self.services.capabilities.auth_mechanisms

    def _auth_offer(self) -> tuple[str, ...]:
        """What EHLO offers now: nothing until STARTTLS is done."""
        return self._auth_mechanisms() if self.core.tls is not None else ()

    @property
    def auth_offered(self) -> bool:
        """HELP lists AUTH when EHLO does."""
        return bool(self._auth_offer())

    def _getparams(self, params):
        """aiosmtpd's, with MAIL's `AUTH=` accepted and left out (see the module
        docstring). Only MAIL's parameters are parsed in the HELLO phase."""
        result = super()._getparams(params)
        if result is not None and self.core.phase is Phase.HELLO:
            result.pop("AUTH", None)
        return result

    async def _junk(self) -> bool:
        """One more command that makes no progress; True when it is one too many (the
        session ends with 421). A new transaction (MAIL) starts the count again."""
        say = self.core.junk_command(self.services.limits.junk_limit)
        if say is None:
            return False
        await self.push(self.said(say))
        return True

    smtp_NOOP = _counted_as_junk(SMTP.smtp_NOOP, "NOOP [ignored]")
    smtp_RSET = _counted_as_junk(SMTP.smtp_RSET, "RSET")
    smtp_HELP = _counted_as_junk(SMTP.smtp_HELP, "HELP [command]")
    smtp_VRFY = _counted_as_junk(SMTP.smtp_VRFY, "VRFY <address>")

    @syntax("AUTH <mechanism> [initial-response]", when="auth_offered")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH relayed to the backend; nothing the client sends is logged or kept. Every
        AUTH counts as a junk command (limits.junk_commands), so cancels and
        refused mechanisms cannot go on for ever; MAIL starts the count again."""
        mechanism, _, initial = (arg or "").partition(" ")
        junk_limit = self.services.limits.junk_limit
        out = self.core.auth_command(mechanism.upper(), self._auth_mechanisms(), junk_limit)
        if isinstance(out, RelayAuth):
            out = await self._authenticate(out, initial)
            if isinstance(out, Strike):
                out = await self.strike(out)
        await self.push(self.said(out))

    async def _authenticate(self, ask: RelayAuth, initial: str) -> Say | Strike:
        """The exchange: each 334 challenge of the backend to the client, each answer of
        the client to the backend, until the backend's final reply."""
        core = self.core
        refused = core.auth_initial(ask.mechanism, initial)
        if refused is not None:
            return refused
        await self.assessed()  # the backend learns who the client is (XCLIENT NAME=) first
        self._still_on()
        backend = self.backend or self._open_backend()
        try:
            reply = await backend.authenticate(
                ask.mechanism, initial.encode("ascii") if initial else None
            )
            while reply.code == 334:
                self._still_on()
                answer = await self._sasl_answer(reply.text)
                if answer is None:  # not base64: cancel at the backend, say why here
                    await backend.auth_response(b"*")
                    self._still_on()
                    core.auth_aborted(ask.mechanism)
                    return Say(replies.AUTH_SYNTAX)
                reply = await backend.auth_response(answer)
        except BackendError as exc:
            self._still_on()
            return core.auth_answered(ask.mechanism, exc.reply, str(exc))
        self._still_on()
        return core.auth_answered(ask.mechanism, reply)

    async def _sasl_answer(self, challenge: str) -> bytes | None:
        """Say a challenge, read the client's answer: base64 or `*`, else None."""
        await self.push(f"334 {challenge}")  # as it came (334 gets no enhanced code)
        self._reset_timeout()
        try:
            line = await self._reader.readline()
        except ValueError:  # longer than the reader's limit: what is left is discarded
            return None
        if not line:
            raise ConnectionResetError("the client hung up during AUTH")
        self._reset_timeout()
        line = line.rstrip(b"\r\n")
        return line if sasl_syntax(line) else None

    async def tarpit(self, hold: Tarpit) -> Say | Promote:
        """Hold the reply: one timer, no task, no wake-ups meanwhile. The client's own
        command timeout is ours to wait out, not its."""
        slots, core = self.services.tarpit, self.core
        if not slots.take():
            return core.tarpit_full(hold.recipient)
        try:
            limit = self.loop.time() + hold.seconds + self.services.limits.command_timeout
            self._set_deadline(max(self._deadline, limit))
            # asyncio.sleep's own insides, without its coroutine: thousands of sessions
            # sit here at once, and each frame kept is about 0.25 KiB of each of them.
            woken = self.loop.create_future()
            timer = self.loop.call_later(hold.seconds, _wake, woken)
            try:
                await woken
            finally:
                timer.cancel()
        finally:
            slots.release()
        self._still_on()
        return core.tarpit_waited(hold.recipient)

    async def strike(self, strike: Strike) -> Say:
        """A strike counted in the store (the penalty box at its limit). The store down:
        not counted (a failed AUTH still meets the session's own limit)."""
        core = self.core
        struck = None
        if core.screening is not None:
            try:
                struck = await self.services.decider.struck(core.screening, strike.reason)
            except StoreError as exc:
                log.warning("session %s: %s strike not counted: %s", core.id, strike.reason, exc)
            self._still_on()
        if struck is None:
            return core.strike_counted(strike, 0, None)
        return core.strike_counted(strike, struck.count, struck.verdict)

    async def smtp_EXPN(self, arg: str) -> None:
        if not await self._junk():
            await self.push(replies.NO_EXPN)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's, but once only (RFC 3207: a second STARTTLS inside TLS is refused;
        aiosmtpd would start a second handshake, and the session forget its AUTH)."""
        refused = self.core.starttls()
        if refused is not None:
            await self.push(refused.reply)
            return
        await super().smtp_STARTTLS(arg)

    @syntax("DATA")  # overrides keep their HELP entry
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA with the message read in bulk (smtp/data.py), after the core's
        checks (HELO, a recipient, no argument) and the gate before the 354 (the null
        sender's postponed decisions, a backend that already failed)."""
        out = self.core.data_command(arg) or await steps.data_gate(self.core, self)
        if out is not None:
            await self.push(self.said(out))
            return
        say = await self._stream_message()
        self._set_post_data_state()
        await self.push(self.said(say))

    async def _stream_message(self) -> Say:
        """DATA at the backend first (its refusal is the client's answer, before any
        upload), then 354, then the message piece by piece as it arrives: framed
        (smtp/data.py), screened (the core), dot-stuffed again and written on, never
        held whole. Any end but the backend's reply to the end of data leaves the
        backend without one: its transaction is abandoned, nothing is delivered."""
        core, backend = self.core, self.backend
        assert backend is not None  # a recipient was accepted by it
        try:
            go = await backend.data_begin()
        except BackendError as exc:
            self._still_on()
            return core.delivered(exc.reply, None, str(exc))
        self._still_on()
        if go.code != 354:
            return core.delivered(go, None)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        stuffer = DotStuffer()
        header = core.message_begins(self.services.clock())
        framer = Framer(self.data_size_limit, self.line_length_limit)
        failure: BackendError | None = None  # the backend broke off mid-message
        try:
            if header:
                await backend.data_part(stuffer.stuff(header))
        except BackendError as exc:
            failure = exc
        reader = self._reader
        while not framer.done:
            data = await reader.read(CHUNK)
            if not data:
                raise ConnectionResetError("the client hung up during DATA")
            self._still_on()
            piece = framer.feed(data)
            if not piece or failure is not None or framer.problem is not None:
                continue
            part = core.message_part(piece)
            if isinstance(part, Say):  # refused: the backend gets no end of data
                backend.abort()
                continue
            if part:
                try:
                    await backend.data_part(stuffer.stuff(part))
                except BackendError as exc:
                    failure = exc
                self._still_on()
        if framer.leftover:
            unread(reader, framer.leftover)
        if framer.problem is not None:
            backend.abort()
        refused = core.message_complete(framer.size, framer.problem)
        if refused is not None:
            return refused
        if failure is not None:
            return core.delivered(failure.reply, None, str(failure))
        started = self.loop.time()
        try:
            reply = await backend.data_end(stuffer.end())
        except BackendError as exc:
            self._still_on()
            return core.delivered(exc.reply, self.loop.time() - started, str(exc))
        self._still_on()
        say = core.delivered(reply, self.loop.time() - started)
        if say.refresh:
            # A refresh lost to an outage costs nothing but an earlier expiry.
            with contextlib.suppress(StoreError):
                await self.services.decider.delivered(say.refresh)
        return say

    async def handle_exception(self, error: Exception) -> str:
        core = self.core
        if isinstance(error, ConnectionError | asyncio.IncompleteReadError):
            # A hook met the client's hang-up: end the session quietly (the reply that
            # aiosmtpd pushes next raises ConnectionResetError, which ends it).
            log.debug("session %s: the client hung up", core.id)
            if self.transport is not None:
                self.transport.close()
            return replies.CONNECTION_LOST
        if isinstance(error, TLSSetupException):
            # A client that could not agree on TLS (too old, a scanner, a probe): its
            # problem, not ours; the connection is of no use any more.
            self.services.observer.event(
                Event.TLS_FAILED, core, detail=str(error.__cause__ or error)
            )
            if self.transport is not None:
                self.transport.close()
            return replies.CONNECTION_LOST
        log.error("session %s: internal error", core.id, exc_info=error)
        if self.backend is not None:
            self.backend.abort()  # the transaction cannot be trusted any more
        say = core.internal_error()
        self.services.observer.noted(core)
        return say.reply


class Hooks:
    """aiosmtpd's handle_* hooks: each turns a command into a session-core call. One
    instance serves every connection; per-session facts are on the `server`."""

    @functools.cached_property
    def table(self) -> dict[str, Callable[..., Any]]:
        """The hooks by command, the table aiosmtpd wants; built once, not per connection
        as aiosmtpd would."""
        return {name[7:]: getattr(self, name) for name in dir(self) if name.startswith("handle_")}

    async def handle_PROXY(self, server: GatewaySMTP, session, envelope, proxy_data) -> bool:
        return await server.proxy_received(proxy_data)

    def handle_STARTTLS(self, server: GatewaySMTP, session, envelope) -> bool:
        ssl_object = (session.ssl or {}).get("ssl_object")
        version, cipher = "TLS", "?"
        if ssl_object is not None:
            version = ssl_object.version() or version
            cipher = (ssl_object.cipher() or (cipher,))[0]
        server.core.tls_started(version, cipher)
        server.services.observer.noted(server.core)
        return True

    async def handle_HELO(self, server: GatewaySMTP, session, envelope, hostname: str) -> str:
        session.host_name = hostname
        server.core.hello(hostname, esmtp=False)
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self, server: GatewaySMTP, session, envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        server.core.hello(hostname, esmtp=True)
        return server.ehlo_lines()

    async def handle_MAIL(
        self, server: GatewaySMTP, session, envelope, address: str, mail_options: list[str]
    ) -> str:
        return server.said(server.core.mail(address, mail_options, envelope.smtp_utf8))

    async def handle_RCPT(
        self, server: GatewaySMTP, session, envelope, address: str, rcpt_options: list[str]
    ) -> str:
        said = await steps.rcpt(server.core, address, server)
        assert said is not None  # a hang-up here raises instead (GatewaySMTP._still_on)
        return server.said(said)

    async def handle_RSET(self, server: GatewaySMTP, session, envelope) -> str:
        server.core.reset()
        return replies.OK

    async def handle_QUIT(self, server: GatewaySMTP, session, envelope) -> str:
        backend, server.backend = server.backend, None
        if backend is not None:
            backend.release()
        return server.core.quit().reply

    async def handle_VRFY(self, server: GatewaySMTP, session, envelope, address: str) -> str:
        return replies.CANNOT_VRFY

    async def handle_NOOP(self, server: GatewaySMTP, session, envelope, arg: Any) -> str:
        return replies.OK


HOOKS = Hooks()
GatewaySMTP.event_handler = HOOKS
GatewaySMTP._handle_hooks = HOOKS.table


_SIDE_TASKS: set[asyncio.Task] = set()


def _on_the_side(count: Coroutine[Any, Any, Any]) -> None:
    """Run a count for a session that is over (it has no command left to await it in)."""
    task = asyncio.get_running_loop().create_task(count)
    _SIDE_TASKS.add(task)  # held until done: the loop keeps only a weak reference
    task.add_done_callback(_side_task_done)


def _side_task_done(task: asyncio.Task) -> None:
    """A count made on the side for a session that is over (a loitering strike, a hang-up
    in the tarpit): an outage only loses the count."""
    _SIDE_TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("a count for an ended session was lost: %s", task.exception())


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
