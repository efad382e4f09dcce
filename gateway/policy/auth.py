"""Failed SMTP authentications: counted per address key, the penalty box at the limit.

The gateway relays AUTH to the backend, which alone knows the passwords; what it keeps
is how often an address failed. Without a limit, port 25 would be a password-guessing
oracle for the backend's users: a bot could try a dictionary at the speed of the
backend's replies. So, as Stalwart's auto-ban and fail2ban do, `max_failures` failures
within `failure_window` of the first put the address key in the penalty box (421 at the
greeting) for `penalty_ttl`, with reason `auth_failures`.

The count is by address key (a /32, a /64), not by the rDNS-lumped client key: lumping
puts all of an ISP's dynamic customers under one domain, and one guesser among them
must not lock out their neighbours' laptops. A success does not clear the count, so
a guesser cannot interleave a known account to reset its budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.records import AuthFailures, Penalty
from gateway.policy.values import value
from gateway.policy.vocabulary import Reason


@dataclass(frozen=True, slots=True)
class Rules:
    """`[auth]`: the numbers of the failure count."""

    max_failures: int = 5  # 0: never penalise
    failure_window: float = 3600
    penalty_ttl: float = 3600


@value
class Failed:
    """One more failure counted: the record to store, and the penalty when it is one
    too many."""

    record: AuthFailures
    penalty: Penalty | None


def failed(record: AuthFailures | None, now: float, rules: Rules, client: str) -> Failed:
    """Count one failed authentication from `client` (an address, for the penalty box's
    record) on the live record of its address key (None: no failure in the window)."""
    if record is None or now >= record.expires:
        record = AuthFailures(first=now, failures=0, expires=now + rules.failure_window)
    counted = AuthFailures(record.first, record.failures + 1, record.expires)
    penalty = None
    if rules.max_failures and counted.failures >= rules.max_failures:
        penalty = Penalty(
            since=now,
            expires=now + rules.penalty_ttl,
            attempts=counted.failures,
            client=client,
            reason=Reason.AUTH_FAILURES.value,
        )
    return Failed(counted, penalty)
