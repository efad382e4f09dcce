"""A Postfix maillog -> model.LogRead: the SMTP sessions of port 25 and what each got.

The lines that say it (syslog or RFC 3339 stamps, then `host program[pid]: message`):

    postfix/smtpd[PID]: connect from NAME[IP]              a session begins
    postfix/smtpd[PID]: NOQUEUE: reject: RCPT from NAME[IP]: 450 4.7.1 ...; from=<S>
        to=<R> proto=ESMTP helo=<H>                        a recipient refused (QUEUEID:
                                                           instead of NOQUEUE once the
                                                           message has one)
    postfix/smtpd[PID]: QUEUEID: client=NAME[IP]           a message accepted (with
        , sasl_method=..., sasl_username=...               SMTP AUTH: not screened)
    postfix/qmgr[PID]: QUEUEID: from=<S>, size=N, nrcpt=K  its sender and size
    postfix/local[PID]: QUEUEID: to=<R>, orig_to=<O>, ...  its recipients (any delivery
                                                           agent; orig_to is what RCPT said)
    postfix/cleanup[PID]: QUEUEID: milter-reject: ...      refused after all (end of data)
    postfix/smtpd[PID]: warning: hostname N does not resolve to address IP
                                                           the PTR name behind `unknown`
    postfix/postscreen[PID]: NOQUEUE: reject: RCPT from [IP]:PORT: 450 ...; from=<S>,
        to=<R>, proto=ESMTP, helo=<H>                      refused by postscreen's tests

`NAME` is forward-confirmed (Postfix logs `unknown` otherwise). postscreen names no
one: its clients get the name smtpd gave the address elsewhere in the log, or none.
Only `postfix*/smtpd` without a service name is port 25 (`postfix/submission/smtpd` is
not). Everything else of Postfix, and other programs, is read and ignored; a line that
is not a log line, or one of the lines above that does not parse, is unreadable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.policy.net import client_address
from gateway.replay.model import (
    ACCEPTED,
    UNNAMED,
    UNSEEN_SENDER,
    Conversation,
    LoggedTransaction,
    LogRead,
    LogReader,
    Naming,
)
from gateway.replay.timestamps import Timestamps

_LINE = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\dT\S+) (?P<host>\S+) "
    r"(?P<program>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: (?P<message>.*)$"
)
_PROGRAM = re.compile(r"^postfix[^/]*/(?:(?P<service>[^/]+)/)?(?P<daemon>[a-z0-9-]+)$")
_CLIENT = r"(?P<name>[^\s\[\]]+)\[(?P<ip>[^\]]+)\](?::\d+)?"
_CONNECT = re.compile(rf"^connect from {_CLIENT}$")
_RCPT = re.compile(rf"^(?P<queue>NOQUEUE|[0-9A-Za-z]+): reject: RCPT from {_CLIENT}: (?P<rest>.*)$")
_SCREENED = re.compile(r"^NOQUEUE: reject: RCPT from \[(?P<ip>[^\]]+)\]:\d+: (?P<rest>.*)$")
_ENVELOPE = re.compile(
    r"; from=<(?P<sender>[^>]*)>,? to=<(?P<recipient>[^>]*)>,?(?: proto=\S+?,?)?"
    r"(?: helo=<(?P<helo>[^>]*)>)?$"
)
_REPLY = re.compile(r"^(?P<code>[245]\d\d)(?: (?P<status>[245]\.\d{1,3}\.\d{1,3}))?")
_ACCEPTED = re.compile(rf"^(?P<queue>[0-9A-Za-z]+): client={_CLIENT}(?P<rest>.*)$")
_UNVERIFIED = re.compile(
    r"^warning: hostname (?P<name>\S+) does not resolve to address (?P<ip>[^\s:]+)"
)
_QUEUED = re.compile(r"^(?P<queue>[0-9A-Za-z]+): from=<(?P<sender>[^>]*)>, size=(?P<size>\d+),")
_DELIVERY = re.compile(
    r"^(?P<queue>[0-9A-Za-z]+): to=<(?P<to>[^>]*)>,(?: orig_to=<(?P<orig>[^>]*)>,)?"
)
_REFUSED = re.compile(r"^(?P<queue>[0-9A-Za-z]+): (?:milter-)?reject: ")
_STATUS = re.compile(r"(?:^|[\s:])(?P<code>[45]\d\d )?(?P<status>[45])\.\d{1,3}\.\d{1,3}\b")
# A message of smtpd that is one of ours: it must parse, or it is unreadable.
_OURS = re.compile(r"^connect from |: reject: RCPT from |: client=")


@dataclass(slots=True)
class _Message:
    """An accepted message, as the lines about its queue id add up."""

    when: float  # its client= line: the first recipient accepted
    queue: str  # its queue id
    authenticated: bool
    sender: str | None = None
    size: int = 0
    recipients: list[str] = field(default_factory=list)
    refused: str | None = None  # cleanup refused it after all: the reply


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A recipient refused at RCPT."""

    when: float
    queue: str  # NOQUEUE, or the queue id of the message it was refused from
    sender: str
    recipient: str
    reply: str  # "450 4.7.1"


