"""Strikes: misbehaviour counted per address key, the penalty box at a limit (auto-ban).

Four kinds, each with its own limit and its own penalty reason:

    auth_failures    the backend refused the credentials of an AUTH it relayed ([auth])
    autoban_relay    a recipient refused by the relay check (554 5.7.1 Relay access denied)
    autoban_probe    a recipient the backend refused as unknown (5.1.1): address harvesting
    autoban_loiter   a session that ended on the command timeout: holding slots open

Without the first, port 25 would be a password-guessing oracle for the backend's users;
without the others, a client could probe relaying and mailboxes, or hold connections,
at no cost (Stalwart bans for the same three, at configurable rates; the seed of this
project wants hosts that keep misbehaving dropped at the router: `export-blocklist`).
`limit` strikes within `window` of the first put the address key in the penalty box
(421 at the greeting) for `penalty_ttl`.

The count is by address key (a /32, a /64), never by the rDNS-lumped client key: lumping
puts a whole provider under one domain (google.com, an ISP's dynamic pool), and one
host's strikes must not lock out its neighbours. Who is never struck is the session
core's call (smtp/session.py `_strikable`): the operator's friends (trusted,
allow-listed, DNSWL-passed), its users (authenticated), and the null sender (callbacks
verify forged addresses, and are refused as unknown through no fault of their own).
Familiar hosts are struck like anyone: address harvesting needs recipients that reach
the backend, which only passed clients do; the limits are set for that (a real server
meets a few unknown recipients an hour, a harvester hundreds). A success never clears
a count, so a guesser cannot interleave a known account to reset its budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.policy.records import Penalty, Strikes
from gateway.policy.values import value
from gateway.policy.vocabulary import Reason

REASONS = (Reason.AUTH_FAILURES, Reason.AUTOBAN_RELAY, Reason.AUTOBAN_PROBE, Reason.AUTOBAN_LOITER)


@dataclass(frozen=True, slots=True)
class StrikeLimit:
    limit: int = 0  # 0: never counted, never penalised
    window: float = 3600
    penalty_ttl: float = 3600


@dataclass(frozen=True, slots=True)
class StrikeRules:
    """`[auth]` and `[autoban]`: one StrikeLimit per kind of strike."""

    auth: StrikeLimit = StrikeLimit(5)
    relay: StrikeLimit = StrikeLimit()
    probe: StrikeLimit = StrikeLimit()
    loiter: StrikeLimit = StrikeLimit()

    def of(self, reason: Reason) -> StrikeLimit:
        return _LIMITS[reason](self)


_LIMITS = {
    Reason.AUTH_FAILURES: lambda rules: rules.auth,
    Reason.AUTOBAN_RELAY: lambda rules: rules.relay,
    Reason.AUTOBAN_PROBE: lambda rules: rules.probe,
    Reason.AUTOBAN_LOITER: lambda rules: rules.loiter,
}


@value
class Counted:
    """One more strike: the record to store, and the penalty when it is one too many."""

    record: Strikes
    penalty: Penalty | None


def struck(
    record: Strikes | None, now: float, limit: StrikeLimit, reason: Reason, client: str
) -> Counted:
    """Count one strike for `reason` from `client` (an address, for the penalty record) on
    the live record of its address key (None: no strike for that reason in the window)."""
    if record is None or now >= record.expires:
        record = Strikes(first=now, count=0, expires=now + limit.window)
    counted = Strikes(record.first, record.count + 1, record.expires)
    penalty = None
    if limit.limit and counted.count >= limit.limit:
        penalty = Penalty(
            since=now,
            expires=now + limit.penalty_ttl,
            attempts=counted.count,
            client=client,
            reason=reason.value,
        )
    return Counted(counted, penalty)
