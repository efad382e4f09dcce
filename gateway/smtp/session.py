"""The rules of one SMTP session: facts in, what to say and do next out. No I/O.

Everything that decides the course of a session lives here; the adapter (server.py)
reads and writes the socket, awaits DNS, the store and the backend, and feeds what they
said back in. Nothing here awaits, reads a clock or touches a socket: time arrives as a
`now` argument, DNS as an `RDNS`, the store's verdict as an `RcptDecision` (or a
`StoreFault`), the backend's answers as `BackendReply` values. What happened worth a
log line or a metric is left in `notes`, which the adapter hands to the observer.

Phases (a session moves only along TRANSITIONS; anything else is a bug, not a client
error, since aiosmtpd has already refused commands out of order):

    CONNECTED  accepted; nothing said yet. The connect stage runs: limits, deny list,
               penalty box, and (when a deny entry names PTRs) the reverse DNS.
      -> GREETED   220 said (aiosmtpd says it)
      -> REFUSED   554 said: 503 to every command until QUIT (RFC 5321 3.1)
      -> DROPPED   421 said (a limit, the penalty box): the connection closes
    GREETED    HELO/EHLO expected; STARTTLS comes back here
    HELLO      HELO/EHLO done, no transaction
    MAIL       MAIL accepted: a transaction is open, no recipient accepted yet
    RCPT       at least one recipient accepted (by the policy and by the backend)
    DATA       354 said: the message is arriving
    DROPPED    421 said mid-session (penalty box, junk commands, timeout)
    CLOSED     QUIT, or the client went
    (DROPPED and CLOSED absorb every happening: what was on its way when the session
    ended, a backend's late answer say, changes nothing; the adapter ignores it too.)

Flags and what they may never do:

    counted                 set once admitted by the connection limits; `ended()` clears
                            it, so the limits release the client exactly once
    transaction             exists from MAIL to the end of DATA or RSET/HELO/STARTTLS;
                            `recipients` only holds addresses the backend accepted
    .decide_at_data         only the null sender's recipients; emptied before any 354
    .data_refusal           once DATA was refused for a policy reason, every later DATA
                            of the transaction gets the same reply
    .backend_failed         never cleared within a transaction: no further RCPT reaches
                            the backend, DATA gets 451 4.4.1
    .mail_sent              MAIL goes to the backend at most once per transaction
    .sender_refused         the backend refused MAIL: each RCPT gets that reply, unrelayed
    .keys                   familiar keys refreshed only when the backend said 250 to DATA
    decided                 one decision per deferral key per transaction: three
                            recipients of one message are one attempt; a pass goes for
                            the session, a deferral is judged again at the next MAIL
    tarpit                  None until a suspect's deferred RCPT meets the tarpit
                            (policy.suspect_action); then held (the adapter waits
                            tarpit.delay), waited, or full (no room: the plain deferral).
                            At most one hold per session; what it ended in goes for every
                            later recipient of the session
    authenticated           set once the backend said 235 to AUTH (never on a plain
                            connection: AUTH needs STARTTLS first); from then on every
                            recipient goes to the backend unscreened, and it decides,
                            relaying included (Postfix's permit_sasl_authenticated)
    auth_failures           refused AUTH exchanges in this session: auth.max_failures of
                            them end it, even with the store (and its count) down

AUTH's exchange itself (334 challenges and the client's answers) passes between the
client and the backend through the adapter without the core: the core decides whether
it may start (`auth`), and learns how it ended (`auth_answered`). What the client sent
is never handed to the core, noted or kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gateway.policy import dnsbl, replies
from gateway.policy.decision import (
    Assessment,
    Policy,
    RcptDecision,
    Screening,
    SessionDecisions,
    Verdict,
    decided_at_data,
)
from gateway.policy.facts import RDNS
from gateway.policy.keys import is_null_sender
from gateway.policy.net import IPAddress, address_text
from gateway.policy.recipients import recipient_syntax
from gateway.policy.replies import BARE_NEWLINE, NUL
from gateway.policy.values import value
from gateway.policy.vocabulary import (
    Action,
    AuthResult,
    Event,
    Limit,
    OnError,
    Reason,
    RelayResult,
    TarpitResult,
)
from gateway.relay.content import REPAIRS, has_bare_newline, screen_content
from gateway.relay.received import protocol_name, received_header
from gateway.relay.reply import UNAVAILABLE, BackendReply
from gateway.smtp.addresses import helo_fault


class Phase(StrEnum):
    CONNECTED = "connected"
    GREETED = "greeted"
    REFUSED = "refused"
    HELLO = "hello"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    DROPPED = "dropped"
    CLOSED = "closed"


class Happening(StrEnum):
    GREET = "greet"  # the connect stage let the client in
    REFUSE = "refuse"  # 554 greeting
    DROP = "drop"  # 421: the session ends after this reply
    HELLO = "hello"  # HELO or EHLO
    TLS = "tls"  # STARTTLS done: a new EHLO is due
    RESET = "reset"  # RSET
    MAIL = "mail"
    RCPT = "rcpt"  # a recipient accepted
    DATA = "data"  # 354
    END = "end"  # the end of data was answered (or the message was too big or too long)
    FAIL = "fail"  # an internal error mid-DATA: back to RCPT, where DATA gets 451 4.4.1
    CLOSE = "close"  # QUIT or the client went


_ANY_STAGE = {Happening.DROP: Phase.DROPPED, Happening.CLOSE: Phase.CLOSED}
_TALKING = {
    **_ANY_STAGE,
    Happening.HELLO: Phase.HELLO,
    Happening.TLS: Phase.GREETED,
}
TRANSITIONS: dict[Phase, dict[Happening, Phase]] = {
    Phase.CONNECTED: {
        **_ANY_STAGE,
        Happening.GREET: Phase.GREETED,
        Happening.REFUSE: Phase.REFUSED,
    },
    Phase.GREETED: {**_TALKING, Happening.RESET: Phase.GREETED},
    Phase.REFUSED: {**_ANY_STAGE},
    Phase.HELLO: {**_TALKING, Happening.RESET: Phase.HELLO, Happening.MAIL: Phase.MAIL},
    Phase.MAIL: {**_TALKING, Happening.RESET: Phase.HELLO, Happening.RCPT: Phase.RCPT},
    Phase.RCPT: {
        **_TALKING,
        Happening.RESET: Phase.HELLO,
        Happening.RCPT: Phase.RCPT,
        Happening.DATA: Phase.DATA,
    },
    Phase.DATA: {**_ANY_STAGE, Happening.END: Phase.HELLO, Happening.FAIL: Phase.RCPT},
    # An ended session absorbs everything: an answer that was on its way when the 421
    # went out (a backend reply after a timeout) changes nothing.
    Phase.DROPPED: {**dict.fromkeys(Happening, Phase.DROPPED), Happening.CLOSE: Phase.CLOSED},
    Phase.CLOSED: dict.fromkeys(Happening, Phase.CLOSED),
}


class TarpitState(StrEnum):
    HELD = "held"  # the adapter is holding the reply
    WAITED = "waited"  # the client waited it out
    FULL = "full"  # no room: the plain deferral


# The reasons that make a client a suspect: the ones policy.suspect_action is about
# (a clean stranger deferred by policy.defer = "all" is no suspect, nor is DNS trouble).
SUSPECT_REASONS = frozenset(
    {*(Reason.s25r_rule(n) for n in range(7)), Reason.S25R_BLACKLIST, Reason.DNSBL}
)


class SessionError(Exception):
    """A happening the phase does not allow: a bug in the adapter, never the client's."""


