"""The deferral procedure, as pure functions of (record, now, rules); README "How it
decides" and "What counts as impatient" tell it to operators.

Everything that changes a deferral record lives in this file. A pending record
remembers the messages its key was deferred for, each with the time of its own first
try (policy/messages.py says when an attempt is a retry of one). The transitions, for
the record found under a key at time `now`, with `policy.promote_on = "retry"` (the
default); `since` is how long ago the matched message was first tried:

    record          the attempt                                  result
    -------------   ------------------------------------------   ----------------------------
    none / expired  -                                            new Pending, defer (first)
    Pending         a retry, min_retry_delay <= since <= window  promote: Familiar, pass
    Pending         a retry, since < min_retry_delay             defer; judged (below): the
                                                                 penalty box when counted
                                                                 early retries reach
                                                                 impatient_retries
    Pending         a retry, since > retry_window                defer, the message starts
                                                                 over [expired]
    Pending         a new message, however old the key           defer, remembered; judged
    Familiar        now <  expires                               pass (familiar), unchanged
    Familiar        now >= expires                               as "none"

So a host earns its way in only by retrying what it was deferred for: a bot that comes
back later with new spam is deferred every time (Levine's measurements: a sixth of
soft-failed spam senders come back later with more; S25R's author stops 97-99% of spam
promoting no one automatically). With `promote_on = "any"` (the seed's host-level
rule) any attempt between min_retry_delay and retry_window after the key's first
deferral promotes, and one after the window starts the key over.

A retry from *another address* never reaches this file as a retry: that key has its own
record. Pools are recognised by proof instead (policy/proof.py).

Impatience: what counts as an early retry
-----------------------------------------
The seed calls a host spam-like when it comes back with *the same message* at once,
again and again, ignoring the RFC. What a real MTA does is never impatience: several
sessions in parallel, a session for each message of its backlog, the same message at our
other MX hosts at once, its own retry timer (RFC 5321 asks for 30 minutes; none goes
below a minute or so), sender-verification callbacks.

A message is known by its sender, first recipient and declared SIZE (keys.message_key):
a sender retries a message with the same three, and two messages of one backlog rarely
share all three. Rarely is not never: twenty alerts of one template to one address
share them, and so does every message of a backlog from a sender that declares no SIZE
(OpenSMTPD: about ten messages a session, the next session five seconds later). Two
things tell such copies from retries:

* Several transactions in one session are several messages: no MTA retries a message
  twice in one session. A session that carries one message more than once shows the
  sender holds copies of it, and each extra copy is remembered as `spare`: a later
  session bringing that message again before the delay is one of those copies, not a
  retry, as long as the sender has shown more copies than sessions since. A bot that
  sends one message session after session never shows a copy.
* The first contact's burst is forgiven: round 0, attempts less than `burst_window`
  apart from the first contact on, for at most `first_burst` (a fifth of
  min_retry_delay).

An attempt before the delay is one of (`AttemptKind`):

    new_message    a message not deferred under this key before: part of the sender's
                   backlog, not a retry. Remembered (the most recent MESSAGES_KEPT).
    copy           a message this session has already brought: another copy of it,
                   certainly (adds one `spare`).
    mx_fallback    a remembered message at one of our listening addresses it has not
                   tried yet, within burst_window of its try: the sender's MX fallback.
    patient_retry  a remembered message again `patience` (a tenth of min_retry_delay)
                   or more after its previous try: a retry timer, if a short one.
    look_alike     a remembered message again within round 0, or with a spare copy
                   left (uses it), or in a later transaction of a session: another
                   copy in the sender's backlog.
    early_retry    a remembered message again, sooner than `patience`, after round 0,
                   no spare copy left: counted.
    pace           a session beyond `pace_allowance + pace_rate * age` (a pace no MTA
                   keeps up: a bot rotating senders and recipients): counted, at most
                   once per burst_window. Not judged for keys that gather many hosts
                   (rDNS lumping).

Only `early_retry` and `pace` count towards `impatient_retries`, and only a session's
first transaction can count: a session is one attempt (`attempts` and the pace count
sessions). Its later transactions are judged one by one all the same (each may bring a
new message to remember, a copy, or the retry that promotes), and never counted: an MTA
sends more of its queue down a connection it holds (Postfix's connection cache).

So with the defaults a bot retrying one message every few seconds is boxed at its fifth
retry, one hammering without pause a little after its first minute, one rotating its
messages fast by its pace: all before min_retry_delay could promote them. What it cannot
tell apart: ten immediate retries at first contact look exactly like ten look-alike
messages and count nothing (a bot that stops there never gets in anyway); a bot that
sends its message twice in every session looks like a backlog of copies and is never
counted (it still waits out the delay like any ichigen-san); messages identical in sender,
recipient and size, one a session, sent more often than `patience` after the first
burst, count as retries: no one can tell.

Words: only counted attempts are logged and told `early_retry`; the retries that are
not counted (mx_fallback, patient_retry) keep the key's reason and are told they came
before the delay; the rest (new_message, copy, look_alike) are first contact still.

The null sender's callbacks never get here: their decision waits for DATA (see the SMTP
handler).

Invariants: an early retry never moves `first_seen` (the key's, for the pace, nor the
message's first try); only a promotion creates a Familiar record from a Pending one; a
new message never promotes; the penalty box keeps the pending record (early count
included), so a host that retries properly after the penalty is promoted, and one that
goes on retrying early goes straight back.

A delivery the backend accepted refreshes a Familiar record (`on_delivery`). In triplet
mode a promoted triplet counts towards its client key becoming familiar (`count_pass`).

The tarpit (`policy.suspect_action`, taRgrey's idea): a suspect's deferred RCPT is first
held back for `tarpit.delay` seconds. Bots give up, real MTAs wait. A suspect that waits
it out is promoted at once (`promoted`, with "tarpit") or goes on to the deferral it
had (with "tarpit+defer"); one that hangs up has made an early retry (`abandoned`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from gateway.policy.messages import Envelope, Message, find, new_message, remember
from gateway.policy.records import Familiar, Penalty, Pending, Record, Tally
from gateway.policy.replies import Reply, Wording
from gateway.policy.values import value
from gateway.policy.vocabulary import Action, PromoteOn, Reason, Retry


@dataclass(frozen=True, slots=True)
class DeferralRules:
    """The `[policy]` numbers that drive the procedure (seconds, counts)."""

    min_retry_delay: float = 300
    retry_window: float = 86400
    familiar_ttl: float = 3024000
    impatient_retries: int = 5  # 0: never penalise
    penalty_ttl: float = 3600
    auto_familiar_after: int = 3  # triplet mode; 0: never
    burst_window: float = 5  # seconds within which MX fallback and a retry round count once
    pace_allowance: int = 300  # sessions under a pending key before its pace is judged; 0: never
    pace_rate: float = 1.0  # sessions per second a pending key may keep up beyond that
    promote_on: PromoteOn = PromoteOn.RETRY
    wording: Wording = Wording()

    @property
    def first_burst(self) -> float:
        """How long the first contact's burst (round 0) may last: room for a backlog of
        look-alikes, and four fifths of the delay left to count a hammering bot."""
        return self.min_retry_delay / 5

    @property
    def patience(self) -> float:
        """A message retried this long after its previous try is no hammering."""
        return self.min_retry_delay / 10

    def pending_expiry(self, since: float) -> float:
        # Twice the window after its newest message: a retry arriving after the window
        # is still recognised (and counted as "expired") instead of looking like an ichigen-san.
        return since + 2 * self.retry_window


class AttemptKind(StrEnum):
    """How an attempt under a pending key was judged (logs, explain; see the docstring)."""

    FIRST = "first"  # no record: the first deferral
    NEW_MESSAGE = "new_message"
    COPY = "copy"
    MX_FALLBACK = "mx_fallback"
    PATIENT_RETRY = "patient_retry"
    LOOK_ALIKE = "look_alike"
    EARLY_RETRY = "early_retry"
    PACE = "pace"
    EXPIRED = "expired"  # a retry of a message first tried more than retry_window ago
    # Promotions (a pass), by what earned them:
    RETRY = "retry"  # a retry of a deferred message, after the delay
    RETURN = "return"  # any attempt after the delay (promote_on = "any")
    SAME_NAME = "same_name"  # the retry came from another address of one confirmed name
    SPF_POOL = "spf_pool"  # the retry came from another address its sender's SPF passes
    SPF_DOMAIN = "spf_domain"  # a proven pool's sender domain, from an address SPF passes

    @property
    def counted(self) -> bool:
        """Counted towards impatient_retries (at most once a session)."""
        return self in (AttemptKind.EARLY_RETRY, AttemptKind.PACE)

    @property
    def retry(self) -> bool:
        """A retry before the delay (`onajimi_retries_total{outcome="early"}`), counted
        or not; the other deferred kinds are more of the first contact."""
        return self in (
            AttemptKind.MX_FALLBACK,
            AttemptKind.PATIENT_RETRY,
            AttemptKind.EARLY_RETRY,
            AttemptKind.PACE,
        )


@value
class Attempt:
    """What an attempt carries beyond its key."""

    envelope: Envelope | None = None  # its message; None: unknown, counts as new
    place: str = ""  # which of our listening addresses it reached; "": unknown
    judge_pace: bool = True  # False when the key gathers many hosts (rDNS lumping)
    # A later transaction of a session already judged under this key: the envelopes the
    # session brought before (empty: its first).
    earlier: tuple[Envelope, ...] = ()
    # A further recipient of a transaction already judged (its envelope holds them all):
    # it joins the remembered message, or finds the retry that promotes.
    more: bool = False


UNKNOWN = Attempt()


@value
class Step:
    """The outcome of one attempt under one key."""

    action: Action  # pass | defer | penalty
    reason: Reason
    record: Record | None  # what the key holds afterwards; None: nothing
    changed: bool  # whether the store must write `record` (or delete when None)
    reply: Reply | None  # None when the attempt passes
    retry: Retry | None = None  # for onajimi_retries_total
    attempt: int = 0  # attempts counted under this key, this one included
    wait: float = 0.0  # seconds until a retry can be promoted
    penalty: Penalty | None = None  # to store under the client's address key
    kind: AttemptKind | None = None  # how the attempt was judged (a deferral or a promotion)
    early: int = 0  # counted early retries under this key, this one included
    matched: Message | None = None  # the remembered message it is a retry of, if any
    proof: str = ""  # a retry from another address let in: what proved it (policy/proof.py)


def _current(record: Record | None, now: float) -> Record | None:
    """Expired records count as absent; foreign kinds (a mode switch) too."""
    if record is None or now >= record.expires:
        return None
    if isinstance(record, Pending | Familiar):
        return record
    return None


def _new_pending(
    now: float,
    rules: DeferralRules,
    reason: Reason,
    client: str,
    ptr: str,
    attempt: Attempt,
    retry: Retry | None,
) -> Step:
    env = attempt.envelope
    remembered = (new_message(env, now, attempt.place),) if env is not None else ()
    record = Pending(
        first_seen=now,
        last_seen=now,
        attempts=1,
        early=0,
        reason=reason.value,
        expires=rules.pending_expiry(now),
        client=client,
        ptr=ptr,
        counted_at=now,  # no count yet: pace is judged from the first contact
        remembered=remembered,
    )
    return Step(
        Action.DEFER,
        reason,
        record,
        changed=True,
        reply=rules.wording.defer(reason.value, rules.min_retry_delay),
        retry=retry,
        attempt=1,
        wait=rules.min_retry_delay,
        kind=AttemptKind.FIRST,
    )


def _promote(
    current: Pending, now: float, rules: DeferralRules, kind: AttemptKind, matched=None
) -> Step:
    familiar = Familiar(since=now, last_seen=now, expires=now + rules.familiar_ttl)
    return Step(
        Action.PASS,
        Reason.PROMOTED,
        familiar,
        changed=True,
        reply=None,
        retry=Retry.PROMOTED,
        attempt=current.attempts + 1,
        kind=kind,
        matched=matched,
    )


def step(
    record: Record | None,
    now: float,
    rules: DeferralRules,
    reason: Reason,
    client: str = "",
    ptr: str = "",
    attempt: Attempt = UNKNOWN,
) -> Step:
    """One attempt by a deferrable client under one key.

    `reason` says why this client is deferrable at all (s25r_ruleN, s25r_blacklist,
    ichigen, greylist); it is recorded on a new Pending record and used in replies.
    """
    current = _current(record, now)
    if current is None:
        return _new_pending(now, rules, reason, client, ptr, attempt, retry=None)

    if isinstance(current, Familiar):
        return Step(Action.PASS, Reason.FAMILIAR, current, changed=False, reply=None)

    age = now - current.first_seen
    if rules.promote_on is PromoteOn.ANY:
        if age > rules.retry_window:
            return _new_pending(now, rules, reason, client, ptr, attempt, retry=Retry.EXPIRED)
        if age >= rules.min_retry_delay:
            return _promote(current, now, rules, AttemptKind.RETURN)
    messages = current.memory()
    index = find(messages, attempt.envelope)
    matched = messages[index] if index >= 0 else None
    if rules.promote_on is PromoteOn.RETRY and matched is not None:
        since = now - matched.first
        if rules.min_retry_delay <= since <= rules.retry_window:
            return _promote(current, now, rules, AttemptKind.RETRY, matched)
    return _deferred(current, messages, index, now, age, rules, client, ptr, attempt)


def _judge(
    current: Pending,
    messages: tuple[Message, ...],
    index: int,
    now: float,
    rules: DeferralRules,
    attempt: Attempt,
) -> tuple[AttemptKind, tuple[Message, ...], bool, float]:
    """Which kind of attempt this is (see the module docstring), with the record's memory
    of messages afterwards, whether round 0 is over, and when the message was first
    tried (its delay runs from there)."""
    env, place, window = attempt.envelope, attempt.place, rules.burst_window
    later = bool(attempt.earlier)  # a later transaction: the session's round is its first's
    opening = (
        not later
        and not attempt.more
        and not current.burst_over
        and now - current.last_seen < window
        and now - current.first_seen < rules.first_burst
    )
    burst_over = current.burst_over if later or attempt.more else not opening
    if env is None:
        return AttemptKind.NEW_MESSAGE, messages, burst_over, now
    if index < 0:
        kept = remember(messages, new_message(env, now, place), now, rules.retry_window)
        return AttemptKind.NEW_MESSAGE, kept, burst_over, now
    message = messages[index]
    if attempt.more:  # the same transaction, another recipient: it joins the message (the
        # transaction was judged at its first recipient; this kind is nobody's business)
        joined = message.with_recipients(env)
        return AttemptKind.NEW_MESSAGE, _put(messages, index, joined), burst_over, message.first
    if now - message.first > rules.retry_window:  # too late to count: it starts over
        again = new_message(env, now, place)
        return (
            AttemptKind.EXPIRED,
            (*messages[:index], *messages[index + 1 :], again),
            burst_over,
            now,
        )
    spare = message.spare
    if any(message.matches(e) for e in attempt.earlier):
        kind, tried = AttemptKind.COPY, message.tried_again(now, message.places, spare + 1)
    elif place and place not in message.places.split() and now - message.tried_at < window:
        places = f"{message.places} {place}".strip()
        kind, tried = AttemptKind.MX_FALLBACK, message._replace(places=places)
    else:
        if now - message.tried_at >= rules.patience:
            kind = AttemptKind.PATIENT_RETRY
        elif opening or later:  # a later transaction: more of the queue, one connection
            kind = AttemptKind.LOOK_ALIKE
        elif spare:
            kind, spare = AttemptKind.LOOK_ALIKE, spare - 1
        else:
            kind = AttemptKind.EARLY_RETRY
        tried = message.tried_again(now, place, spare)
    return kind, _put(messages, index, tried.with_recipients(env)), burst_over, message.first


def _put(messages: tuple[Message, ...], index: int, message: Message) -> tuple[Message, ...]:
    return (*messages[:index], message, *messages[index + 1 :])


def _deferred(
    current: Pending,
    messages: tuple[Message, ...],
    index: int,
    now: float,
    age: float,
    rules: DeferralRules,
    client: str,
    ptr: str,
    attempt: Attempt,
) -> Step:
    kind, messages, burst_over, first = _judge(current, messages, index, now, rules, attempt)
    first_of_session = not attempt.earlier and not attempt.more
    attempts = current.attempts + first_of_session  # sessions, not transactions
    counted_at = current.counted_at
    if (
        first_of_session
        and not kind.counted
        and attempt.judge_pace
        and rules.pace_allowance
        and attempts > rules.pace_allowance + rules.pace_rate * age
        and now - counted_at >= rules.burst_window
    ):
        kind = AttemptKind.PACE
    counts = kind.counted
    if counts:
        counted_at = now
    # A record written before early retries were judged per message (counted_at 0)
    # counted every early attempt: that count means nothing now.
    early = (current.early if current.counted_at else 0) + counts
    if rules.promote_on is PromoteOn.ANY:
        first = current.first_seen  # the key's delay, not the message's
    newest = max((m.first for m in messages), default=current.first_seen)
    updated = Pending(
        first_seen=current.first_seen,
        last_seen=now,
        attempts=attempts,
        early=early,
        reason=current.reason,
        expires=max(current.expires, rules.pending_expiry(newest)),
        client=client or current.client,
        ptr=ptr or current.ptr,
        counted_at=counted_at,
        burst_over=burst_over,
        remembered=messages,
    )
    if counts and rules.impatient_retries and early >= rules.impatient_retries:
        penalty = _penalty(updated, now, rules)
        return Step(
            Action.PENALTY,
            Reason.IMPATIENT,
            updated,
            changed=True,
            reply=rules.wording.penalty(rules.penalty_ttl),
            retry=Retry.EARLY,
            attempt=attempts,
            penalty=penalty,
            kind=kind,
            early=early,
        )
    wait = rules.min_retry_delay - (now - first)
    # Only what is counted is an early retry; the rest keeps the key's own reason.
    reason = Reason.EARLY_RETRY if kind.counted else Reason(current.reason)
    retry = Retry.EARLY if kind.retry else Retry.EXPIRED if kind is AttemptKind.EXPIRED else None
    return Step(
        Action.DEFER,
        reason,
        updated,
        changed=True,
        reply=rules.wording.defer(reason.value, wait, kind.value),
        retry=retry,
        attempt=attempts,
        wait=wait,
        kind=kind,
        early=early,
    )


def promoted(now: float, rules: DeferralRules) -> Familiar:
    """A key promoted otherwise than by its own retry: a suspect that waited out the
    tarpit (suspect_action = "tarpit"), or a host whose retry came from its other
    address under one confirmed name (policy/proof.py)."""
    return Familiar(since=now, last_seen=now, expires=now + rules.familiar_ttl)


def abandoned(record: Record | None, now: float, rules: DeferralRules) -> Step | None:
    """A suspect hung up in the tarpit: an early retry, counted towards the penalty box
    like one, at most once per burst_window (parallel sessions of one first contact
    hanging up together are one attempt). None when nothing counts:
    no pending record to count on, or one counted a moment ago."""
    current = _current(record, now)
    if not isinstance(current, Pending):
        return None
    counted_before = current.counted_at != current.first_seen  # the first count is free
    if counted_before and now - current.counted_at < rules.burst_window:
        return None
    early = current.early + 1
    updated = replace(current, last_seen=now, early=early, counted_at=now, burst_over=True)
    penalty = None
    if rules.impatient_retries and early >= rules.impatient_retries:
        penalty = _penalty(updated, now, rules)
    action = Action.PENALTY if penalty is not None else Action.DEFER
    reason = Reason.IMPATIENT if penalty is not None else Reason.EARLY_RETRY
    return Step(
        action,
        reason,
        updated,
        changed=True,
        reply=None,
        retry=Retry.EARLY,
        attempt=current.attempts,
        penalty=penalty,
        kind=AttemptKind.EARLY_RETRY,
        early=early,
    )


def _penalty(pending: Pending, now: float, rules: DeferralRules) -> Penalty:
    """The penalty box for the key whose early retries reached impatient_retries."""
    return Penalty(now, now + rules.penalty_ttl, pending.attempts, pending.client, pending.ptr)


def on_delivery(record: Record | None, now: float, rules: DeferralRules) -> Familiar | None:
    """The backend accepted a delivery: a familiar key stays familiar for another ttl.

    Returns the refreshed record, or None when there is nothing to refresh.
    """
    current = _current(record, now)
    if not isinstance(current, Familiar):
        return None
    return Familiar(since=current.since, last_seen=now, expires=now + rules.familiar_ttl)


def count_pass(record: Record | None, now: float, rules: DeferralRules) -> Record | None:
    """Triplet mode: a triplet of this client key was promoted.

    Returns the client key's new record (a Tally, or Familiar once `auto_familiar_after`
    triplets have passed), or None when nothing changes.
    """
    if not rules.auto_familiar_after:
        return None
    if record is not None and now < record.expires:
        if isinstance(record, Familiar):
            return None
        passed = record.passed + 1 if isinstance(record, Tally) else 1
    else:
        passed = 1
    if passed >= rules.auto_familiar_after:
        return Familiar(since=now, last_seen=now, expires=now + rules.familiar_ttl)
    return Tally(passed=passed, last_seen=now, expires=now + rules.familiar_ttl)
