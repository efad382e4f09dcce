"""When a sender tries a deferred message again: one schedule per MTA family.

A *round* is one delivery attempt of a message: the primary MX, and the backup MX at
once if the sender falls back. After a failed round the sender's schedule is asked

    next_try(first, failed, gap, rounds, rng, phase) -> (when, gap) | None

`first` is when the message was first tried, `failed` when the round that just failed
ended, `gap` what the schedule returned as its gap last time (0 after the first round),
`rounds` how many rounds have failed. The answer is the absolute time of the next round
and the gap to remember, or None when the sender gives up (the message is lost: its
author gets a bounce). `phase` places the sender's queue runs in time (Postfix and Exim
retry only when their queue runner comes by), drawn once per sender.

Times are seconds. Every schedule is a pure function of its arguments and the rng.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from enum import StrEnum

DAY = 86400.0


class RetryKind(StrEnum):
    """The schedule families, as `--senders` files name them (`retry.kind`)."""

    NEVER = "never"
    POSTFIX = "postfix"
    EXIM = "exim"
    INTERVAL = "interval"


def next_queue_run(due: float, phase: float, every: float) -> float:
    """The first queue run at or after `due`, runs being at phase + k * every (every 0:
    the sender retries exactly when due, as a timer would)."""
    if every <= 0:
        return due
    return phase + math.ceil((due - phase) / every) * every


@dataclass(frozen=True, slots=True)
class Never:
    """A sender that never retries (most spamware: fire and forget)."""

    kind: RetryKind = RetryKind.NEVER
    queue_run: float = 0.0

    def next_try(
        self, first: float, failed: float, gap: float, rounds: int, rng: random.Random, phase: float
    ) -> tuple[float, float] | None:
        return None


@dataclass(frozen=True, slots=True)
class PostfixRetry:
    """Postfix's queue manager: a deferred message waits as long as it has been queued,
    clamped to [minimal_backoff_time, maximal_backoff_time], and is picked up by the next
    scan of the deferred queue (every queue_run_delay); it bounces once older than
    maximal_queue_lifetime. Source: postconf(5) defaults (queue_run_delay 300s,
    minimal_backoff_time 300s, maximal_backoff_time 4000s, maximal_queue_lifetime 5d) and
    src/qmgr/qmgr_active.c, qmgr_active_done_3_generic ("delay = event_time() -
    message->create_time", clamped to the two backoff times)."""

    min_backoff: float = 300.0
    max_backoff: float = 4000.0
    queue_run: float = 300.0
    lifetime: float = 5 * DAY
    kind: RetryKind = RetryKind.POSTFIX

    def next_try(
        self, first: float, failed: float, gap: float, rounds: int, rng: random.Random, phase: float
    ) -> tuple[float, float] | None:
        delay = min(max(failed - first, self.min_backoff), self.max_backoff)
        when = next_queue_run(failed + delay, phase, self.queue_run)
        if when - first > self.lifetime:
            return None
        return when, delay


@dataclass(frozen=True, slots=True)
class EximRule:
    """One Exim retry rule: until `cutoff` after the first failure, retry after `gap`
    ("F"), or after gaps growing by `factor` from `gap` on ("G")."""

    letter: str  # "F" fixed | "G" geometric
    cutoff: float
    gap: float
    factor: float = 1.0


def parse_exim_rules(text: str) -> tuple[EximRule, ...]:
    """`F,2h,15m; G,16h,1h,1.5; F,4d,6h` -> rules. Raises ValueError saying what is wrong."""
    rules = []
    for part in text.split(";"):
        fields = [f.strip() for f in part.split(",")]
        letter = fields[0].upper() if fields else ""
        if letter == "F" and len(fields) == 3:
            rules.append(EximRule("F", parse_time(fields[1]), parse_time(fields[2])))
        elif letter == "G" and len(fields) == 4:
            try:
                factor = float(fields[3])
            except ValueError:
                raise ValueError(f"{fields[3]!r} is not a multiplier") from None
            if factor < 1:
                raise ValueError(f"multiplier {fields[3]} is below 1")
            rules.append(EximRule("G", parse_time(fields[1]), parse_time(fields[2]), factor))
        else:
            raise ValueError(f"{part.strip()!r} is not F,<cutoff>,<gap> or G,<cutoff>,<gap>,<m>")
    for before, after in itertools.pairwise(rules):
        if after.cutoff <= before.cutoff:
            raise ValueError("cutoffs must grow from one rule to the next")
    return tuple(rules)


_EXIM_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str) -> float:
    """Exim's time syntax: `15m`, `2h`, `4d`, `1h30m`."""
    total, number = 0.0, ""
    for char in text.strip().lower():
        if char.isdigit():
            number += char
        elif char in _EXIM_UNITS and number:
            total += int(number) * _EXIM_UNITS[char]
            number = ""
        else:
            raise ValueError(f"{text!r} is not a time like 15m, 2h or 4d")
    if number or total <= 0:
        raise ValueError(f"{text!r} is not a time like 15m, 2h or 4d")
    return total


