"""The phases of an SMTP session and the only moves between them, with the session's
invariants: the table every stage module (smtp/core/) works within. Read this first.

Phases (a session moves only along TRANSITIONS; anything else is a bug, not a client
error, since aiosmtpd has already refused commands out of order):

    CONNECTED  accepted; nothing said yet. The connect stage runs: limits, deny list,
               penalty box, and (when a deny entry names PTRs) the reverse DNS.
      -> GREETED   220 said (aiosmtpd says it)
      -> REFUSED   554 said: 503 to every command until QUIT (RFC 5321 3.1)
      -> DROPPED   dropped (a limit, the penalty box: 421): the connection closes
    GREETED    HELO/EHLO expected; STARTTLS comes back here
    HELLO      HELO/EHLO done, no transaction
    MAIL       MAIL accepted: a transaction is open, no recipient accepted yet
    RCPT       at least one recipient accepted (by the policy and by the backend)
    DATA       354 said: the message is arriving
    DROPPED    dropped: we said a final reply and close the connection. 421 for a limit,
               the penalty box, junk commands or a timeout; 521 for a client that
               talked before the greeting (pregreet.action = "drop"). "Drop" means
               this one thing everywhere: Happening.DROP, PregreetAction.DROP
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
    .backend_error          never cleared within a transaction: no further RCPT reaches
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

from enum import StrEnum


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


class SessionError(Exception):
    """A happening the phase does not allow: a bug in the adapter, never the client's."""
