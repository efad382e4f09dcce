"""The figures of a run, per sender class, as plain data (the report and JSON read them).

Definitions (the same words in the text table, the JSON and the README):

    messages   messages the class had for us within the simulated days
    delivered  messages every recipient of which was accepted (followed past the last
               day until delivered or given up: a message is never left "in flight")
    lost       messages the sender gave up on, or that got a 5xx: the author gets a bounce
    delay      first attempt -> acceptance of the last recipient, for delivered messages;
               p50/p90 by nearest rank (the value at rank ceil(q*n))
    delayed    delivered messages with a delay above zero
    attempts   sessions that carried a message (primary MX, backup MX, retries); callback
               probes are counted apart
    accepted   attempts in which at least one recipient was accepted (for bots: what got in)
    late       attempts refused although the message had already waited min_retry_delay:
               a single host would have passed with them (rotating pools do not)
    penalised  attempts that met the penalty box (421)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1  # the JSON layout's version: bumped when a field changes meaning or goes


def nearest_rank(ordered: list[float], q: float) -> float | None:
    """The q-quantile of sorted values by nearest rank (None for no values)."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(slots=True)
class ClassFigures:
    name: str
    bot: bool
    senders: int
    messages: int = 0
    delivered: int = 0
    lost: int = 0
    attempts: int = 0
    accepted: int = 0
    late: int = 0
    penalised: int = 0
    probes: int = 0
    probes_refused: int = 0
    delays: list[float] = field(default_factory=list)

    @property
    def ordered(self) -> list[float]:
        return sorted(self.delays)

    def quantile(self, q: float) -> float | None:
        return nearest_rank(self.ordered, q)

    @property
    def delayed(self) -> int:
        return sum(1 for d in self.delays if d > 0)

    @property
    def accepted_share(self) -> float | None:
        return self.accepted / self.attempts if self.attempts else None

    def as_json(self) -> dict[str, Any]:
        ordered = self.ordered
        delay = None
        if ordered:
            delay = {
                "p50": nearest_rank(ordered, 0.5),
                "p90": nearest_rank(ordered, 0.9),
                "max": ordered[-1],
            }
        return {
            "class": self.name,
            "bot": self.bot,
            "senders": self.senders,
            "messages": self.messages,
            "delivered": self.delivered,
            "lost": self.lost,
            "delayed": self.delayed,
            "delay": delay,
            "attempts": self.attempts,
            "accepted_attempts": self.accepted,
            "accepted_share": self.accepted_share,
            "late_refusals": self.late,
            "penalised": self.penalised,
            "probes": self.probes,
            "probes_refused": self.probes_refused,
        }


def total(name: str, rows: list[ClassFigures], bot: bool) -> ClassFigures:
    """One row adding up `rows` (all legitimate classes, or all bots)."""
    out = ClassFigures(name, bot, sum(r.senders for r in rows))
    for r in rows:
        out.messages += r.messages
        out.delivered += r.delivered
        out.lost += r.lost
        out.attempts += r.attempts
        out.accepted += r.accepted
        out.late += r.late
        out.penalised += r.penalised
        out.probes += r.probes
        out.probes_refused += r.probes_refused
        out.delays.extend(r.delays)
    return out


@dataclass(slots=True)
class RunResult:
    """One configuration's run."""

    config: str
    days: float
    seed: int
    min_retry_delay: float
    classes: list[ClassFigures]
    store: dict[str, int]  # live records by kind at the end of the last day
    decisions: dict[str, int]  # "action/reason" -> count, as the metrics would show them
    sessions: int  # every session simulated, probes included

    def totals(self) -> list[ClassFigures]:
        real = [c for c in self.classes if not c.bot]
        bots = [c for c in self.classes if c.bot]
        return [total("legitimate (all)", real, False), total("bots (all)", bots, True)]

    @property
    def records(self) -> int:
        return sum(self.store.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "min_retry_delay": self.min_retry_delay,
            "classes": [c.as_json() for c in self.classes],
            "totals": {
                "legitimate": self.totals()[0].as_json(),
                "bots": self.totals()[1].as_json(),
            },
            "store": {"records": self.records, "by_kind": dict(sorted(self.store.items()))},
            "decisions": dict(sorted(self.decisions.items())),
            "sessions": self.sessions,
        }


def as_json(runs: list[RunResult]) -> dict[str, Any]:
    """The whole output of `onajimi simulate --json` (one run, or two with --vs)."""
    first = runs[0]
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "days": first.days,
        "seed": first.seed,
        "runs": [run.as_json() for run in runs],
    }
    if len(runs) == 2:
        out["differences"] = differences(runs[0], runs[1])
    return out


def differences(a: RunResult, b: RunResult) -> list[dict[str, Any]]:
    """Per class, the second run's figures minus the first's (delays in seconds)."""
    rows = []
    others = {c.name: c for c in b.classes}
    for mine in a.classes:
        theirs = others.get(mine.name)
        if theirs is None:
            continue
        row: dict[str, Any] = {"class": mine.name}
        for key in ("delivered", "lost", "delayed", "attempts", "accepted", "late", "penalised"):
            row[key] = _count(theirs, key) - _count(mine, key)
        for label, q in (("p50", 0.5), ("p90", 0.9), ("max", 1.0)):
            x, y = mine.quantile(q), theirs.quantile(q)
            row[f"delay_{label}"] = None if x is None or y is None else y - x
        x, y = mine.accepted_share, theirs.accepted_share
        row["accepted_share"] = None if x is None or y is None else y - x
        rows.append(row)
    return rows


def _count(figures: ClassFigures, key: str) -> int:
    return figures.delayed if key == "delayed" else getattr(figures, key)
