"""The backend MTA, one client session at a time: every reply mirrored, never invented.

The gateway never answers for the backend: each RCPT and the end of DATA return the
backend's own code and text, and any failure to get one (refused connection, timeout,
dropped connection, a 421) becomes `451 4.4.1` so the client keeps the message and
retries. Addresses go out as the client gave them, never re-parsed. DATA streams:
`data_begin`, `data_part` for each piece of the message as the client sends it
(CRLF-only by then, dot-stuffed here by DotStuffer), `data_end`.

Fewer round trips (RFC 2920, when the backend offers PIPELINING): XFORWARD, MAIL and
the first RCPT in one write; DATA with the last RCPT when the client sent it right
behind. Each group is written once and its
replies read in order (relay/client.py).

Forwarding the client's identity: XCLIENT resets the backend session and makes the
backend log, filter and write its Received header as if the real client had connected
(Postfix: `smtpd_authorized_xclient_hosts`); XFORWARD only informs (Postfix:
`smtpd_authorized_xforward_hosts`), per transaction, which is what lets a connection
serve one client after another (`backend.reuse`, relay/pool.py). A backend that refuses
an explicitly configured XCLIENT/XFORWARD is a misconfiguration that would make every
message look local, so it fails the transaction loudly instead of relaying anonymously.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.policy.values import value
from gateway.relay.client import (
    BackendGone,
    ReplyReader,
    extensions_of,
    open_connection,
    start_tls,
)
from gateway.relay.pool import BackendPool
from gateway.relay.reply import BACKEND_ERROR, BackendReply
from gateway.relay.xtext import xtext

log = logging.getLogger("onajimi.backend")

_FORWARDED_MAIL_PARAMETERS = {"SIZE": "size", "BODY": "8bitmime", "SMTPUTF8": "smtputf8"}


class BackendError(Exception):
    """No usable reply from the backend; the client gets `reply` (a 4xx)."""

    def __init__(self, detail: str, reply: BackendReply = BACKEND_ERROR) -> None:
        super().__init__(detail)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class BackendConfig:
    host: str
    port: int
    tls: str  # none | starttls | implicit
    tls_context: ssl.SSLContext | None
    helo_name: str
    forward_client: str  # auto | xclient | xforward | off
    connect_timeout: float
    command_timeout: float

    @classmethod
    def from_settings(cls, settings) -> BackendConfig:
        b = settings.backend
        context = None
        if b.tls != "none":
            context = ssl.create_default_context(cafile=str(b.ca_file) if b.ca_file else None)
            # Backends are usually addressed by IP on a private network: verify the chain
            # against ca_file, not a hostname the certificate cannot know.
            context.check_hostname = False
            if b.ca_file is None:
                context.verify_mode = ssl.CERT_NONE
        return cls(
            host=b.host,
            port=b.port,
            tls=b.tls,
            tls_context=context,
            helo_name=settings.backend_helo,
            forward_client=b.forward_client,
            connect_timeout=b.connect_timeout,
            command_timeout=b.command_timeout,
        )


@value
class ClientIdentity:
    """Who the backend should believe it is talking to."""

    address: str
    name: str | None  # forward-confirmed PTR name
    reverse_name: str | None  # the PTR name, confirmed or not
    dns_tempfail: bool
    helo: str
    esmtp: bool
    port: int | None = None


class Capabilities:
    """The backend's EHLO keywords, shared by every session (e.g. whether to offer SMTPUTF8)."""

    def __init__(self) -> None:
        self.extensions: dict[str, str] = {}
        self.auth_mechanisms: tuple[str, ...] = ()

    def offers(self, keyword: str) -> bool:
        return keyword.lower() in self.extensions

    def learn(self, extensions: dict[str, str]) -> None:
        self.extensions = {k.lower(): v for k, v in extensions.items()}
        self.auth_mechanisms = relayable_mechanisms(self.extensions.get("auth", ""))


def relayable_mechanisms(advertised: str) -> tuple[str, ...]:
    """The SASL mechanisms of the backend's AUTH keyword that survive being relayed.

    Every mechanism runs end to end between the client and the backend, the gateway
    passing lines, except channel-bound ones (`SCRAM-SHA-256-PLUS`): they bind to the
    TLS channel, and the client's channel ends at the gateway, not at the backend.
    """
    names = dict.fromkeys(name.upper() for name in advertised.split())
    return tuple(name for name in names if not name.endswith("-PLUS"))


