"""The deferral procedure of SPEC section 3, as pure functions of (record, now, rules).

Everything that changes a deferral record lives in this file. The transitions, for the
record found under a key at time `now` (age = now - first_seen):

    record                      condition                     result
    -------------------------   ---------------------------   ----------------------------------
    none / expired              -                             new Pending, defer(reason)
    Pending                     age <  min_retry_delay        early retry: attempts+1, early+1,
                                                              defer(early_retry) ...
                                  ... early reaches impatient_retries -> penalty box, key cleared
    Pending                     min_retry_delay <= age <= retry_window   promote: Familiar, pass
    Pending                     age >  retry_window           new Pending, defer(reason) [expired]
    Familiar                    now <  expires                pass (familiar), record unchanged
    Familiar                    now >= expires                as "none"

A delivery the backend accepted refreshes a Familiar record (`on_delivery`). In triplet
mode a promoted triplet counts towards its client key becoming familiar (`count_pass`).

Invariants: an early retry never moves `first_seen`; only a promotion creates a
Familiar record from a Pending one; a penalised key is cleared, so a host coming back
after the penalty starts over as a first contact instead of being promoted by the age
of its old record.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.records import Familiar, Penalty, Pending, Record, Tally
from gateway.policy.replies import Reply, Wording
from gateway.policy.values import value
from gateway.policy.vocabulary import Action, Reason, Retry


@dataclass(frozen=True, slots=True)
class Rules:
    """The `[policy]` numbers that drive the procedure (seconds, counts)."""

    min_retry_delay: float = 300
    retry_window: float = 86400
    familiar_ttl: float = 3024000
    impatient_retries: int = 5  # 0: never penalise
    penalty_ttl: float = 3600
    auto_familiar_after: int = 3  # triplet mode; 0: never
    wording: Wording = Wording()

    def pending_expiry(self, first_seen: float) -> float:
        # Twice the window: a retry arriving after the window is still recognised (and
        # counted as "expired") instead of looking like a stranger.
        return first_seen + 2 * self.retry_window


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


def _current(record: Record | None, now: float) -> Record | None:
    """Expired records count as absent; foreign kinds (a mode switch) too."""
    if record is None or now >= record.expires:
        return None
    if isinstance(record, Pending | Familiar):
        return record
    return None


def _new_pending(
    now: float, rules: Rules, reason: Reason, client: str, ptr: str, retry: Retry | None
) -> Step:
    record = Pending(
        first_seen=now,
        last_seen=now,
        attempts=1,
        early=0,
        reason=reason.value,
        expires=rules.pending_expiry(now),
        client=client,
        ptr=ptr,
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
    )


def step(
    record: Record | None,
    now: float,
    rules: Rules,
    reason: Reason,
    client: str = "",
    ptr: str = "",
) -> Step:
    """One attempt by a deferrable client under one key.

    `reason` says why this client is deferrable at all (s25r_ruleN, s25r_blacklist,
    ichigen, greylist); it is recorded on a new Pending record and used in replies.
    """
    current = _current(record, now)
    if current is None:
        return _new_pending(now, rules, reason, client, ptr, retry=None)

    if isinstance(current, Familiar):
        return Step(Action.PASS, Reason.FAMILIAR, current, changed=False, reply=None)

    age = now - current.first_seen
    if age < rules.min_retry_delay:
        attempts = current.attempts + 1
        early = current.early + 1
        if rules.impatient_retries and early >= rules.impatient_retries:
            penalty = Penalty(
                since=now,
                expires=now + rules.penalty_ttl,
                attempts=attempts,
                client=client or current.client,
                ptr=ptr or current.ptr,
            )
            return Step(
                Action.PENALTY,
                Reason.IMPATIENT,
                None,
                changed=True,
                reply=rules.wording.penalty(rules.penalty_ttl),
                retry=Retry.EARLY,
                attempt=attempts,
                penalty=penalty,
            )
        wait = rules.min_retry_delay - age
        updated = Pending(
            first_seen=current.first_seen,
            last_seen=now,
            attempts=attempts,
            early=early,
            reason=current.reason,
            expires=current.expires,
            client=client or current.client,
            ptr=ptr or current.ptr,
        )
        return Step(
            Action.DEFER,
            Reason.EARLY_RETRY,
            updated,
            changed=True,
            reply=rules.wording.defer(Reason.EARLY_RETRY.value, wait),
            retry=Retry.EARLY,
            attempt=attempts,
            wait=wait,
        )

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

    return _new_pending(now, rules, reason, client, ptr, retry=Retry.EXPIRED)


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