@dataclass(slots=True)
class _Open:
    """A session being read: its conversation and its events, assembled at the end
    (the sender and recipients of an accepted message come later in the log)."""

    conversation: Conversation
    events: list[_Refusal | _Message] = field(default_factory=list)


class PostfixReader(LogReader):
    def __init__(self, path: str, now: float | None = None) -> None:
        super().__init__(path, "postfix")
        self.stamps = Timestamps(now)
        self.sessions: dict[tuple[str, str], _Open] = {}  # by (host, smtpd pid)
        self.messages: dict[tuple[str, str], _Message] = {}  # by (host, queue id)
        self.opened: list[_Open] = []
        self.unverified: dict[tuple[str, str], tuple[str, str]] = {}  # (host, pid): (ip, name)

    def line(self, number: int, line: str) -> bool | None:
        m = _LINE.match(line)
        if m is None:
            return None
        try:
            when = self.stamps.read(m.group("ts"))
        except ValueError:
            return None
        program = _PROGRAM.match(m.group("program"))
        if program is None:
            return False  # another program
        host, message = m.group("host"), m.group("message")
        daemon, service = program.group("daemon"), program.group("service")
        if daemon == "smtpd" and service is None:
            return self._smtpd(number, when, host, m.group("pid") or "", message)
        if daemon == "postscreen":
            return self._postscreen(number, when, host, message)
        if daemon == "qmgr":
            return self._queued(host, message)
        return self._delivered(host, message) or self._refused(host, message)

    # -- smtpd ---------------------------------------------------------------------------
    def _smtpd(self, number: int, when: float, host: str, pid: str, message: str) -> bool | None:
        m = _CONNECT.match(message)
        if m is not None:
            self._open(number, when, host, pid, m.group("name"), m.group("ip"))
            return True
        m = _RCPT.match(message)
        if m is not None:
            refusal = _refusal(when, m.group("queue"), m.group("rest"))
            if refusal is None:
                return None
            session = self._session(number, when, host, pid, m.group("name"), m.group("ip"))
            session.events.append(refusal[0])
            session.conversation.helo = refusal[1] or session.conversation.helo
            return True
        m = _ACCEPTED.match(message)
        if m is not None:
            session = self._session(number, when, host, pid, m.group("name"), m.group("ip"))
            queue = m.group("queue")
            accepted = _Message(when, queue, "sasl_username=" in m.group("rest"))
            self.messages[host, queue] = accepted
            session.events.append(accepted)
            return True
        m = _UNVERIFIED.match(message)
        if m is not None:  # logged before the connect line it explains
            self.unverified[host, pid] = (m.group("ip"), m.group("name"))
            return True
        return None if _OURS.search(message) else False

    def _session(self, number: int, when: float, host: str, pid: str, name: str, ip: str) -> _Open:
        """The session this line belongs to; a new one if the log missed its connect."""
        session = self.sessions.get((host, pid))
        if session is None or session.conversation.address != client_address(ip):
            return self._open(number, when, host, pid, name, ip)
        if not session.events:
            session.conversation.when = when  # the policy decides at RCPT
        return session

    def _open(self, number: int, when: float, host: str, pid: str, name: str, ip: str) -> _Open:
        address = client_address(ip)
        naming = Naming(None) if name == "unknown" else Naming(name, confirmed=True)
        unverified = self.unverified.pop((host, pid), None)
        if naming.name is None and unverified is not None and unverified[0] == ip:
            naming = Naming(unverified[1], confirmed=False)
        self.names[str(address)] = naming
        session = _Open(Conversation(when, address, naming, number, place=host))
        self.sessions[host, pid] = session
        self.opened.append(session)
        return session

    # -- postscreen, qmgr, delivery agents, cleanup --------------------------------------
    def _postscreen(self, number: int, when: float, host: str, message: str) -> bool | None:
        m = _SCREENED.match(message)
        if m is None:
            return None if ": reject: RCPT from " in message else False
        refusal = _refusal(when, "NOQUEUE", m.group("rest"))
        if refusal is None:
            return None
        address = client_address(m.group("ip"))
        conversation = Conversation(when, address, UNNAMED, number, refusal[1], host)
        self.opened.append(_Open(conversation, [refusal[0]]))
        return True

    def _about(self, pattern: re.Pattern[str], host: str, message: str):
        """(the match, the accepted message it is about), or None."""
        m = pattern.match(message)
        accepted = self.messages.get((host, m.group("queue"))) if m else None
        return None if m is None or accepted is None else (m, accepted)

    def _queued(self, host: str, message: str) -> bool:
        about = self._about(_QUEUED, host, message)
        if about is None:
            return False
        m, accepted = about
        accepted.sender = m.group("sender")
        accepted.size = int(m.group("size"))
        return True

    def _delivered(self, host: str, message: str) -> bool:
        about = self._about(_DELIVERY, host, message)
        if about is None:
            return False
        m, accepted = about
        recipient = (m.group("orig") or m.group("to")).lower()
        if recipient not in accepted.recipients:
            accepted.recipients.append(recipient)
        return True

    def _refused(self, host: str, message: str) -> bool:
        about = self._about(_REFUSED, host, message)
        if about is None or ": reject: RCPT from " in message:
            return False
        m, accepted = about
        status = _STATUS.search(message, m.end())
        if status is None:
            accepted.refused = "550"
        else:
            code = status.group("code") or f"{status.group('status')}50"
            accepted.refused = code.strip()
        return True

    # -- the end -------------------------------------------------------------------------
    def finish(self) -> LogRead:
        """Every session's transactions, assembled; postscreen's clients named."""
        for session in self.opened:
            session.conversation.transactions = _transactions(session.events)
        return self.named(session.conversation for session in self.opened)


