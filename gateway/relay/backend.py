"""One connection to the backend MTA per client session, driven command by command.

The gateway never answers for the backend: each RCPT and the end of DATA return the
backend's own code and text, and any failure to get one (refused connection, timeout,
dropped connection, a 421) becomes `451 4.4.1` so the client keeps the message and
retries. MAIL and RCPT are sent through `execute_command` with the client's address as
given (aiosmtplib's `mail()`/`rcpt()` re-parse addresses, which turns `<>` into `<<>>`);
DATA streams: `data_begin`, `data_part` for each piece of the message as the client
sends it (CRLF-only by then, dot-stuffed here by DotStuffer), `data_end`.

Forwarding the client's identity: XCLIENT resets the backend session and makes the
backend log, filter and write its Received header as if the real client had connected
(Postfix: `smtpd_authorized_xclient_hosts`); XFORWARD only informs (Postfix:
`smtpd_authorized_xforward_hosts`). A backend that refuses an explicitly configured
XCLIENT/XFORWARD is a misconfiguration that would make every message look local, so it
fails the transaction loudly instead of relaying anonymously.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

import aiosmtplib

from gateway.policy.values import value
from gateway.relay.reply import UNAVAILABLE, BackendReply
from gateway.relay.xtext import xtext

log = logging.getLogger("onajimi.backend")

_FORWARDED_MAIL_PARAMETERS = {"SIZE": "size", "BODY": "8bitmime", "SMTPUTF8": "smtputf8"}


class _Refused(Exception):
    """The backend answered a step with a refusal (which is mirrored, not an error)."""

    def __init__(self, reply: BackendReply) -> None:
        super().__init__(reply.text)
        self.reply = reply


class BackendError(Exception):
    """No usable reply from the backend; the client gets `reply` (a 4xx)."""

    def __init__(self, detail: str, reply: BackendReply = UNAVAILABLE) -> None:
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
    """A backend connection for one client session; several transactions may use it."""

    def __init__(
        self, config: BackendConfig, identity: ClientIdentity, capabilities: Capabilities
    ) -> None:
        self.config = config
        self.identity = identity
        self.capabilities = capabilities
        self._smtp: aiosmtplib.SMTP | None = None
        self.in_transaction = False
        # The backend said 235 on this connection: its authorisation is the connection's,
        # so a lost connection is never silently replaced by an unauthenticated one.
        self.authenticated = False

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    # -- connection ---------------------------------------------------------------------
    async def _open(self) -> aiosmtplib.SMTP:
        smtp = await _greeted(self.config, self.config.command_timeout)
        try:
            await self._forward_identity(smtp)
        except BaseException:
            smtp.close()
            raise
        self.capabilities.learn(smtp.esmtp_extensions)
        return smtp

    async def _forward_identity(self, smtp: aiosmtplib.SMTP) -> None:
        mode = self.config.forward_client
        if mode == "off":
            return
        offers_xclient = smtp.supports_extension("xclient")
        if mode == "xclient" or (mode == "auto" and offers_xclient):
            response = await smtp.execute_command(b"XCLIENT", *self._attributes(smtp, "xclient"))
            if response.code == 220:
                # XCLIENT starts a new session: greet again, with the client's own HELO name,
                # since the backend takes this EHLO as the client's (as nginx's proxy does).
                await smtp.ehlo(hostname=_helo_token(self.identity.helo) or self.config.helo_name)
                return
            detail = f"backend refused XCLIENT: {response.code} {response.message}"
            if mode == "xclient" or not smtp.supports_extension("xforward"):
                raise BackendError(
                    f"{detail} (allow this gateway in smtpd_authorized_xclient_hosts)"
                )
            log.warning("%s; falling back to XFORWARD", detail)
        # XFORWARD (mode "xforward", or "auto" without a usable XCLIENT) goes before each MAIL.

    def _uses_xforward(self, smtp: aiosmtplib.SMTP) -> bool:
        mode = self.config.forward_client
        if mode == "xforward":
            return True
        return (
            mode == "auto"
            and not smtp.supports_extension("xclient")
            and smtp.supports_extension("xforward")
        )

    def _attributes(self, smtp: aiosmtplib.SMTP, extension: str) -> list[bytes]:
        """NAME/ADDR/PORT/PROTO/HELO(/REVERSE_NAME) as the backend advertises them."""
        who = self.identity
        offered = set(smtp.esmtp_extensions.get(extension, "").upper().split())
        unavailable = "[TEMPUNAVAIL]" if who.dns_tempfail else "[UNAVAILABLE]"
        values = {
            "NAME": who.name or unavailable,
            "REVERSE_NAME": who.reverse_name or unavailable,
            "ADDR": f"IPV6:{who.address}" if ":" in who.address else who.address,
            "PORT": str(who.port) if who.port else None,
            "PROTO": "ESMTP" if who.esmtp else "SMTP",
            "HELO": who.helo or "[UNAVAILABLE]",
        }
        attributes = []
        for name, attribute in values.items():
            if attribute is None or (offered and name not in offered):
                continue
            text = attribute if attribute.startswith("[") else xtext(attribute)
            attributes.append(f"{name}={text}".encode("ascii"))
        return attributes

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            if self.authenticated:
                raise BackendError("backend: the authenticated connection was lost")
            self.in_transaction = False
            try:
                self._smtp = await self._guard(self._open(), "connect")
            except _Refused as refused:  # EHLO or STARTTLS refused: no usable connection
                raise BackendError(
                    f"backend connect: {refused.reply.code} {refused.reply.text}"
                ) from None
        return self._smtp

    async def _guard(self, step, what: str):
        """Run one backend step; any failure to get a reply becomes a BackendError.

        A step that raised *with* a reply (aiosmtplib raises for the refusals of DATA)
        comes back as _Refused carrying that reply, unless it is a 421.
        """
        try:
            return await step
        except BackendError:
            self.abort()
            raise
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or not self.connected or not valid_final_code(exc.code):
                # A malformed reply (aiosmtplib gives code -1) may or may not mean the
                # message was taken: the client must keep it and retry, like a timeout.
                self.abort()
                raise BackendError(f"backend {what}: {exc.code} {exc.message!r}") from None
            raise _Refused(BackendReply(exc.code, exc.message)) from None
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError, ValueError) as exc:
            self.abort()
            raise BackendError(f"backend {what}: {type(exc).__name__}: {exc}") from None

    async def _command(self, what: str, *args: bytes) -> BackendReply:
        smtp = await self._connection()
        return self._mirrored(await self._guard(smtp.execute_command(*args), what), what)

    def _mirrored(self, response, what: str) -> BackendReply:
        """The backend's reply, fit to give the client; else a BackendError (451 4.4.1)."""
        if response.code == 421:  # the backend is closing: not the client's business
            self.abort()
            raise BackendError(f"backend {what}: 421 {response.message}")
        if not valid_final_code(response.code):
            self.abort()
            raise BackendError(
                f"backend {what}: no valid reply: {response.code} {response.message!r}"
            )
        return BackendReply(response.code, response.message)

    # -- AUTH ---------------------------------------------------------------------------
    async def authenticate(self, mechanism: str, initial: bytes | None) -> BackendReply:
        """AUTH at the backend, on its own connection for this client (connect, EHLO,
        XCLIENT, EHLO first): a 334 challenge, or the final reply."""
        smtp = await self._connection()
        if self.in_transaction:  # the client's RSET or EHLO ended one the backend still has
            await self.reset()
            smtp = await self._connection()
        command = [b"AUTH", mechanism.encode("ascii")]
        if initial is not None:
            command.append(initial)
        return self._auth_step(await self._guard(smtp.execute_command(*command), "AUTH"))

    async def auth_response(self, line: bytes) -> BackendReply:
        """The client's answer to a challenge (base64, or `*` to cancel), passed on."""
        smtp = self._smtp
        if smtp is None or not smtp.is_connected:
            raise BackendError("backend AUTH: the connection was lost")
        return self._auth_step(await self._guard(smtp.execute_command(line), "AUTH"))

    def _auth_step(self, response) -> BackendReply:
        if response.code == 334:  # a challenge: the exchange goes on
            return BackendReply(334, response.message)
        reply = self._mirrored(response, "AUTH")
        if reply.accepted:
            self.authenticated = True
        return reply

    # -- transactions -------------------------------------------------------------------
    async def begin(self, sender: str, options: Iterable[str], utf8: bool) -> BackendReply:
        """Open (or reuse) the connection and start a transaction: XFORWARD, MAIL FROM."""
        smtp = await self._connection()
        if self.in_transaction:
            await self.reset()
            smtp = await self._connection()
        if self._uses_xforward(smtp):
            reply = await self._command(
                "XFORWARD", b"XFORWARD", *self._attributes(smtp, "xforward")
            )
            if not reply.accepted:
                self.abort()
                raise BackendError(
                    f"backend refused XFORWARD: {reply.code} {reply.text} "
                    "(allow this gateway in smtpd_authorized_xforward_hosts)"
                )
        parameters = []
        for option in options:
            keyword = option.split("=", 1)[0].upper()
            if smtp.supports_extension(_FORWARDED_MAIL_PARAMETERS.get(keyword, "")):
                parameters.append(option.encode("ascii"))
        address = "" if sender == "<>" else sender
        encoded = address.encode("utf-8" if utf8 else "ascii", "surrogateescape")
        reply = await self._command("MAIL", b"MAIL", b"FROM:<" + encoded + b">", *parameters)
        self.in_transaction = reply.accepted
        return reply

    async def rcpt(self, recipient: str, utf8: bool) -> BackendReply:
        encoded = recipient.encode("utf-8" if utf8 else "ascii", "surrogateescape")
        return await self._command("RCPT", b"RCPT", b"TO:<" + encoded + b">")

    # DATA streams: `data_begin` (the backend's 354, or its refusal), `data_part` for
    # each piece of content as the client sends it, `data_end` (its final reply). Not
    # aiosmtplib's `data()`: it wants the whole message, and runs two regular
    # expressions over it (0.65 ms for 100 KB) for what one replace does here.
    async def data_begin(self) -> BackendReply:
        """DATA: 354 when the content may follow; else the backend's refusal, mirrored.
        Never on a new connection: the transaction's MAIL and RCPT went on the old one
        (a reconnection would get `503 need RCPT`, a permanent refusal for the client)."""
        if not self.connected:
            self.abort()
            raise BackendError("backend: the connection was lost before DATA")
        smtp = await self._connection()
        self.in_transaction = False
        go = await self._guard(smtp.execute_command(b"DATA"), "DATA")
        if go.code == 354:
            return BackendReply(354, go.message)
        if 200 <= go.code < 300:  # "ok" to the DATA command itself: nothing was taken
            self.abort()
            raise BackendError(f"backend DATA: {go.code} instead of 354")
        return self._mirrored(go, "DATA")  # its refusal (a 421: a BackendError)

    async def data_part(self, wire: bytes) -> None:
        """Content, dot-stuffed (DotStuffer); waits while the backend reads slower than
        the client sends, so a large message is never held here."""
        await self._guard(_write(self._smtp, wire), "DATA")

    async def data_end(self, end: bytes = b".\r\n") -> BackendReply:
        """The end-of-data line (DotStuffer.end); the backend's final reply."""
        smtp = self._smtp
        timeout = self.config.command_timeout
        response = await self._guard(_finish(smtp, end, timeout), "end of data")
        return self._mirrored(response, "end of data")

    async def reset(self) -> None:
        if self.connected and self.in_transaction:
            await self._command("RSET", b"RSET")
        self.in_transaction = False

    async def quit(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await asyncio.wait_for(smtp.quit(), timeout=5)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()

    def abort(self) -> None:
        """Drop the connection at once: an unfinished transaction is abandoned, never delivered."""
        smtp, self._smtp = self._smtp, None
        self.in_transaction = False
        if smtp is not None:
            smtp.close()


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


def _protocol(smtp: aiosmtplib.SMTP | None):
    """The connection's protocol, for writing past aiosmtplib's command helpers."""
    protocol = smtp.protocol if smtp is not None else None
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("the backend connection is gone")
    return protocol


async def _write(smtp: aiosmtplib.SMTP | None, wire: bytes) -> None:
    """Write, and wait while the backend's socket buffer is full (aiosmtplib's protocol
    carries asyncio's flow control: `_drain_helper` is what StreamWriter.drain awaits)."""
    protocol = _protocol(smtp)
    protocol.write(wire)
    await protocol._drain_helper()


async def _finish(smtp: aiosmtplib.SMTP | None, end: bytes, timeout: float):
    protocol = _protocol(smtp)
    protocol.write(end)
    return await protocol.read_response(timeout=timeout)


async def _greeted(config: BackendConfig, timeout: float) -> aiosmtplib.SMTP:
    """A connection that has said EHLO (and done STARTTLS, when configured)."""
    smtp = aiosmtplib.SMTP(
        hostname=config.host,
        port=config.port,
        local_hostname=config.helo_name,
        timeout=timeout,
        use_tls=config.tls == "implicit",
        start_tls=False,
        tls_context=config.tls_context,
    )
    try:
        await smtp.connect(timeout=config.connect_timeout)
        await smtp.ehlo()
        if config.tls == "starttls":
            await smtp.starttls(tls_context=config.tls_context)
            await smtp.ehlo()
    except BaseException:
        smtp.close()
        raise
    return smtp


async def probe_backend(config: BackendConfig, capabilities: Capabilities) -> str | None:
    """Learn the backend's EHLO keywords (EHLO, STARTTLS if configured, EHLO, QUIT).

    Returns None when it answered, else why not: the gateway still starts, and tells
    clients 451 4.4.1 until the backend is back.
    """
    try:
        smtp = await _greeted(config, config.connect_timeout)
        capabilities.learn(smtp.esmtp_extensions)
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