class StoreFault(StrEnum):
    """Why the store gave no decision for a recipient."""

    BUSY = "busy"  # one key contended through several gateways (StoreBusy)
    DOWN = "down"  # unreachable, timed out (StoreError)


# -- what the adapter is asked to do ----------------------------------------------------
REFUSED_COMMANDS = 20  # after a 554 greeting: this many 503s, then the door closes
# What a client may send in an AUTH exchange: base64 (`=`: an empty initial response,
# RFC 4954), or `*` to cancel, within RFC 4954's line length. Nothing else reaches the
# backend.
_SASL_RESPONSE = re.compile(rb"[A-Za-z0-9+/]*={0,2}|\*")
SASL_LINE_LIMIT = 12288  # octets, RFC 4954 section 4 (the AUTH line as well)


def sasl_syntax(answer: bytes) -> bool:
    """Whether a client's AUTH answer (its CRLF removed) may go to the backend."""
    return len(answer) <= SASL_LINE_LIMIT and _SASL_RESPONSE.fullmatch(answer) is not None


# What the message's framing problems (smtp/data.py's Problem) are told.
_FRAMING_REFUSALS = {"too_long": replies.LINE_TOO_LONG, "too_big": replies.TOO_MUCH_DATA}


class Then(StrEnum):
    GO_ON = "go_on"
    CLOSE = "close"  # close the connection once the reply is written
    REFUSE = "refuse"  # 503 to every command until QUIT


@value
class Say:
    reply: str
    then: Then = Then.GO_ON
    refresh: frozenset[str] = frozenset()  # familiar keys to refresh (a delivery's 250)


@value
class Greet:
    """Go on to the 220 greeting."""


GREET = Greet()


@value
class LookUp:
    """Reverse DNS is needed; `wait`: before the greeting (a deny entry may name it)."""

    wait: bool


@value
class Decide:
    """Ask the policy about `recipient` (decider.at_rcpt); `dry_run`: record nothing."""

    recipient: str
    dry_run: bool


@value
class RelayRcpt:
    """RCPT at the backend, with MAIL first if `mail_first`; the backend opens on demand."""

    recipient: str
    mail_first: bool


@value
class Deliver:
    """The end of data at the backend, with this content."""

    content: bytes


