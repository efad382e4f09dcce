"""The deferral procedure of SPEC section 3, as pure functions of (record, now, rules).

Everything that changes a deferral record lives in this file. The transitions, for the
record found under a key at time `now` (age = now - first_seen):

    record          condition                                   result
    -------------   -----------------------------------------   -------------------------------
    none / expired  -                                           new Pending, defer(reason)
    Pending         age <  min_retry_delay                      defer; the attempt is judged
                                                                (below), and when the counted
                                                                early retries reach
                                                                impatient_retries: penalty box
    Pending         min_retry_delay <= age <= retry_window      promote: Familiar, pass
    Pending         age >  retry_window                         new Pending, defer [expired]
    Familiar        now <  expires                              pass (familiar), unchanged
    Familiar        now >= expires                              as "none"

Impatience: what counts as an early retry
-----------------------------------------
The seed calls a host spam-like when it comes back with *the same message* at once,
again and again. What a real MTA does at first contact is never impatience: several
sessions in parallel, a session for each message of its backlog, the same message at our
other MX hosts at once, sender-verification callbacks. A message is known by its
sender, first recipient and declared SIZE (keys.message_key): a sender retries a message
with the same three, and two messages of one backlog rarely share all three. Rarely is
not never (twenty alerts of one template to one address), so look-alikes are allowed for.

Attempts come in *rounds*: a run of attempts less than `burst_window` apart. The first
contact opens round 0; every counted early retry opens a new one. An attempt before the
delay is one of (`Kind`):

    new_message   a message not deferred under this key before: part of the sender's
                  backlog, not a retry. Remembered (the most recent MESSAGES_KEPT).
    mx_fallback   a remembered message at one of our listening addresses it has not tried
                  yet, within burst_window of its try: the sender's MX fallback.
    look_alike    a remembered message again within round 0 (at most FIRST_BURST after
                  the first contact): another copy in the sender's backlog. The copies
                  are counted, up to COPIES_KEPT.
    retry_round   a remembered message in an open round, tried in it fewer times than
                  it has copies: a sender retrying its whole backlog early counts once.
    early_retry   any other attempt of a remembered message: counted, opens a round.
    pace          a session beyond `pace_allowance + pace_rate * age` (a pace no MTA
                  keeps up: a bot rotating senders and recipients): counted, at most once
                  per burst_window, opens a round. Not judged for keys that gather many
                  hosts (rDNS lumping).

Only `early_retry` and `pace` count towards `impatient_retries`. So a bot that retries
one message at once, again and again, is counted at every attempt once its first burst
is over, and one retrying every few seconds at every attempt; ten immediate retries at
first contact alone look exactly like ten look-alike messages, and count nothing.

The null sender's callbacks never get here: their decision waits for DATA (see the SMTP
handler).

Invariants: an early retry never moves `first_seen`; only a promotion creates a
Familiar record from a Pending one; the penalty box keeps the pending record (early count
included), so a host that retries properly after the penalty is promoted, and one that
goes on retrying early goes straight back.

A delivery the backend accepted refreshes a Familiar record (`on_delivery`). In triplet
mode a promoted triplet counts towards its client key becoming familiar (`count_pass`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from gateway.policy.records import Familiar, Penalty, Pending, Record, Tally, Tried
from gateway.policy.replies import Reply, Wording
from gateway.policy.values import value
from gateway.policy.vocabulary import Action, Reason, Retry

MESSAGES_KEPT = 16  # deferred messages a pending key remembers; older ones count as new
FIRST_BURST = 60.0  # seconds round 0 (the first contact's burst) may last at most
COPIES_KEPT = 20  # look-alike copies of one message a sender's backlog is believed to hold


@dataclass(frozen=True, slots=True)
class Rules:
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
    wording: Wording = Wording()

    def pending_expiry(self, first_seen: float) -> float:
        # Twice the window: a retry arriving after the window is still recognised (and
        # counted as "expired") instead of looking like a stranger.
        return first_seen + 2 * self.retry_window


class Kind(StrEnum):
    """How an attempt under a pending key was judged (logs, explain; see the docstring)."""

    FIRST = "first"  # no record: the first deferral
    NEW_MESSAGE = "new_message"
    MX_FALLBACK = "mx_fallback"
    LOOK_ALIKE = "look_alike"
    RETRY_ROUND = "retry_round"
    EARLY_RETRY = "early_retry"
    PACE = "pace"

    @property
    def counted(self) -> bool:
        return self in (Kind.EARLY_RETRY, Kind.PACE)


@value
class Attempt:
    """What an attempt carries beyond its key."""

    message: str = ""  # keys.message_key of the attempt; "": unknown, counts as new
    place: str = ""  # which of our listening addresses it reached; "": unknown
    judge_pace: bool = True  # False when the key gathers many hosts (rDNS lumping)


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
    kind: Kind | None = None  # how a deferred attempt was judged
    early: int = 0  # counted early retries under this key, this one included


def _current(record: Record | None, now: float) -> Record | None:
    """Expired records count as absent; foreign kinds (a mode switch) too."""
    if record is None or now >= record.expires:
        return None
    if isinstance(record, Pending | Familiar):
        return record
    return None


def _new_pending(
    now: float,
    rules: Rules,
    reason: Reason,
    client: str,
    ptr: str,
    attempt: Attempt,
    retry: Retry | None,
) -> Step:
    tried = ((attempt.message, now, now, attempt.place, 1, 1),) if attempt.message else ()
    record = Pending(
        first_seen=now,
        last_seen=now,
        attempts=1,
        early=0,
        reason=reason.value,
        expires=rules.pending_expiry(now),
        client=client,
        ptr=ptr,
        messages=tried,
        counted_at=now,  # the first contact opens round 0
        round_last=now,
    )
    return Step(
        Action.DEFER,
        reason,
        record,
        changed=True,
        reply=rules.wording.defer(reason.value),
        retry=retry,
        attempt=1,
        wait=rules.min_retry_delay,
        kind=Kind.FIRST,
    )


def step(
    record: Record | None,
    now: float,
    rules: Rules,
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
    if age < rules.min_retry_delay:
        return _before_delay(current, now, age, rules, client, ptr, attempt)

    if age <= rules.retry_window:
        familiar = Familiar(since=now, last_seen=now, expires=now + rules.familiar_ttl)
        return Step(
            Action.PASS,
            Reason.PROMOTED,
            familiar,
            changed=True,
            reply=None,
            retry=Retry.PROMOTED,
            attempt=current.attempts + 1,
        )

    return _new_pending(now, rules, reason, client, ptr, attempt, retry=Retry.EXPIRED)


class _Judged(NamedTuple):
    kind: Kind
    messages: tuple[Tried, ...]  # the record's memory of messages afterwards
    counted_at: float
    round_last: float


def _judge(current: Pending, now: float, rules: Rules, attempt: Attempt) -> _Judged:
    """Which kind of attempt this is (see the module docstring)."""
    message, place, window = attempt.message, attempt.place, rules.burst_window
    messages, counted_at, round_last = current.messages, current.counted_at, current.round_last
    round_open = counted_at > 0 and now - round_last < window
    opening = round_open and counted_at == current.first_seen and now - counted_at < FIRST_BURST
    if round_open:
        round_last = now
    index = next((i for i, tried in enumerate(messages) if tried[0] == message), -1)
    if not message or index < 0:
        if message:
            new: Tried = (message, now, counted_at if round_open else 0.0, place, 1, 1)
            messages = (*messages, new)[-MESSAGES_KEPT:]
        return _Judged(Kind.NEW_MESSAGE, messages, counted_at, round_last)

    _, tried_at, joined, places, copies, tries = messages[index]
    if place and place not in places.split() and now - tried_at < window:
        tried: Tried = (message, tried_at, joined, f"{places} {place}".strip(), copies, tries)
        return _Judged(Kind.MX_FALLBACK, _replaced(messages, index, tried), counted_at, round_last)
    if opening:
        tried = (message, now, counted_at, place, min(copies + 1, COPIES_KEPT), tries + 1)
        return _Judged(Kind.LOOK_ALIKE, _replaced(messages, index, tried), counted_at, round_last)
    if round_open and (joined != counted_at or tries < copies):
        tries = tries + 1 if joined == counted_at else 1
        tried = (message, now, counted_at, place, copies, tries)
        return _Judged(Kind.RETRY_ROUND, _replaced(messages, index, tried), counted_at, round_last)
    tried = (message, now, now, place, copies, 1)  # the retry opens a round of its own
    return _Judged(Kind.EARLY_RETRY, _replaced(messages, index, tried), now, now)


def _before_delay(
    current: Pending, now: float, age: float, rules: Rules, client: str, ptr: str, attempt: Attempt
) -> Step:
    kind, messages, counted_at, round_last = _judge(current, now, rules, attempt)
    attempts = current.attempts + 1
    if (
        not kind.counted
        and attempt.judge_pace
        and rules.pace_allowance
        and attempts > rules.pace_allowance + rules.pace_rate * age
        and now - counted_at >= rules.burst_window
    ):
        kind, counted_at, round_last = Kind.PACE, now, now
    early = current.early + kind.counted
    updated = Pending(
        first_seen=current.first_seen,
        last_seen=now,
        attempts=attempts,
        early=early,
        reason=current.reason,
        expires=current.expires,
        client=client or current.client,
        ptr=ptr or current.ptr,
        messages=messages,
        counted_at=counted_at,
        round_last=round_last,
    )
    if kind.counted and rules.impatient_retries and early >= rules.impatient_retries:
        penalty = Penalty(
            since=now,
            expires=now + rules.penalty_ttl,
            attempts=attempts,
            client=updated.client,
            ptr=updated.ptr,
        )
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
    wait = rules.min_retry_delay - age
    if kind in (Kind.NEW_MESSAGE, Kind.LOOK_ALIKE):  # part of the first contact, not a retry
        reason, retry = Reason(current.reason), None
    else:
        reason, retry = Reason.EARLY_RETRY, Retry.EARLY
    return Step(
        Action.DEFER,
        reason,
        updated,
        changed=True,
        reply=rules.wording.defer(reason.value, wait),
        retry=retry,
        attempt=attempts,
        wait=wait,
        kind=kind,
        early=early,
    )


def _replaced(messages: tuple[Tried, ...], index: int, tried: Tried) -> tuple[Tried, ...]:
    return (*messages[:index], tried, *messages[index + 1 :])


def on_delivery(record: Record | None, now: float, rules: Rules) -> Familiar | None:
    """The backend accepted a delivery: a familiar key stays familiar for another ttl.

    Returns the refreshed record, or None when there is nothing to refresh.
    """
    current = _current(record, now)
    if not isinstance(current, Familiar):
        return None
    return Familiar(since=current.since, last_seen=now, expires=now + rules.familiar_ttl)


def count_pass(record: Record | None, now: float, rules: Rules) -> Record | None:
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
