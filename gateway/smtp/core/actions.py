"""What the session core asks of its driver, and the words it says.

Each step of the core returns one of these: `Say` a reply (and go on, close, or refuse
every further command), `Greet`, look up reverse DNS first (`LookUp`), ask the Decider
(`Decide`), relay a recipient or an AUTH exchange to the backend (`RelayRcpt`,
`RelayAuth`), hold the reply (`Tarpit`), promote a key (`Promote`), count a strike
(`Strike`), hand a whole message on (`Deliver`). smtp/steps.py carries the RCPT ones
out in their one order.
"""

from __future__ import annotations

from enum import StrEnum

from gateway.policy.values import value
from gateway.policy.vocabulary import (
    Reason,
)


class StoreFault(StrEnum):
    """Why the store gave no decision for a recipient."""

    BUSY = "busy"  # one key contended through several gateways (StoreBusy): store_busy
    ERROR = "error"  # unreachable, timed out (StoreError): the store_error line


class Then(StrEnum):
    GO_ON = "go_on"
    CLOSE = "close"  # close the connection once the reply is written
    REFUSE = "refuse"  # 503 to every command until QUIT


@value
class Say:
    reply: str
    then: Then = Then.GO_ON
    refresh: frozenset[str] = frozenset()  # familiar keys to refresh (a delivery's 250)


@value
class Greet:
    """Go on to the 220 greeting."""


GREET = Greet()


@value
class LookUp:
    """Reverse DNS is needed; `wait`: before the greeting (a deny entry may name it)."""

    wait: bool


@value
class Decide:
    """Ask the policy about `recipient` (decider.at_rcpt); `dry_run`: record nothing."""

    recipient: str
    dry_run: bool


@value
class RelayRcpt:
    """RCPT at the backend, with MAIL first if `mail_first`; the backend opens on demand."""

    recipient: str
    mail_first: bool


@value
class Deliver:
    """The end of data at the backend, with this content."""

    content: bytes


@value
class Tarpit:
    """Hold the reply to this RCPT `seconds` (a timer: the client waits), then
    `tarpit_waited`; when the tarpit has no room, `tarpit_full` at once."""

    seconds: float
    recipient: str


@value
class Promote:
    """Make `key` familiar (it waited out the tarpit), then go on with `then`."""

    key: str
    then: Say | RelayRcpt


@value
class RelayAuth:
    """Relay an AUTH exchange with this mechanism to the backend (opened on demand)."""

    mechanism: str


@value
class Strike:
    """Count a strike for `reason` in the store (decider.struck, policy/strikes.py), then
    `strike_counted`; `say` is the reply it goes with unless that was one too many."""

    reason: Reason  # the penalty reason it counts towards (strikes.REASONS)
    say: Say
