"""What the store remembers, per key. Immutable values; every record knows its expiry.

A store treats a record whose `expires` has passed as absent, so the policy and every
backend agree on expiry without a sweep having run.

Key namespaces (see `store_key`):
    defer:<client key>            Pending | Familiar (client mode), Tally | Familiar (triplet mode)
    defer:<client>/<sender>/<rcpt> Pending | Familiar (triplet mode)
    penalty:<address key>         Penalty
    pregreet:<address>            Pregreet
    strikes:<address key>/<kind>  Strikes (kind: auth_failures, autoban_relay, ...)
    sibling:<rdns domain>/<message> Sibling (policy/siblings.py)
"""

from __future__ import annotations

from enum import StrEnum

from gateway.policy.values import value

Tried = tuple[str, float, str, int]
"""A deferred message a Pending record remembers: (message, tried_at, places, spare).

`message` is its keys.message_key; `tried_at` when its latest try began; `places`
which of our MX addresses (keys.place_key) that try reached, space-separated; `spare`
the copies of it the sender has shown and no later session has brought yet (a session
that carries one envelope several times holds a backlog of it: deferral.py). Records
written before `spare` existed hold three-item entries: read as `spare` 0.
"""


def tried(entry) -> Tried:
    """A remembered message as stored (a JSON array), in this version's shape."""
    message, tried_at, places, *rest = entry
    return (message, tried_at, places, int(rest[0]) if rest else 0)


@value
class Pending:
    """A key that was deferred and has not come back properly yet."""

    first_seen: float
    last_seen: float
    attempts: int  # sessions that reached a decision under this key
    early: int  # early retries counted towards the penalty box (see deferral.py)
    reason: str  # the Reason that caused the first deferral (s25r_rule1, ichigen, ...)
    expires: float  # kept beyond retry_window so a late retry is recognised as "expired"
    client: str = ""  # last client address seen under this key (for candidates)
    ptr: str = ""  # last PTR name seen (candidates are grouped by its domain)
    messages: tuple[Tried, ...] = ()  # the most recent deferred messages, oldest first
    counted_at: float = 0.0  # the last counted early retry (first_seen: none yet; 0: old record)
    burst_over: bool = False  # the first contact's burst of attempts has ended


@value
class Familiar:
    """A key that retried properly: passes freely until `familiar_ttl` after `last_seen`."""

    since: float
    last_seen: float
    expires: float


@value
class Penalty:
    """An address key in the penalty box: 421 at the greeting until `expires`."""

    since: float
    expires: float
    attempts: int
    client: str = ""
    ptr: str = ""
    reason: str = "impatient"  # the Reason that put it there: impatient, or a strike kind


@value
class Tally:
    """Triplet mode: how many triplets a client key has passed towards `auto_familiar_after`."""

    passed: int
    last_seen: float
    expires: float


@value
class Pregreet:
    """An address (exact, not its key: one bot must not condemn a /64) that talked before
    the greeting: its next connections skip the wait and meet `pregreet.action` at once,
    until `expires`."""

    since: float
    expires: float


@value
class Strikes:
    """Strikes of one kind against an address key since `first` (policy/strikes.py)."""

    first: float
    count: int
    expires: float  # first + the kind's window


@value
class Sibling:
    """A message a suspect of an rDNS domain was deferred for (policy/siblings.py): the
    same message from another address of the domain, later, is a retry."""

    first: float
    address: str  # the address that first brought it
    expires: float  # first + retry_window


Record = Pending | Familiar | Penalty | Tally | Pregreet | Strikes | Sibling


class Space(StrEnum):
    DEFER = "defer"
    PENALTY = "penalty"
    PREGREET = "pregreet"
    STRIKES = "strikes"
    SIBLING = "sibling"


def store_key(space: Space, key: str) -> str:
    return f"{space.value}:{key}"


def split_store_key(stored: str) -> tuple[Space, str]:
    space, _, key = stored.partition(":")
    return Space(space), key