@value
class Tarpit:
    """Hold the reply to this RCPT `seconds` (a timer: the client waits), then
    `tarpit_waited`; when the tarpit has no room, `tarpit_full` at once."""

    seconds: float
    recipient: str


@value
class Promote:
    """Make `key` familiar (it waited out the tarpit), then go on with `then`."""

    key: str
    then: Say | RelayRcpt


@value
class RelayAuth:
    """Relay an AUTH exchange with this mechanism to the backend (opened on demand)."""

    mechanism: str


@value
class Strike:
    """Count a strike of `kind` in the store (decider.struck, policy/strikes.py), then
    `strike_counted`; `say` is the reply it goes with unless that was one too many."""

    kind: Reason
    say: Say


# -- what happened, for the observer ----------------------------------------------------
@value
class Decided:
    verdict: Verdict
    sender: str | None = None
    recipient: str | None = None
    decision: RcptDecision | None = None


@value
class LimitReached:
    limit: Limit


@value
class StoreTrouble:
    event: Event  # STORE_BUSY or STORE_ERROR
    recipient: str
    on_error: OnError


@value
class BackendTrouble:
    detail: str


@value
class Encrypted:
    version: str  # "TLSv1.3"
    cipher: str


@value
class TarpitEnded:
    result: TarpitResult
    seconds: float


@value
class Struck:
    kind: Reason
    count: int  # live strikes of the kind against the address key, this one included


@value
class AuthEnded:
    mechanism: str
    result: AuthResult
    code: int  # the reply's code (the text is the backend's; what was sent is never here)


@value
class Repaired:
    what: str  # among relay.content.REPAIRS


@value
class Relayed:
    result: RelayResult
    reply: str
    transaction: Transaction
    seconds: float | None  # the backend's DATA round trip; None: never asked


Note = (
    Decided
    | LimitReached
    | StoreTrouble
    | BackendTrouble
    | Repaired
    | Relayed
    | Encrypted
    | AuthEnded
    | Struck
    | TarpitEnded
)


@dataclass(frozen=True, slots=True)
class SessionRules:
    """The settings a session goes by (from Settings, rebuilt on reload)."""

    hostname: str = "localhost"  # listen.hostname
    max_recipients: int = 100  # limits.max_recipients
    on_error: OnError = OnError.TEMPFAIL  # store.on_error
    bare_newline: str = "reject"  # relay.bare_newline: reject | normalize
    add_received: bool = True  # relay.add_received
    greet_wait: float = 0.0  # pregreet.greet_wait: 0 = no pregreet test
    pregreet_action: str = "drop"  # pregreet.action: ignore | defer | drop
    auth_limit: int = 5  # auth.max_failures: refused AUTHs that end a session (0: never)
    suspect_action: str = "defer"  # policy.suspect_action: defer | tarpit | tarpit+defer
    tarpit_delay: float = 65.0  # tarpit.delay


@dataclass(slots=True)
class Transaction:
    """MAIL to the end of DATA (or RSET)."""

    id: str  # "<session>.<n>": in the Received header and the logs
    sender: str  # as the client gave it; "<>" for the null sender
    options: list[str]  # MAIL parameters, upper-cased (aiosmtpd checked them)
    utf8: bool = False  # SMTPUTF8 was given
    size: int | None = None  # the SIZE it declared at MAIL, if any
    recipients: list[str] = field(default_factory=list)  # accepted by the backend
    decide_at_data: list[str] = field(default_factory=list)  # null sender: decided at DATA
    refusal_at_data: str | None = None  # the first refusal among those, while deciding
    data_refusal: str | None = None  # what DATA was refused with (said again if repeated)
    backend_failed: bool = False
    mail_sent: bool = False
    sender_refused: BackendReply | None = None
    keys: set[str] = field(default_factory=set)  # familiar keys (refreshed on 250)
    received: int = 0  # bytes of the message as received (0 until DATA)
    repaired: set[str] = field(default_factory=set)  # what normalize mode repaired in it
    content_refusal: str | None = None  # what the content met (bare line end, NUL)


_SENDER_OK = Say(replies.SENDER_OK)
# Verdicts that make a client a friend of the operator's: never struck (policy/strikes.py).
_FRIENDS = frozenset({Reason.TRUSTED, Reason.ALLOWLIST, Reason.DNSWL})
# A 5xx to AUTH that is about the exchange, not the credentials: not a failed guess.
_AUTH_SYNTAX_CODES = frozenset({500, 501, 502, 503, 504})


def declared_size(options: list[str]) -> int | None:
    """The SIZE=n parameter of MAIL (aiosmtpd has checked its syntax and upper-cased it)."""
    for option in options:
        if option.startswith("SIZE="):
            text = option[5:]
            return int(text) if text.isdigit() else None
    return None


