"""What the gateway knows about one address, for the sender's page.

It walks the same Decider calls as a session and `onajimi explain` (connect stage, then
reverse DNS), then reads the deferral record of the address's client key. It never
writes the store, and what it returns is about that address only: times and a state,
the reason word behind a deferral, never a list entry, a store key, or the client and
PTR fields a record keeps (those may name another address of a lumped key).

    Standing.state   allowed | denied | penalty | familiar | deferred | expired | new
                     | greylist | clean | dns_tempfail
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.decider import Decider
from gateway.policy.net import client_address
from gateway.policy.records import Familiar, Pending, Space, store_key
from gateway.policy.vocabulary import Action, KeyMode, Reason


class State(StrEnum):
    ALLOWED = "allowed"  # trusted network, allow list, DNS allow list: never deferred
    DENIED = "denied"  # deny list (or a DNS block list set to reject): refused
    PENALTY = "penalty"  # the penalty box: 421 at the greeting until `until`
    FAMILIAR = "familiar"  # retried properly once: passes until `until`
    DEFERRED = "deferred"  # pending since `since`; a retry after `until` passes
    EXPIRED = "expired"  # pending, but the retry window is over: the next try starts again
    NEW = "new"  # nothing remembered; a first message would be deferred once
    GREYLIST = "greylist"  # triplet mode: each new sender and recipient pair waits once
    CLEAN = "clean"  # not a suspect, and only suspects are deferred: passes at once
    DNS_TEMPFAIL = "dns_tempfail"  # reverse DNS did not answer: deferred until it does


@dataclass(frozen=True, slots=True)
class Standing:
    address: str  # as the gateway writes it (IPv4-mapped IPv6 as IPv4)
    state: State
    reason: str = ""  # the reason word: why deferred, refused or in the penalty box
    since: float | None = None  # deferred / familiar since
    until: float | None = None  # passes after (deferred), familiar or penalised until
    window_end: float | None = None  # deferred: a retry after this starts over
    attempts: int = 0  # deferred: sessions that reached a decision
    messages: int = 0  # deferred: messages remembered, each waiting for its retry


_ALLOWED = {Reason.TRUSTED, Reason.ALLOWLIST, Reason.DNSWL, Reason.EXEMPT}


def parse_address(text: str) -> str | None:
    """The address a sender typed, as the gateway writes it; None when it is not one."""
    try:
        address = client_address(text.strip())
    except ValueError:
        return None
    return str(address)


async def look_up(decider: Decider, address_text: str) -> Standing:
    """The standing of one address now. `address_text` must have passed parse_address.
    Raises StoreError when the store does not answer (the page says so)."""
    address = client_address(address_text)
    shown = str(address)
    now = decider.clock()
    rules = decider.policy.rules
    connect = await decider.at_connect(address)
    verdict = connect.verdict
    if verdict is not None:
        if verdict.action is Action.PENALTY and connect.penalty is not None:
            box = connect.penalty
            return Standing(shown, State.PENALTY, verdict.reason.value, box.since, box.expires)
        if verdict.reason is Reason.DENYLIST:
            return Standing(shown, State.DENIED, verdict.reason.value)
        if verdict.reason in _ALLOWED:
            return Standing(shown, State.ALLOWED, verdict.reason.value)
    assessment = await decider.assess(connect.screening)
    verdict = assessment.verdict
    if verdict is not None and verdict.action is Action.REJECT:
        return Standing(shown, State.DENIED, verdict.reason.value)
    if verdict is not None and verdict.reason in _ALLOWED:
        return Standing(shown, State.ALLOWED, verdict.reason.value)
    record = await decider.store.get(store_key(Space.DEFER, assessment.client_key))
    if isinstance(record, Familiar) and now < record.expires:
        return Standing(shown, State.FAMILIAR, Reason.FAMILIAR.value, record.since, record.expires)
    if verdict is not None:  # passes (clean), or DNS did not answer
        state = State.CLEAN if verdict.action is Action.PASS else State.DNS_TEMPFAIL
        return Standing(shown, state, verdict.reason.value)
    reason = assessment.defer_reason.value if assessment.defer_reason else ""
    if decider.policy.key_mode is KeyMode.TRIPLET:
        return Standing(shown, State.GREYLIST, reason)
    if not isinstance(record, Pending):
        return Standing(shown, State.NEW, reason)
    window_end = record.first_seen + rules.retry_window
    state = State.EXPIRED if now > window_end else State.DEFERRED
    # A retry passes per message (promote_on = "retry"): the oldest one's turn comes first.
    remembered = record.memory()
    oldest = min((m.first for m in remembered), default=record.first_seen)
    return Standing(
        shown,
        state,
        record.reason or reason,
        since=record.first_seen,
        until=oldest + rules.min_retry_delay,
        window_end=window_end,
        attempts=record.attempts,
        messages=len(remembered),
    )
