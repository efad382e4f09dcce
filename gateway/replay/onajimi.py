"""Onajimi's own decision log -> model.LogRead (see observer.py for the lines).

    ts=... decision session=S client=IP ptr=NAME helo=H from=<F> to=<R> action=A reason=W ...
    ts=... relay session=S id=S.1 client=IP ... from=<F> to=<R1>,<R2> rcpts=2 size=N
        result=delivered reply="250 ..."

logfmt or JSON (`log.format`), each line possibly behind a syslog or journal prefix (the
reader starts at `ts=` or `{`). A session's decisions at RCPT (and at DATA for the null
sender) are its recipients; a relay line closes the transaction with its result. What a
recipient got: `defer` 450, `penalty` 421, `reject` 550, `pass` 250 when the relay line
says delivered and names it (or the list was cut short), else what the relay line said.

`ptr=` is the forward-confirmed name, or the first PTR name when none confirms: a name
judged `s25r_rule0` is one that does not resolve back. A decision taken without reverse
DNS (at the greeting; trusted, listed by address; DNS trouble) says nothing about the
name: such a session takes what the client's other sessions say, or none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gateway.logs import read_logfmt
from gateway.policy.net import client_address
from gateway.replay.model import (
    ACCEPTED,
    UNNAMED,
    Conversation,
    LoggedTransaction,
    LogRead,
    LogReader,
    Naming,
)
from gateway.replay.timestamps import rfc3339

_NO_DNS = frozenset({"trusted", "allowlist", "denylist", "dns_tempfail", "dnswl"})
_REPLIES = {"defer": "450 4.7.1", "penalty": "421 4.7.0", "reject": "550 5.7.1"}
_REOPEN = 3600.0  # a session id seen again after this long is another session (ids repeat)


@dataclass(slots=True)
class _Relay:
    id: str  # the transaction's id, "<session>.<n>"
    recipients: list[str]
    cut: bool  # the line lists the first five only
    delivered: bool
    reply: str  # "451 4.4.1" when not delivered


@dataclass(slots=True)
class _Open:
    conversation: Conversation
    last: float
    events: list[tuple[float, str, str, str] | _Relay] = field(default_factory=list)


class OnajimiReader(LogReader):
    def __init__(self, path: str) -> None:
        super().__init__(path, "onajimi")
        self.sessions: dict[tuple[str, str], _Open] = {}  # by (session id, client)
        self.opened: list[_Open] = []

    def line(self, number: int, line: str) -> bool | None:
        """A field missing or of a wrong shape raises: the line is unreadable."""
        fields = _fields(line)
        if fields is None:
            return None
        event = fields.get("event")
        if event not in ("decision", "relay"):
            return False
        when = rfc3339(fields["ts"])
        key = (fields["session"], fields["client"])
        session = self.sessions.get(key)
        if session is None or when - session.last > _REOPEN:
            address = client_address(fields["client"])
            session = _Open(Conversation(when, address, UNNAMED, number), when)
            self.sessions[key] = session
            self.opened.append(session)
        session.last = when
        conversation = session.conversation
        conversation.helo = conversation.helo or fields.get("helo") or ""
        if event == "relay":
            session.events.append(_relay(fields))
            return True
        action, reason = fields["action"], fields["reason"]
        recipient = _unangle(fields.get("to") or "")
        if recipient:  # a decision at RCPT (or DATA): reverse DNS was known, unless...
            if not session.events:
                conversation.when = when
            sender = _unangle(fields.get("from") or "") or "<>"
            session.events.append((when, sender, recipient, _REPLIES.get(action, str(ACCEPTED))))
            if reason not in _NO_DNS:
                ptr = fields.get("ptr") or None
                confirmed = ptr is not None and reason != "s25r_rule0"
                conversation.naming = Naming(ptr, confirmed)
        return True

    def finish(self) -> LogRead:
        for session in self.opened:
            conversation = session.conversation
            conversation.transactions = _transactions(session.events)
            if conversation.naming.known:
                self.names[str(conversation.address)] = conversation.naming
        return self.named(session.conversation for session in self.opened)


def _fields(line: str) -> dict[str, str] | None:
    """The line's fields, with its event as "event"; None when it is not one of ours."""
    start = line.find("{")
    at = line.find("ts=")
    if start >= 0 and (at < 0 or start < at):
        data = json.loads(line[start:])
        if not isinstance(data, dict):
            return None
        return {k: "" if v is None else str(v) for k, v in data.items()}
    if at < 0 or (at > 0 and line[at - 1] != " "):
        return None
    event, fields = read_logfmt(line[at:])
    fields["event"] = event
    return fields


def _relay(fields: dict[str, str]) -> _Relay:
    listed = fields.get("to") or ""
    cut = listed.endswith("...")
    recipients = [_unangle(r) for r in listed.removesuffix("...").split(",") if r]
    delivered = fields["result"] == "delivered"
    reply = fields.get("reply") or ""
    code = reply[:3] if reply[:3].isdigit() else "451"
    reply = str(ACCEPTED) if delivered else code
    return _Relay(fields.get("id") or "", recipients, cut, delivered, reply)


def _unangle(address: str) -> str:
    return address[1:-1] if address.startswith("<") and address.endswith(">") else address


def _transactions(events: list[tuple[float, str, str, str] | _Relay]) -> list[LoggedTransaction]:
    """Decisions with the same sender, in a row, are one transaction; its relay line
    closes it. A recipient passed but not relayed got what the relay said (or, with no
    relay line, nothing that delivered it: 451)."""
    out: list[LoggedTransaction] = []
    current: LoggedTransaction | None = None
    closed = False
    for event in events:
        if isinstance(event, _Relay):
            if current is None or closed:
                continue  # a relay with no decision before it: nothing to replay
            for index, recipient in enumerate(current.recipients):
                if current.logged[index] != str(ACCEPTED):
                    continue
                named = event.cut or recipient in event.recipients
                current.logged[index] = event.reply if named else "550"
            current.message = (event.id or "delivered") if event.delivered else ""
            closed = True
            continue
        when, sender, recipient, reply = event
        if current is None or closed or current.sender != sender:
            current = LoggedTransaction(when, sender)
            out.append(current)
            closed = False
        current.add(recipient, reply)
    for transaction in out:  # passed, never relayed
        transaction.logged = [
            "451" if reply == str(ACCEPTED) and not transaction.message else reply
            for reply in transaction.logged
        ]
    return out
