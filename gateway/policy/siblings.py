"""Retries from another host of the same pool: promoted as a retry from the first host.

A big sender retries from whichever host of its pool is free: Exchange Online, Gmail,
SES and their like send the retry of a deferred message from another address, often of
another /24. Keyed by address, each retry meets no record and starts over, for hours
(onajimi simulate: pools the allow list does not name waited 1 to 3 hours at p90).
Non-suspect hosts are lumped by their rDNS domain (keys.py) and never meet this; pool
hosts whose names look dynamic (S25R suspects) are keyed by address, and would.

So a suspect with a forward-confirmed name leaves a trace of each message it was
deferred for, under its rDNS domain: `sibling:<domain>/<message key>` (the message key:
normalized sender, first recipient, declared SIZE). When another address of the same
domain brings the same message at least `min_retry_delay` later (and within
`retry_window`), it is a retry of that message, and is promoted like one.

What it costs: one store round trip when a confirmed suspect is deferred for a message
it has not tried before (a read-modify-write of the trace). What it risks: bots of one
dynamic pool (one ISP's domain) sending the very same message (same sender, recipient
and size) minutes apart would pass as one sender's retry. Spam runs vary their senders
and recipients; a run that does not, from one ISP's pool, gets through the second host
it uses, as a bot that retries properly always has. `policy.sibling_retries = false`
turns it off.
"""

from __future__ import annotations

from gateway.policy.records import Sibling
from gateway.policy.values import value


@value
class Seen:
    """Whether this attempt retries a sibling's message; the trace to store."""

    promote: bool
    record: Sibling
    changed: bool
    first_by: str = ""  # the address that first brought the message


def seen(
    record: Sibling | None, now: float, min_retry_delay: float, window: float, address: str
) -> Seen:
    """One attempt of a message under a domain's trace (None: not seen in the window)."""
    if record is None or now >= record.expires:
        return Seen(False, Sibling(first=now, address=address, expires=now + window), True)
    if record.address != address and now - record.first >= min_retry_delay:
        return Seen(True, record, False, record.address)
    return Seen(False, record, False)