def _refusal(when: float, queue: str, rest: str) -> tuple[_Refusal, str] | None:
    """`450 4.7.1 ...; from=<S> to=<R> proto=ESMTP helo=<H>` -> the refusal and the HELO
    name; None when it does not read so."""
    envelope = _ENVELOPE.search(rest)
    reply = _REPLY.match(rest)
    if envelope is None or reply is None:
        return None
    status = f" {reply.group('status')}" if reply.group("status") else ""
    sender, recipient = envelope.group("sender") or "<>", envelope.group("recipient")
    refusal = _Refusal(when, queue, sender, recipient, reply.group("code") + status)
    return refusal, envelope.group("helo") or ""


def _transactions(events: list[_Refusal | _Message]) -> list[LoggedTransaction]:
    """A session's events -> its transactions. Refused recipients before an accepted
    message with the same sender are part of it, and so are those refused under its
    queue id; any other refusal after it starts the next transaction. A message whose
    recipients the log does not show has one, "" (see model.py)."""
    out: list[LoggedTransaction] = []
    current: LoggedTransaction | None = None
    for event in events:
        if isinstance(event, _Message):
            sender = event.sender or UNSEEN_SENDER
            if current is None or current.message or current.sender != sender:
                current = LoggedTransaction(event.when, sender)
                out.append(current)
            current.message = event.queue
            current.size = event.size
            current.authenticated = event.authenticated
            reply = event.refused or str(ACCEPTED)
            for recipient in event.recipients or [""]:
                current.add(recipient, reply)
            continue
        joins = current is not None and current.sender == event.sender
        if current is None or not joins or current.message not in ("", event.queue):
            current = LoggedTransaction(event.when, event.sender)
            out.append(current)
        current.add(event.recipient, event.reply)
    return out