class Session:
    """One SMTP session's state and rules; see the module docstring for both."""

    __slots__ = (
        "address",
        "address_text",
        "assessment",
        "auth_failures",
        "authenticated",
        "counted",
        "decided",
        "esmtp",
        "familiar",
        "helo",
        "id",
        "junk",
        "notes",
        "peer_port",
        "phase",
        "place",
        "policy",
        "pregreeter",
        "rules",
        "screening",
        "tarpit",
        "tarpit_held",
        "tls",
        "tls_version",
        "transaction",
        "transactions",
    )

    def __init__(self, policy: Policy, rules: SessionRules, id: str = "") -> None:
        self.id = id  # every log line of the session carries it (the adapter draws it)
        self.policy = policy  # as it was at connect: a reload applies to new sessions
        self.rules = rules
        self.phase = Phase.CONNECTED
        self.notes: list[Note] = []  # for the observer; the adapter drains it
        self.peer_port: int | None = None  # the TCP peer's (the balancer's, behind PROXY)
        self.place = ""  # which of our listening addresses it reached (keys.place_key)
        self.address: IPAddress | None = None  # the client: PROXY source or TCP peer
        self.address_text = ""
        self.counted = False
        self.screening: Screening | None = None
        self.assessment: Assessment | None = None  # None until reverse DNS is known
        self.helo = ""
        self.esmtp = False
        self.tls: str | None = None  # "using TLSv1.3 with cipher ..." once STARTTLS is done
        self.tls_version = ""  # "TLSv1.3/TLS_AES_256_GCM_SHA384" for the relay line
        self.decided = SessionDecisions()
        self.transactions = 0
        self.transaction: Transaction | None = None
        self.junk = 0  # commands without progress since the last MAIL
        self.pregreeter = False  # talked before the greeting (now, or within pregreet.ttl)
        self.familiar = False  # its address key's record is familiar (no pregreet wait)
        self.authenticated: str | None = None  # the SASL mechanism the backend said 235 to
        self.auth_failures = 0
        self.tarpit: TarpitState | None = None
        self.tarpit_held: RcptDecision | None = None  # the decision the hold postponed

    def _move(self, happening: Happening) -> None:
        target = TRANSITIONS[self.phase].get(happening)
        if target is None:
            raise SessionError(f"{happening.value} in phase {self.phase.value}")
        self.phase = target

    def _drop(self, reply: str) -> Say:
        self._move(Happening.DROP)
        return Say(reply, Then.CLOSE)

    # -- the connect stage ----------------------------------------------------------------
    def asks_lists(self, configured: bool) -> bool:
        """Whether the DNS lists ([dnsbl], when `configured`) are asked about this client:
        not for a familiar one, whom no score would defer."""
        return configured and not self.familiar

    def connected_via(self, port: int | None, place: str | None) -> None:
        """Where the connection came from and what it reached: the peer's port and our
        listening address (keys.place_key). A PROXY header tells the client's own; what
        it leaves out keeps what the TCP connection said."""
        if port:
            self.peer_port = port
        if place:
            self.place = place

    def arrive(self, address: IPAddress) -> bool:
        """The client is known (TCP peer or PROXY source). True if it is trusted: trusted
        networks are exempt from the per-client connection limit."""
        self.address = address
        self.address_text = address_text(address)
        return self.policy.trusted.lookup(address) is not None

    def admission(self, limit: Limit | None) -> Say | None:
        """What the connection limits said. None: admitted, the connect facts come next."""
        if limit is not None:
            self.notes.append(LimitReached(limit))
            return self._drop(replies.limit_refusal(self.rules.hostname, limit))
        self.counted = True
        return None

    def connect_facts(
        self,
        screening: Screening,
        verdict: Verdict | None,
        *,
        pregreeted: bool = False,
        familiar: bool = False,
    ) -> Say | Greet | LookUp:
        """The store's answer before the greeting (decider.at_connect): `pregreeted`, it
        talked before a greeting within pregreet.ttl; `familiar`, its address key is."""
        self.screening = screening
        self.familiar = familiar
        if verdict is not None and verdict.action is Action.REJECT:
            return self._refuse(verdict)
        if verdict is not None and verdict.action is Action.PENALTY:
            self.notes.append(Decided(verdict))
            return self._drop(str(verdict.reply))
        if pregreeted and verdict is None:  # remembered: no wait, the action at once
            say = self._pregreeted(remembered=True)
            if say is not None:
                return say
        if verdict is not None:  # trusted or allow-listed by address: no DNS needed
            self.assessment = self.policy.assess(screening, None)
            return self._greet()
        return LookUp(wait=self.policy.deny_has_names)

    def store_down_at_connect(self, now: float) -> Say | Greet | LookUp:
        """No penalty box without the store; the address lists still apply, and the RCPT
        stage meets the outage itself (store.on_error)."""
        assert self.address is not None
        screening = self.policy.screen(self.address)
        return self.connect_facts(screening, self.policy.before_greeting(screening, None, now))

    def greet_before_rdns(self) -> Greet:
        """No deny entry names a PTR: greet now, the lookup overlaps EHLO and MAIL."""
        return self._greet()

    def rdns_known(self, rdns: RDNS, score: dnsbl.Score | None = None) -> Say | Greet | None:
        """Reverse DNS answered (or failed: RDNS says so), with the DNS lists' score when
        they were asked. Before the greeting: greet or refuse; after it (the lookup
        overlapped EHLO and MAIL): None."""
        assert self.screening is not None
        assessment = self.assessment = self.policy.assess(self.screening, rdns, score)
        if self.phase is not Phase.CONNECTED:
            return None
        verdict = assessment.verdict
        if verdict is not None and verdict.reason is Reason.DENYLIST:
            return self._refuse(verdict)
        return self._greet()

    # -- the pregreet test (postscreen's): a teaser line, then a wait ---------------------
    def tease(self) -> float:
        """Seconds to wait between the teaser `220-` line and the final `220` (0: greet at
        once). Clients that need no screening, and remembered pregreeters, are not made
        to wait."""
        screening = self.screening
        if (
            self.rules.greet_wait <= 0
            or self.pregreeter
            or self.familiar
            or screening is None
            or screening.verdict is not None  # trusted or allow-listed by address
            or self._vouched_for()  # a returning host, allow-listed by name or DNSWL
        ):
            return 0.0
        return self.rules.greet_wait

    def _vouched_for(self) -> bool:
        verdict = self.assessment.verdict if self.assessment is not None else None
        return verdict is not None and verdict.reason in (Reason.ALLOWLIST, Reason.DNSWL)

    def greet_wait_over(self, talked: bool) -> Say | None:
        """The wait is over; `talked`: the client sent something before the final 220."""
        if not talked:
            return None
        return self._pregreeted(remembered=False)

    def _pregreeted(self, remembered: bool) -> Say | None:
        self.pregreeter = True
        action = self.rules.pregreet_action
        when = "within pregreet.ttl" if remembered else "now"
        if action == "drop":
            reply = replies.pregreet_refusal(self.rules.hostname)
            verdict = Verdict(Action.REJECT, Reason.PREGREET, detail=f"talked early ({when})")
            self.notes.append(Decided(verdict))
            return self._drop(reply)
        if action == "ignore" and not remembered:
            detail = "talked early; pregreet.action = ignore"
            self.notes.append(Decided(Verdict(Action.PASS, Reason.PREGREET, detail=detail)))
        return None  # defer: each recipient gets 450 (rcpt); ignore: goes on

    def _greet(self) -> Greet:
        self._move(Happening.GREET)
        return GREET

    def _refuse(self, verdict: Verdict) -> Say:
        self.notes.append(Decided(verdict))
        self._move(Happening.REFUSE)
        return Say(str(verdict.reply), Then.REFUSE)

    # -- hello ----------------------------------------------------------------------------
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

    def idle_command(self, limit: int) -> Say | None:
        """NOOP, RSET, HELP, VRFY, EXPN: one more command without progress. The reply that
        ends the session (421) once there are more than `limit` since the last MAIL."""
        self.junk += 1
        if self.junk <= limit:
            return None
        self.notes.append(LimitReached(Limit.JUNK_COMMANDS))
        return self._drop(replies.too_much_junk(self.rules.hostname))

    def timed_out(self) -> Say:
        self.notes.append(LimitReached(Limit.COMMAND_TIMEOUT))
        return self._drop(replies.timed_out(self.rules.hostname))

    def loitered(self) -> Reason | None:
        """After a timeout: the strike it is (the adapter counts it; the session is over)."""
        return Reason.AUTOBAN_LOITER if self._strikable() else None

    # -- the envelope ---------------------------------------------------------------------
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
            self.pregreeter
            and self.rules.pregreet_action == "defer"
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

    # -- the tarpit (taRgrey's: bots give up, real MTAs wait) -----------------------------
    def _tarpitted(self, result: RcptDecision, recipient: str) -> Tarpit | Say | RelayRcpt | None:
        """A suspect's first deferral meets the tarpit; what the hold ended in goes for
        the session's later recipients. None: no tarpit here (decide as usual)."""
        action = self.rules.suspect_action
        assessment = self.assessment
        if (
            action == "defer"
            or result.verdict.action is not Action.DEFER
            or assessment is None
            or assessment.defer_reason not in SUSPECT_REASONS
        ):
            return None
        if self.tarpit is None:
            self.tarpit, self.tarpit_held = TarpitState.HELD, result
            return Tarpit(self.rules.tarpit_delay, recipient)
        if self.tarpit is TarpitState.WAITED and action == "tarpit":
            self._note_waited(result, recipient)  # promoted already, at the hold's end
            return self._to_backend(recipient)
        return None  # full, or tarpit+defer: the deferral as usual

    def tarpit_waited(self, recipient: str) -> Say | Promote:
        """The client waited the hold out: with "tarpit" it has shown itself a real MTA
        (promoted: familiar from now on); with "tarpit+defer" the deferral it had."""
        result = self.tarpit_held
        assert result is not None and self.tarpit is TarpitState.HELD
        self.tarpit, self.tarpit_held = TarpitState.WAITED, None
        self.notes.append(TarpitEnded(TarpitResult.WAITED, self.rules.tarpit_delay))
        if self.rules.suspect_action == "tarpit":
            self._note_waited(result, recipient)
            return Promote(result.key, self._to_backend(recipient))
        return self._judged(result, recipient) or Say(str(result.verdict.reply))

    def tarpit_full(self, recipient: str) -> Say:
        """No room in the tarpit: the deferral the decision had, at once."""
        result = self.tarpit_held
        assert result is not None and self.tarpit is TarpitState.HELD
        self.tarpit, self.tarpit_held = TarpitState.FULL, None
        self.notes.append(TarpitEnded(TarpitResult.FULL, 0.0))
        return self._judged(result, recipient) or Say(str(result.verdict.reply))

    def tarpit_abandoned(self) -> str | None:
        """The client hung up during the hold: the key to count an early retry on."""
        held = self.tarpit_held
        if self.tarpit is not TarpitState.HELD or held is None:
            return None
        self.tarpit, self.tarpit_held = TarpitState.FULL, None
        self.notes.append(TarpitEnded(TarpitResult.ABANDONED, 0.0))
        # The deferral it would have had is its decision (a line, a count), said to no one.
        sender = self.transaction.sender if self.transaction is not None else None
        gave_up = replace(held.verdict, detail="hung up in the tarpit")
        self.notes.append(Decided(gave_up, sender, None, held))
        return held.key or None

    def _note_waited(self, result: RcptDecision, recipient: str) -> None:
        transaction = self.transaction
        assert transaction is not None
        detail = f"waited out the tarpit ({self.rules.tarpit_delay:g}s)"
        verdict = Verdict(Action.PASS, Reason.TARPIT, detail=detail)
        self.notes.append(Decided(verdict, transaction.sender, recipient, result))

    def _strikable(self) -> bool:
        """Whether what this client does wrong counts towards the auto-ban: anyone but
        the operator's friends (trusted, allow-listed, DNSWL-passed), its users
        (authenticated), and the null sender (callbacks verify forged addresses, and are
        refused as unknown through no fault of their own)."""
        if self.authenticated is not None:
            return False
        transaction = self.transaction
        if transaction is not None and is_null_sender(transaction.sender):
            return False
        verdict = self.assessment.verdict if self.assessment is not None else None
        return verdict is None or verdict.reason not in _FRIENDS

    def _to_backend(self, recipient: str) -> Say | RelayRcpt:
        """A recipient the policy let through: to the backend, unless it already failed
        or refused the sender in this transaction."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if transaction.backend_failed:
            return Say(UNAVAILABLE.as_smtp())
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

    def backend_failed(self, reply: BackendReply, detail: str) -> Say:
        """No usable reply from the backend during MAIL or RCPT."""
        assert self.transaction is not None
        self.transaction.backend_failed = True
        self.notes.append(BackendTrouble(detail))
        return Say(reply.as_smtp())

    # -- AUTH -----------------------------------------------------------------------------
    def auth_command(
        self, mechanism: str, offered: tuple[str, ...], junk_limit: int
    ) -> Say | RelayAuth:
        """The AUTH command: it counts as a command without progress first (limits.
        junk_commands), so cancels and refused mechanisms cannot go on for ever; MAIL
        starts the count again. Then `auth`."""
        return self.idle_command(junk_limit) or self.auth(mechanism, offered)

    def auth_initial(self, mechanism: str, initial: str) -> Say | None:
        """AUTH's initial response, before anything reaches the backend: base64, `=` (an
        empty one, RFC 4954) or `*`; anything else ends the exchange here."""
        if initial and not sasl_syntax(initial.encode("utf-8", "replace")):
            self.auth_aborted(mechanism)
            return Say(replies.AUTH_SYNTAX)
        return None

    def auth(self, mechanism: str, offered: tuple[str, ...]) -> Say | RelayAuth:
        """AUTH: refused here, or relayed to the backend. `offered`: the backend's
        mechanisms that may be relayed (empty: no AUTH here: auth.mode is off, the
        backend offers none, or there is no TLS to offer it under)."""
        if not offered:
            return Say(replies.NO_AUTH)
        if self.tls is None:  # never credentials in clear (nor an offer of AUTH)
            return Say(replies.AUTH_NEEDS_TLS)
        if self.authenticated is not None:  # RFC 4954 section 4
            return Say(replies.AUTH_AGAIN)
        if self.phase is Phase.GREETED or not self.esmtp:
            return Say(replies.AUTH_NEEDS_EHLO)
        if self.phase is not Phase.HELLO:
            return Say(replies.AUTH_IN_TRANSACTION)
        if not mechanism:
            return Say(replies.AUTH_USAGE)
        if mechanism not in offered:
            return Say(replies.AUTH_MECHANISM)
        return RelayAuth(mechanism)

    def auth_answered(
        self, mechanism: str, reply: BackendReply, failure: str | None = None
    ) -> Say | Strike:
        """The backend's final reply to an AUTH exchange (`failure`: there was none
        usable), mirrored; a refusal of the credentials is counted first."""
        if failure is not None:
            self.notes.append(BackendTrouble(failure))
            result = AuthResult.BACKEND_ERROR
        elif reply.accepted:
            self.authenticated = mechanism
            result = AuthResult.OK
        elif reply.code >= 500 and reply.code not in _AUTH_SYNTAX_CODES:
            self.auth_failures += 1
            self.notes.append(AuthEnded(mechanism, AuthResult.FAILED, reply.code))
            return Strike(Reason.AUTH_FAILURES, Say(reply.as_smtp()))
        else:
            result = AuthResult.TEMPFAIL if reply.code < 500 else AuthResult.ABORTED
        self.notes.append(AuthEnded(mechanism, result, reply.code))
        return Say(reply.as_smtp())

    def auth_aborted(self, mechanism: str) -> None:
        """The client cancelled, or answered a challenge with what is not base64; the
        adapter has cancelled the exchange at the backend and replies itself."""
        self.notes.append(AuthEnded(mechanism, AuthResult.ABORTED, 501))

    def strike_counted(self, strike: Strike, count: int, verdict: Verdict | None) -> Say:
        """The store counted a strike (`count` of its kind now; 0: the store could not);
        `verdict` is the penalty box when that was one too many."""
        if count:
            self.notes.append(Struck(strike.kind, count))
        if verdict is not None:
            self.notes.append(Decided(verdict))
            return self._drop(str(verdict.reply))
        limit = self.rules.auth_limit
        if strike.kind is Reason.AUTH_FAILURES and limit and self.auth_failures >= limit:
            detail = f"{self.auth_failures} failed authentications in one session"
            self.notes.append(Decided(Verdict(Action.REJECT, Reason.AUTH_FAILURES, detail=detail)))
            return self._drop(replies.too_many_auth_failures(self.rules.hostname))
        return strike.say

    # -- DATA -----------------------------------------------------------------------------
    def data_command(self, arg: str) -> Say | None:
        """DATA's order and syntax, before anything is decided: a HELO in this TLS state,
        an accepted recipient, no argument. None: go on (`data()`)."""
        if self.phase in (Phase.DROPPED, Phase.CLOSED):  # pipelined behind the end
            return Say(replies.CONNECTION_LOST, Then.CLOSE)
        if self.phase is Phase.GREETED:
            return Say(replies.DATA_NEEDS_HELO)
        if self.phase in (Phase.HELLO, Phase.MAIL):
            return Say(replies.DATA_NEEDS_RCPT)
        if arg:
            return Say(replies.DATA_SYNTAX)
        return None

    def data(self) -> Say | Decide | None:
        """DATA: the refusal it gets before its 354, a null-sender recipient to decide
        first, or None: say 354 and read the message."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if self.data_would_pass():
            self._move(Happening.DATA)
            return None
        if transaction.data_refusal is not None:  # DATA again: the same answer
            return Say(transaction.data_refusal)
        if transaction.decide_at_data:  # every recipient's key is recorded
            return Decide(transaction.decide_at_data[0], dry_run=False)
        refusal = transaction.refusal_at_data
        if refusal is not None:
            transaction.data_refusal = refusal
            return Say(refusal)
        return Say(UNAVAILABLE.as_smtp())  # the backend failed in this transaction

    def data_would_pass(self) -> bool:
        """Whether DATA, if it came now, would go to the backend as it is: nothing left to
        decide or refuse at DATA. `data()` goes by it; the adapter may write DATA to the
        backend with the last RCPT when it holds and the client pipelined DATA."""
        transaction = self.transaction
        return (
            transaction is not None
            and not transaction.decide_at_data
            and transaction.refusal_at_data is None
            and transaction.data_refusal is None
            and not transaction.backend_failed
        )

    def data_decided(self, recipient: str, result: RcptDecision | StoreFault) -> Say | None:
        """A postponed decision, taken at DATA; then `data()` again. A store that could
        not decide gets 451 now, and the next DATA asks again."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if isinstance(result, StoreFault):
            if not self._store_passes(result, recipient):
                return Say(replies.STORE_TEMPFAIL)
            transaction.decide_at_data.remove(recipient)
            return None
        self.decided.keep(result)
        transaction.decide_at_data.remove(recipient)
        reply = self._judged(result, recipient)
        if reply is not None and transaction.refusal_at_data is None:
            verdict = result.verdict
            deferred = verdict.action is Action.DEFER  # 451 at DATA, not 450
            transaction.refusal_at_data = str(verdict.at_data().reply) if deferred else reply.reply
        if self.phase is Phase.DROPPED:  # the penalty box: the session ends with this reply
            return Say(transaction.refusal_at_data or "", Then.CLOSE)
        return None

    # The message streams through: `message_begins` (the trace header to send first),
    # `message_part` for each piece as it arrives (screened: what goes on to the
    # backend, or the refusal), `message_complete` at its end. `message` does all three
    # for a message at hand whole.
    def message_begins(self, now: float) -> bytes:
        """The Received header to send ahead of the content (b"" when it is off)."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        transaction.received = 0
        transaction.repaired = set()
        transaction.content_refusal = None
        if not self.rules.add_received:
            return b""
        assessment = self.assessment
        recipients = transaction.recipients
        return received_header(
            helo=self.helo,
            ptr=assessment.ptr if assessment is not None else None,
            address=self.address_text,
            protocol=protocol_name(
                self.esmtp,
                tls=self.tls is not None,
                utf8=transaction.utf8,
                authenticated=self.authenticated is not None,
            ),
            tls=self.tls,
            hostname=self.rules.hostname,
            transaction_id=transaction.id,
            recipient=recipients[0] if len(recipients) == 1 else None,
            when=now,
        )

    def message_part(self, piece: bytes) -> bytes | Say:
        """A piece of the content (dot-stuffing undone; smtp/data.py cuts pieces where
        screening each alone is screening the whole): what goes on, or the refusal the
        message meets (then nothing more goes on; the adapter stops the backend's DATA)."""
        transaction = self.transaction
        assert transaction is not None
        if transaction.content_refusal is not None:
            if transaction.content_refusal == NUL and has_bare_newline(piece):
                transaction.content_refusal = BARE_NEWLINE  # as the whole would have said
            return b""
        screened = screen_content(piece, self.rules.bare_newline)
        if screened.refusal is not None:
            transaction.content_refusal = screened.refusal
            return Say(screened.refusal)
        transaction.repaired.update(screened.repaired)
        return screened.content

    def message_complete(self, size: int, problem: str = "") -> Say | None:
        """The end of data came (`size` bytes as sent), or the framer gave up on the
        message (`problem`, smtp/data.py's: a line too long, too much data): its refusal,
        or None when the backend's end of data is next.

        A message refused after the backend's 354 costs the backend connection (no end
        of data may reach it): an authenticated one cannot be replaced, so the session
        ends after the refusal and the client logs in afresh for its next message."""
        then = Then.CLOSE if self.authenticated else Then.GO_ON
        if problem:
            return Say(_FRAMING_REFUSALS[problem], then)
        transaction = self.transaction
        assert transaction is not None
        transaction.received = size
        refusal = transaction.content_refusal
        if refusal is not None:
            self.notes.append(Relayed(RelayResult.REJECTED, refusal, transaction, None))
            return Say(refusal, then)
        for what in REPAIRS:
            if what in transaction.repaired:
                self.notes.append(Repaired(what))
        return None

    def message(self, content: bytes, now: float) -> Say | Deliver:
        """A whole message (dot-stuffing undone): refused, or what goes on."""
        header = self.message_begins(now)
        part = self.message_part(content)
        refused = self.message_complete(len(content))
        if refused is not None:
            return refused
        assert isinstance(part, bytes)
        return Deliver(header + part)

    def delivered(
        self, reply: BackendReply, seconds: float | None, failure: str | None = None
    ) -> Say:
        """The backend's reply to the end of data (`failure`: there was none usable)."""
        transaction = self.transaction
        assert transaction is not None  # aiosmtpd checks MAIL came first
        if failure is not None:
            self.notes.append(BackendTrouble(failure))
            result = RelayResult.BACKEND_ERROR
        elif reply.accepted:
            result = RelayResult.DELIVERED
        else:
            result = RelayResult.TEMPFAIL if reply.code < 500 else RelayResult.REJECTED
        said = reply.as_smtp()
        self.notes.append(Relayed(result, said, transaction, seconds))
        if result is RelayResult.DELIVERED:
            return Say(said, refresh=frozenset(transaction.keys))
        return Say(said)

    def end_of_data(self) -> None:
        """DATA is over (answered, or the message was too big): the transaction ends."""
        self.transaction = None
        self._move(Happening.END)

    def internal_error(self) -> Say:
        """A bug met mid-command: the transaction cannot be trusted any more."""
        if self.transaction is not None:
            self.transaction.backend_failed = True
        if self.phase is Phase.DATA:  # aiosmtpd leaves the transaction as it was
            self._move(Happening.FAIL)
        return Say(replies.INTERNAL_ERROR)

    # -- the end --------------------------------------------------------------------------
    def quit(self) -> Say:
        self._move(Happening.CLOSE)
        return Say(replies.BYE, Then.CLOSE)

    def refused_command(self, line: bytes) -> Say:
        """A command after the 554 greeting (RFC 5321 3.1): QUIT is answered; anything
        else gets 503, and the REFUSED_COMMANDS-th of them closes the door."""
        if line.strip().upper() == b"QUIT":
            return self.quit()
        self.junk += 1
        return Say(replies.SAY_QUIT, Then.CLOSE if self.junk >= REFUSED_COMMANDS else Then.GO_ON)

    def ended(self) -> bool:
        """The connection is gone. True once, if the limits must release the client."""
        counted, self.counted = self.counted, False
        self.phase = Phase.CLOSED
        return counted
