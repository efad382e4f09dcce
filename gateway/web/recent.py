"""The recent decisions the administrator's page shows, kept in memory.

The observer hands every decision line's fields here as it writes the line, so the page
shows exactly what the log says, with no store round trip on the hot path and nothing
written anywhere: a bounded ring (`web.recent_decisions` lines), the oldest dropped.
Why memory and not the store: decisions are the busiest thing the gateway does, and the
store must stay a place for state the policy needs; the page needs only "lately".
What a restart forgets, the decision log still has.

With several workers only worker 0 serves the pages, so the ring holds the decisions of
worker 0: the kernel spreads connections evenly over the workers, so it is a fair sample,
and the page says so. /metrics has the exact counts over all workers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SHOWN_FIELDS = ("client", "ptr", "helo", "from", "to", "action", "reason", "key", "detail")


@dataclass(frozen=True, slots=True)
class Line:
    at: float
    fields: Mapping[str, Any]

    @property
    def reason(self) -> str:
        return str(self.fields.get("reason", ""))

    @property
    def action(self) -> str:
        return str(self.fields.get("action", ""))


@dataclass(frozen=True, slots=True)
class ReasonGroup:
    reason: str
    action: str  # the action of the latest line (a reason has one action, nearly always)
    count: int
    latest: list[Line]


class RecentDecisions:
    def __init__(self, size: int, clock: Callable[[], float] = time.time) -> None:
        self.size = size
        self.clock = clock
        self._lines: deque[Line] = deque(maxlen=size)
        self.seen = 0  # decisions handed in since start, kept or not

    def add(self, fields: Mapping[str, Any]) -> None:
        """One decision line's fields (only those the page shows are kept)."""
        self.seen += 1
        if self.size:
            kept = {k: fields[k] for k in SHOWN_FIELDS if fields.get(k) not in (None, "")}
            self._lines.append(Line(self.clock(), kept))

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def since(self) -> float | None:
        """When the oldest line kept was decided."""
        return self._lines[0].at if self._lines else None

    def by_reason(self, latest: int = 10, reason: str | None = None) -> list[ReasonGroup]:
        """Reasons by how often they were decided (among the lines kept), each with its
        `latest` lines, newest first; `reason` keeps only that one."""
        counts = Counter(line.reason for line in self._lines)
        groups: dict[str, list[Line]] = {}
        for line in reversed(self._lines):
            if reason is not None and line.reason != reason:
                continue
            shown = groups.setdefault(line.reason, [])
            if len(shown) < latest:
                shown.append(line)
        return [
            ReasonGroup(name, lines[0].action, counts[name], lines)
            for name, lines in sorted(groups.items(), key=lambda kv: (-counts[kv[0]], kv[0]))
        ]
