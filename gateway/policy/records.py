"""What the store remembers, per key. Immutable values; every record knows its expiry.

A store treats a record whose `expires` has passed as absent, so the policy and every
backend agree on expiry without a sweep having run.

Key namespaces (see `store_key`):
    defer:<client key>            Pending | Familiar (client mode), Tally | Familiar (triplet mode)
    defer:<client>/<sender>/<rcpt> Pending | Familiar (triplet mode)
    penalty:<address key>         Penalty
    pregreet:<address>            Pregreet
    strikes:<address key>/<reason>  Strikes (reason: auth_failures, autoban_relay, ...)
    trace:<message>               Trace: where and when a message was first deferred
    pool:<sender domain>          Pool: a sender domain proven by SPF (policy/proof.py)
    sibling:<rdns domain>/<message> Sibling: written by versions before traces, read only
"""

from __future__ import annotations

from enum import StrEnum

from gateway.policy.messages import Message
from gateway.policy.values import value


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
    messages: tuple = ()  # an old record's deferred messages (messages.upgraded reads them)
    counted_at: float = 0.0  # the last counted early retry (first_seen: none yet; 0: old record)
    burst_over: bool = False  # the first contact's burst of attempts has ended
    # The most recent deferred messages, oldest first (policy/messages.py). A field of its
    # own, so that a gateway of the version before, sharing the store, reads none of them
    # (every message new to it) rather than entries it cannot read.
    remembered: tuple[Message, ...] = ()

    def memory(self) -> tuple[Message, ...]:
        """The messages it remembers, an old record's included."""
        if self.messages:
            from gateway.policy.messages import upgraded

            return (*upgraded(self.messages, self.first_seen), *self.remembered)
        return self.remembered


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
    reason: str = "impatient"  # the Reason that put it there: impatient, or a strike's reason


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
    """Written by versions that promoted a retry from another host of one rDNS domain;
    nothing reads it now (it expires within retry_window)."""

    first: float
    address: str
    expires: float


@value
class Trace:
    """Where and when a message (messages.Envelope: sender, SIZE, deciding recipient)
    was first deferred, whatever the key: the same message later from another address
    is a pool's retry only with proof (policy/proof.py)."""

    first: float
    address: str
    name: str  # its forward-confirmed PTR name, "" if none
    expires: float  # first + retry_window


@value
class Pool:
    """A sender domain proven by SPF to send from a pool (policy/proof.py): its mail
    passes from any address its SPF passes (through a narrow mechanism), while it does."""

    since: float
    last_seen: float
    expires: float  # last_seen + familiar_ttl


Record = Pending | Familiar | Penalty | Tally | Pregreet | Strikes | Sibling | Trace | Pool


class Space(StrEnum):
    DEFER = "defer"
    PENALTY = "penalty"
    PREGREET = "pregreet"
    STRIKES = "strikes"
    SIBLING = "sibling"
    TRACE = "trace"
    POOL = "pool"


def store_key(space: Space, key: str) -> str:
    return f"{space.value}:{key}"


def split_store_key(stored: str) -> tuple[Space, str]:
    space, _, key = stored.partition(":")
    return Space(space), key
