"""What a mail log says, the same whichever log it came from: SMTP sessions, each with
its client, what reverse DNS said, and its transactions with the reply every recipient
got. The readers (postfix.py, onajimi.py) build it; the replay (replay.py) feeds it
through the front door.

Reverse DNS is taken from the log, never looked up: a name the log gives as
forward-confirmed (Postfix's `NAME[IP]`, our `ptr=`) is one; Postfix's `unknown` is no
name that confirms (no PTR, or one that does not resolve back: S25R rule 0).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.policy.facts import RDNS, RDNSStatus, normalize_name
from gateway.policy.net import IPAddress

ACCEPTED = 250  # what `LoggedTransaction.logged` holds for a recipient the log shows accepted
UNSEEN_SENDER = "unseen-sender@invalid"  # an accepted message whose sender the log lost
UNSEEN_LINES = 5  # unreadable lines listed by number (the rest are counted)


@dataclass(frozen=True, slots=True)
class Naming:
    """What the log says about a client's reverse DNS."""

    name: str | None  # the PTR name; None: none known
    confirmed: bool = False  # it resolves back to the client (FCrDNS)
    known: bool = True  # False: the log never said (a postscreen-only client, say)

    def rdns(self) -> RDNS:
        if self.name is None:
            detail = "no PTR name (as logged)" if self.known else "no name in the log"
            return RDNS(RDNSStatus.UNCONFIRMED, (), (), detail)
        name = normalize_name(self.name)
        if self.confirmed:
            return RDNS(RDNSStatus.CONFIRMED, (name,), (name,), "as logged")
        return RDNS(RDNSStatus.UNCONFIRMED, (name,), (), "does not resolve back (as logged)")


UNNAMED = Naming(None, known=False)


@dataclass(slots=True)
class LoggedTransaction:
    """MAIL FROM, its recipients and the reply each got in the log."""

    when: float
    sender: str  # "<>" for the null sender, else the address without brackets
    recipients: list[str] = field(default_factory=list)  # lower-case; "": not in the log
    logged: list[str] = field(default_factory=list)  # per recipient: "250", "450 4.7.1", ...
    size: int = 0  # as the log gives it (0: not given)
    message: str = ""  # the log's name for the accepted message (queue id, transaction id)
    authenticated: bool = False  # SMTP AUTH: not screened, not replayed

    def add(self, recipient: str, reply: str) -> None:
        """A recipient and its reply; a recipient seen again keeps its first reply unless
        it is an acceptance."""
        recipient = recipient.lower()
        if recipient in self.recipients:
            index = self.recipients.index(recipient)
            if reply == str(ACCEPTED):
                self.logged[index] = reply
            return
        self.recipients.append(recipient)
        self.logged.append(reply)


@dataclass(slots=True)
class Conversation:
    """One SMTP session as the log shows it."""

    when: float  # its first line's time (a session runs at one instant in the replay)
    address: IPAddress
    naming: Naming
    line: int  # where it starts in the log
    helo: str = ""
    place: str = ""  # the host that logged it (one of our MX hosts)
    transactions: list[LoggedTransaction] = field(default_factory=list)


@dataclass(slots=True)
class LogRead:
    """A whole log, read: its sessions in order, and what could not be read."""

    path: str
    format: str  # postfix | onajimi
    conversations: list[Conversation] = field(default_factory=list)
    lines: int = 0
    used: int = 0  # lines that went into a session
    ignored: int = 0  # read, but nothing to replay (other programs, other events)
    unreadable: int = 0  # neither a log line of the format nor one of its events, parsed
    unreadable_lines: list[int] = field(default_factory=list)  # the first few, by number
    unnamed: int = 0  # clients whose name the log never gives: taken as no PTR

    def cannot_read(self, number: int) -> None:
        self.unreadable += 1
        if len(self.unreadable_lines) < UNSEEN_LINES:
            self.unreadable_lines.append(number)


class LogReader:
    """What both readers share: every line read, used, ignored or unreadable (`line`
    says which, or raises ValueError, KeyError or TypeError for a line of ours that does
    not parse); then the sessions, each named from what the log says of its client
    elsewhere when it says nothing itself."""

    def __init__(self, path: str, format: str) -> None:
        self.read = LogRead(path, format)
        self.names: dict[str, Naming] = {}  # by address: what the log said of it last

    def lines(self, lines: Iterable[str]) -> LogRead:
        read = self.read
        for number, line in enumerate(lines, start=1):
            read.lines += 1
            try:
                used = self.line(number, line.rstrip("\r\n"))
            except (ValueError, KeyError, TypeError):
                used = None
            if used is None:
                read.cannot_read(number)
            elif used:
                read.used += 1
            else:
                read.ignored += 1
        return self.finish()

    def line(self, number: int, line: str) -> bool | None:
        """True: used; False: ignored; None: unreadable."""
        raise NotImplementedError

    def finish(self) -> LogRead:
        raise NotImplementedError

    def named(self, conversations: Iterable[Conversation]) -> LogRead:
        """The log read: `conversations` in order, the unnamed ones named if the log
        names their client elsewhere (else counted, and taken as having no PTR)."""
        read = self.read
        unnamed: set[IPAddress] = set()
        for conversation in conversations:
            if not conversation.naming.known:
                naming = self.names.get(str(conversation.address))
                if naming is None:
                    unnamed.add(conversation.address)
                else:
                    conversation.naming = naming
            read.conversations.append(conversation)
        read.conversations.sort(key=lambda c: (c.when, c.line))
        read.unnamed = len(unnamed)
        return read