def _helo_token(helo: str) -> str | None:
    """The client's HELO name if it can go on an EHLO line as it is, else None."""
    if helo and len(helo) <= 255 and all(33 <= ord(c) <= 126 for c in helo):
        return helo
    return None


def valid_final_code(code: int) -> bool:
    """A completion or failure code (2yz, 4yz, 5yz: RFC 5321 4.2), the only replies a
    client may be given for MAIL, RCPT or the end of DATA."""
    return 200 <= code <= 599 and code // 100 != 3 and code // 10 % 10 <= 5


class BackendSession:
    """A backend connection for one client session; several transactions may use it.

    With `backend.reuse` the connection comes from the pool and goes back to it when
    the client is done, clean; otherwise it is opened at first need and QUIT at the end.
    """

    def __init__(
        self,
        config: BackendConfig,
        identity: ClientIdentity,
        capabilities: Capabilities,
        pool: BackendPool | None = None,
        counted: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.capabilities = capabilities
        self.pool = pool
        self.counted = counted  # told of each connection used: True when it was reused
        self._link: ReplyReader | None = None
        self._extensions: dict[str, str] = {}  # this connection's EHLO keywords
        self._forwarded: dict[str, bytes] = {}  # XCLIENT/XFORWARD lines, made once
        self._xclient_done = False  # this connection is the client's (XCLIENT accepted)
        self.in_transaction = False  # MAIL accepted, and no 354 since (RSET before MAIL)
        self._in_content = False  # the backend said 354 and has not answered the end yet
        # The reply to a DATA written with the last RCPT (pipelined), not yet asked for.
        self._data_reply: BackendReply | None = None
        # AUTH was tried in this session: none of its connections goes back to the pool.
        self._auth_tried = False
        # The backend said 235 on this connection: its authorisation is the connection's,
        # so a lost connection is never silently replaced by an unauthenticated one.
        self.authenticated = False

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.usable

    @property
    def _awaiting_content(self) -> bool:
        """A 354 read ahead (DATA pipelined with the last RCPT) and not yet used: the
        backend waits for content, and only a dropped connection ends that cleanly."""
        return self._data_reply is not None and self._data_reply.code == 354

    @property
    def _pipelining(self) -> bool:
        return "pipelining" in self._extensions

    # -- connection ---------------------------------------------------------------------
    async def _open(self) -> ReplyReader:
        """Connect, EHLO (STARTTLS, EHLO), forward the client's identity."""
        link, extensions = await greeted(self.config)
        self._xclient_done = False
        try:
            self._extensions = await self._forward_identity(link, extensions)
        except BaseException:
            link.fail(BackendGone("given up while opening"))
            raise
        self.capabilities.learn(self._extensions)
        return link

    async def _forward_identity(self, link: ReplyReader, extensions: dict[str, str]):
        """XCLIENT, and the EHLO it needs after it; the keywords that hold from now on.
        Never in one write: XCLIENT takes the backend back to its greeting, and Postfix
        (smtpd_forbid_unauth_pipelining, on by default since 3.9) cuts off a client that
        talks before a greeting."""
        mode = self.config.forward_client
        if mode == "off":
            return extensions
        if mode == "xclient" or (mode == "auto" and "xclient" in extensions):
            xclient = self._forwarding(extensions, "xclient")
            # XCLIENT starts a new session: greet again, with the client's own HELO name,
            # since the backend takes this EHLO as the client's (as nginx's proxy does).
            name = _helo_token(self.identity.helo) or self.config.helo_name
            ehlo = b"EHLO " + name.encode("ascii")
            timeout = self.config.command_timeout
            response = await link.command(xclient, timeout)
            if response.code == 220:
                again = await link.command(ehlo, timeout)
                if again.code != 250:
                    raise BackendError(f"backend EHLO after XCLIENT: {again.code} {again.text}")
                self._xclient_done = True
                return extensions_of(again)
            detail = f"backend refused XCLIENT: {response.code} {response.text}"
            if mode == "xclient" or "xforward" not in extensions:
                raise BackendError(
                    f"{detail} (allow this gateway in smtpd_authorized_xclient_hosts)"
                )
            log.warning("%s; falling back to XFORWARD", detail)
        # XFORWARD (mode "xforward", or "auto" without a usable XCLIENT) goes before each MAIL.
        return extensions

    def _uses_xforward(self) -> bool:
        """XFORWARD before each MAIL: configured, or "auto" without XCLIENT. After an
        XCLIENT, Postfix's EHLO offers XFORWARD (allowed for the gateway's address) but
        no longer XCLIENT (the client's address is not allowed): XCLIENT said it all."""
        mode = self.config.forward_client
        if mode == "xforward":
            return True
        return mode == "auto" and not self._xclient_done and "xforward" in self._extensions

    def _forwarding(self, extensions: dict[str, str], extension: str) -> bytes:
        """The XCLIENT or XFORWARD command: NAME/ADDR/PORT/PROTO/HELO(/REVERSE_NAME) as
        the backend advertises them; the same for every transaction of the session."""
        made = self._forwarded.get(extension)
        if made is not None:
            return made
        who = self.identity
        offered = set(extensions.get(extension, "").upper().split())
        unavailable = "[TEMPUNAVAIL]" if who.dns_tempfail else "[UNAVAILABLE]"
        values = {
            "NAME": who.name or unavailable,
            "REVERSE_NAME": who.reverse_name or unavailable,
            "ADDR": f"IPV6:{who.address}" if ":" in who.address else who.address,
            "PORT": str(who.port) if who.port else None,
            "PROTO": "ESMTP" if who.esmtp else "SMTP",
            "HELO": who.helo or "[UNAVAILABLE]",
        }
        words = [extension.upper()]
        for name, attribute in values.items():
            if attribute is None or (offered and name not in offered):
                continue
            words.append(f"{name}={attribute if attribute.startswith('[') else xtext(attribute)}")
        made = self._forwarded[extension] = " ".join(words).encode("ascii")
        return made

    async def _connection(self, pooled: bool = True) -> ReplyReader:
        """The connection for the next command: this session's, one from the pool (unless
        not `pooled`), or a new one. A DATA left waiting for content (pipelined, never
        used) cannot be taken back: that connection is dropped."""
        if self._awaiting_content:
            self.abort()
        self._data_reply = None
        link = self._link
        if link is None or not link.usable:
            if self.authenticated:
                raise BackendError("backend: the authenticated connection was lost")
            self.in_transaction = False
            link = await self._from_pool() if pooled else None
            reused = link is not None
            if link is None:
                link = await self._guard(self._open(), "connect")
            self._link = link
            if self.counted is not None:
                self.counted(reused)
        return link

    async def _from_pool(self) -> ReplyReader | None:
        """A kept connection, proven first by RSET alone (it also ends whatever the last
        client left open), answered within connect_timeout: a backend gone without a word
        (a reboot, a lost route) shows it there. Alone, because in a pipelined group its
        reply would wait for the backend's checks of the whole group. None: open a new
        connection (nothing was sent on the kept one but RSET, so nothing is sent twice)."""
        if self.pool is None:
            return None
        taken = self.pool.take()
        if taken is None:
            return None
        link, extensions = taken
        try:
            reply = await link.command(b"RSET", self.config.connect_timeout)
        except (OSError, ValueError):  # gone, silent (TimeoutError), or no SMTP reply
            return None
        except BaseException:  # the client left meanwhile: the RSET's answer is owed
            link.fail(BackendGone("given up while proving"))
            raise
        if reply.code != 250:  # a 421 from the backend's idle timer, say
            link.fail(BackendGone(f"kept connection answered RSET with {reply.code}"))
            return None
        self._extensions = extensions
        return link

    async def _guard(self, step, what: str):
        """Run one backend step; any failure to get a reply becomes a BackendError."""
        try:
            return await step
        except BackendError:
            self.abort()
            raise
        except (OSError, TimeoutError, ValueError) as exc:  # ssl errors are OSErrors
            self.abort()
            raise BackendError(f"backend {what}: {type(exc).__name__}: {exc}") from None

    async def _replies(self, link: ReplyReader, count: int, what: str) -> list[BackendReply]:
        return [await self._reply(link, what) for _ in range(count)]

    async def _reply(self, link: ReplyReader, what: str) -> BackendReply:
        return await self._guard(link.reply(self.config.command_timeout), what)

    async def _command(self, what: str, command: bytes) -> BackendReply:
        link = await self._connection()
        link.send(command)
        return self._mirrored(await self._reply(link, what), what)

    def _mirrored(self, response: BackendReply, what: str) -> BackendReply:
        """The backend's reply, fit to give the client; else a BackendError (451 4.4.1)."""
        if response.code == 421:  # the backend is closing: not the client's business
            self.abort()
            raise BackendError(f"backend {what}: 421 {response.text}")
        if not valid_final_code(response.code):
            self.abort()
            raise BackendError(f"backend {what}: no valid reply: {response.code} {response.text!r}")
        return response

    # -- AUTH ---------------------------------------------------------------------------
    async def authenticate(self, mechanism: str, initial: bytes | None) -> BackendReply:
        """AUTH at the backend, on its own connection for this client (connect, EHLO,
        XCLIENT, EHLO first): a 334 challenge, or the final reply. A connection AUTH was
        tried on never goes back to the pool."""
        self._auth_tried = True  # this connection is this client's from now on
        link = await self._connection(pooled=False)
        if self.in_transaction:  # the client's RSET or EHLO ended one the backend still has
            await self.reset()
            link = await self._connection(pooled=False)
        command = b"AUTH " + mechanism.encode("ascii")
        if initial is not None:
            command += b" " + initial
        link.send(command)
        return self._auth_step(await self._reply(link, "AUTH"))

    async def auth_response(self, line: bytes) -> BackendReply:
        """The client's answer to a challenge (base64, or `*` to cancel), passed on."""
        link = self._link
        if link is None or not link.usable:
            raise BackendError("backend AUTH: the connection was lost")
        link.send(line)
        return self._auth_step(await self._reply(link, "AUTH"))

    def _auth_step(self, response: BackendReply) -> BackendReply:
        if response.code == 334:  # a challenge: the exchange goes on
            return response
        reply = self._mirrored(response, "AUTH")
        if reply.accepted:
            self.authenticated = True
        return reply

    # -- transactions -------------------------------------------------------------------
    async def begin(
        self, sender: str, options: Iterable[str], utf8: bool, recipient: str, then_data: bool
    ) -> tuple[BackendReply, BackendReply | None]:
        """Start a transaction with its first recipient: XFORWARD, MAIL FROM, RCPT TO
        (and DATA, when the client sent it right behind), in one write when the backend
        offers PIPELINING. The replies to MAIL and to RCPT (None when MAIL was refused)."""
        link = await self._connection()
        if self.in_transaction:
            await self.reset()
            link = await self._connection()
        extensions = self._extensions
        group: list[bytes] = []
        if self._uses_xforward():
            group.append(self._forwarding(extensions, "xforward"))
        checks = len(group)  # XFORWARD: its reply is checked, not mirrored
        parameters = [b""]
        for option in options:
            keyword = option.split("=", 1)[0].upper()
            if _FORWARDED_MAIL_PARAMETERS.get(keyword, "") in extensions:
                parameters.append(option.encode("ascii"))
        group.append(b"MAIL FROM:" + _path(sender, utf8) + b" ".join(parameters))
        rcpt = b"RCPT TO:" + _path(recipient, utf8)
        if not self._pipelining:
            return await self._begin_in_turn(link, group, checks, rcpt)
        group.append(rcpt)
        if then_data:
            group.append(b"DATA")
        link.send(*group)
        replies = await self._replies(link, len(group), "MAIL")
        mail = self._opened(group[:checks], replies[:checks], replies[checks])
        if not mail.accepted:  # its RCPT got a 503 (and its DATA too): the refusal counts
            return mail, None
        if then_data:
            self._data_reply = replies[-1]
        return mail, self._mirrored(replies[checks + 1], "RCPT")

    async def _begin_in_turn(
        self, link: ReplyReader, group: list[bytes], checks: int, rcpt: bytes
    ) -> tuple[BackendReply, BackendReply | None]:
        """Without PIPELINING: each command after the reply to the one before."""
        replies = []
        for command in group:
            link.send(command)
            replies.append(await self._reply(link, "MAIL"))
        mail = self._opened(group[:checks], replies[:checks], replies[checks])
        if not mail.accepted:
            return mail, None
        link.send(rcpt)
        return mail, self._mirrored(await self._reply(link, "RCPT"), "RCPT")

    def _opened(
        self, commands: list[bytes], replies: list[BackendReply], mail: BackendReply
    ) -> BackendReply:
        """The transaction's start: XFORWARD's reply checked (a refusal is a
        misconfiguration, not the client's business), MAIL's mirrored."""
        for command, reply in zip(commands, replies, strict=True):
            if not reply.accepted:
                self.abort()
                verb = command.split(b" ", 1)[0].decode()
                hint = (
                    " (allow this gateway in smtpd_authorized_xforward_hosts)"
                    if verb == "XFORWARD"
                    else ""
                )
                raise BackendError(f"backend refused {verb}: {reply.code} {reply.text}{hint}")
        mail = self._mirrored(mail, "MAIL")
        self.in_transaction = mail.accepted
        return mail

    async def rcpt(self, recipient: str, utf8: bool, then_data: bool) -> BackendReply:
        """RCPT TO (and DATA, when the client sent it right behind, in the same write).
        Only on the connection the transaction's MAIL went on: on another the backend
        would refuse it (503) for good, or take the message without the recipients
        before; its loss is a 451 here, and the client tries the whole message again."""
        link = self._link
        if link is None or not link.usable or not self.in_transaction:
            self.abort()
            raise BackendError("backend: the connection was lost mid-transaction")
        rcpt = b"RCPT TO:" + _path(recipient, utf8)
        if then_data and self._pipelining:
            link.send(rcpt, b"DATA")
            reply, self._data_reply = await self._replies(link, 2, "RCPT")
        else:
            link.send(rcpt)
            reply = await self._reply(link, "RCPT")
        return self._mirrored(reply, "RCPT")

    # DATA streams: `data_begin` (the backend's 354, or its refusal), `data_part` for
    # each piece of content as the client sends it, `data_end` (its final reply).
    async def data_begin(self) -> BackendReply:
        """DATA: 354 when the content may follow; else the backend's refusal, mirrored.
        Never on a new connection: the transaction's MAIL and RCPT went on the old one
        (a reconnection would get `503 need RCPT`, a permanent refusal for the client)."""
        link = self._link
        if link is None or not link.usable:
            self.abort()
            raise BackendError("backend: the connection was lost before DATA")
        go, self._data_reply = self._data_reply, None
        if go is None:
            link.send(b"DATA")
            go = await self._reply(link, "DATA")
        if go.code == 354:
            self.in_transaction, self._in_content = False, True
            return go
        # A refused DATA leaves the backend's transaction open (Postfix: data_cmd resets
        # nothing): in_transaction stays, so the next MAIL goes after an RSET, not into
        # a "503 nested MAIL command" the client would take for a permanent refusal.
        if 200 <= go.code < 300:  # "ok" to the DATA command itself: nothing was taken
            self.abort()
            raise BackendError(f"backend DATA: {go.code} instead of 354")
        return self._mirrored(go, "DATA")  # its refusal (a 421: a BackendError)

    async def data_part(self, wire: bytes) -> None:
        """Content, dot-stuffed (DotStuffer); waits while the backend reads slower than
        the client sends, so a large message is never held here."""
        link = self._written(wire, "DATA")
        await self._guard(link.drain(), "DATA")

    async def data_end(self, end: bytes = b".\r\n") -> BackendReply:
        """The end-of-data line (DotStuffer.end); the backend's final reply."""
        link = self._written(end, "end of data", replies=1)
        reply = await self._reply(link, "end of data")
        self._in_content = False
        return self._mirrored(reply, "end of data")

    def _written(self, data: bytes, what: str, replies: int = 0) -> ReplyReader:
        """Content (or its end) written on the transaction's connection; its loss is a
        BackendError, like a reply that does not come."""
        link = self._link
        if link is None:
            raise BackendError(f"backend {what}: the connection is gone")
        try:
            link.write(data, replies)
        except (OSError, ValueError) as exc:
            self.abort()
            raise BackendError(f"backend {what}: {type(exc).__name__}: {exc}") from None
        return link

    async def reset(self) -> None:
        if self.connected and self.in_transaction:
            await self._command("RSET", b"RSET")
        self.in_transaction = False

    def release(self) -> None:
        """The client is done: the connection goes back to the pool (with reuse) or gets
        QUIT without waiting for the answer; one in DATA or awaiting replies is dropped."""
        link, self._link = self._link, None
        if link is None or not link.usable:
            return
        if self._in_content or self._awaiting_content or not link.idle:
            # In DATA, or replies still on their way (the client hung up while the gateway
            # waited for them): no QUIT could end it cleanly, no one else may have it.
            link.fail(BackendGone("the client left mid-transaction"))
            return
        # A transaction before DATA (every recipient deferred, say) ends with the QUIT,
        # or with the RSET the next user of a kept connection sends first.
        if self.pool is not None and not self._auth_tried:
            self.pool.give(link, self._extensions)
        else:
            link.quit()

    def abort(self) -> None:
        """Drop the connection at once: an unfinished transaction is abandoned, never delivered."""
        link, self._link = self._link, None
        self.in_transaction = self._in_content = False
        self._data_reply = None
        if link is not None:
            link.fail(BackendGone("dropped by the gateway"))


def _path(address: str, utf8: bool) -> bytes:
    """`<address>` as given (`<>` for the null sender): never re-parsed."""
    bare = "" if address == "<>" else address
    return b"<" + bare.encode("utf-8" if utf8 else "ascii", "surrogateescape") + b">"


async def _ehlo(link: ReplyReader, name: str, timeout: float) -> dict[str, str]:
    reply = await link.command(b"EHLO " + name.encode("ascii"), timeout)
    if reply.code != 250:
        raise BackendError(f"backend EHLO: {reply.code} {reply.text}")
    return extensions_of(reply)


class DotStuffer:
    """Content in pieces, as DATA carries it: every line that starts with a dot gets
    another (RFC 5321 4.5.2), across the pieces' boundaries too, which is why it keeps
    the last two bytes it saw (a CRLF in one piece and a dot in the next are a line
    that starts with a dot). The content is CRLF-only by then (relay/content.py)."""

    __slots__ = ("tail",)

    def __init__(self) -> None:
        self.tail = b"\r\n"  # the content starts a line

    def stuff(self, piece: bytes) -> bytes:
        if not piece:
            return b""
        tail = self.tail
        joined = tail + piece
        self.tail = joined[-2:]
        return joined.replace(b"\r\n.", b"\r\n..")[len(tail) :]

    def end(self) -> bytes:
        """The end-of-data line (after a CRLF if the content did not end with one)."""
        return b".\r\n" if self.tail == b"\r\n" else b"\r\n.\r\n"


async def greeted(config: BackendConfig) -> tuple[ReplyReader, dict[str, str]]:
    """A connection that has been greeted and said EHLO (and done STARTTLS, when
    configured); its EHLO keywords."""
    implicit = config.tls_context if config.tls == "implicit" else None
    link = await open_connection(config.host, config.port, implicit, config.connect_timeout)
    timeout = config.command_timeout
    try:
        greeting = await link.reply(timeout)
        if greeting.code != 220:
            raise BackendError(f"backend greeting: {greeting.code} {greeting.text}")
        extensions = await _ehlo(link, config.helo_name, timeout)
        if config.tls == "starttls":
            assert config.tls_context is not None
            go = await link.command(b"STARTTLS", timeout)
            if go.code != 220:
                raise BackendError(f"backend STARTTLS: {go.code} {go.text}")
            await start_tls(link, config.tls_context, config.host, config.connect_timeout)
            extensions = await _ehlo(link, config.helo_name, timeout)
    except BaseException:
        link.fail(BackendGone("given up while opening"))
        raise
    return link, extensions


async def probe_backend(config: BackendConfig, capabilities: Capabilities) -> str | None:
    """Learn the backend's EHLO keywords (EHLO, STARTTLS if configured, EHLO, QUIT).

    Returns None when it answered, else why not: the gateway still starts, and tells
    clients 451 4.4.1 until the backend is back.
    """
    try:
        link, extensions = await greeted(config)
    except (BackendError, OSError, TimeoutError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    capabilities.learn(extensions)
    link.quit()
    return None