EXIM_DEFAULT_RULES = "F,2h,15m; G,16h,1h,1.5; F,4d,6h"


@dataclass(frozen=True, slots=True)
class EximRetry:
    """Exim's retry rules, counted from the first failure: the rule whose cutoff has not
    passed gives the gap to the next retry time; a G rule's gap is its own while the
    previous gap was shorter, else the previous gap times its multiplier (src/retry.c,
    retry_update: "next_gap = (lastgap < rule->p1)? rule->p1 : lastgap * rule->p2").
    The message is tried again by the first queue run after that retry time; past the
    last cutoff the address fails. Source: the
    Exim specification, chapter "Retry configuration", and the default configuration's
    single rule `* * F,2h,15m; G,16h,1h,1.5; F,4d,6h`. Queue runs every 30 minutes: the
    daemon's `-q30m` as Debian's exim4 starts it (QUEUEINTERVAL='30m' in
    /etc/default/exim4); Exim itself has no default interval."""

    rules: tuple[EximRule, ...] = parse_exim_rules(EXIM_DEFAULT_RULES)
    queue_run: float = 1800.0
    kind: RetryKind = RetryKind.EXIM

    def next_try(
        self, first: float, failed: float, gap: float, rounds: int, rng: random.Random, phase: float
    ) -> tuple[float, float] | None:
        age = failed - first
        rule = next((r for r in self.rules if age < r.cutoff), None)
        if rule is None:
            return None
        if rule.letter == "G":
            gap = rule.gap if gap < rule.gap else gap * rule.factor
        else:
            gap = rule.gap
        return next_queue_run(failed + gap, phase, self.queue_run), gap


@dataclass(frozen=True, slots=True)
class IntervalRetry:
    """A retry timer: the n-th gap is drawn from [low, high] and multiplied by
    factor^(n-1), at most `cap`; the sender gives up past `lifetime` or after `tries`
    retries (0: no limit). Fits the MTAs that publish a retry interval (Exchange) and the
    services whose pace is known only from their logs (see senders.py)."""

    low: float
    high: float
    factor: float = 1.0
    cap: float = math.inf
    lifetime: float = 2 * DAY
    tries: int = 0
    kind: RetryKind = RetryKind.INTERVAL
    queue_run: float = 0.0

    def next_try(
        self, first: float, failed: float, gap: float, rounds: int, rng: random.Random, phase: float
    ) -> tuple[float, float] | None:
        if self.tries and rounds > self.tries:
            return None
        drawn = self.low if self.high <= self.low else rng.uniform(self.low, self.high)
        gap = min(drawn * self.factor ** (rounds - 1), self.cap)
        when = failed + gap
        if when - first > self.lifetime:
            return None
        return when, gap


Retry = Never | PostfixRetry | EximRetry | IntervalRetry
