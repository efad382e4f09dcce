"""What a replay found, as plain data (the text report and the JSON read it).

The words (the same in the text, the JSON and the README):

    delivery   one recipient of one message, followed across the attempts that carry it
    message    a message the log accepted: the deliveries it accepted in one transaction
    delay      its first attempt -> the acceptance of its last recipient, with the
               configuration (`delay`) and in the log (`logged_delay`)
    on time    accepted with the configuration no later than in the log (`sooner`: earlier)
    delayed    accepted later than in the log; `added` is how much later
    waiting    the log accepted it, Onajimi deferred it, and no later attempt of its sender
               in the log would have carried it: it waits for a retry the log does not show
    refused    Onajimi would have refused it for good (5xx): the sender gets a bounce
    let in     deliveries the log never accepted that the configuration would have
    spared     sessions of the log that only retried what Onajimi had taken already

What became of each client (by address), the first that applies:
    penalised               met the penalty box
    deferred                deferred, and never passed afterwards
    deferred, then passed   deferred, then passed (promoted, or familiar by its key)
    refused                 refused for good (deny list, relay attempts, ...), never passed
    passed                  every decision a pass
    no decision             no session of it reached a decision (it left before RCPT)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gateway.replay.model import LogRead
from gateway.reports import Candidate, CandidateGroup, by_domain
from gateway.simulation.stats import nearest_rank

SCHEMA = 1  # the JSON layout's version: bumped when a field changes meaning or goes
CATEGORIES = (
    "penalised",
    "deferred",
    "deferred, then passed",
    "refused",
    "passed",
    "no decision",
)


@dataclass(slots=True, eq=False)  # compared by identity: a delivery is one thing
class Delivery:
    sender: str
    recipient: str  # "": the log does not name it
    first: float  # its first attempt in the log
    client: str  # the client of that attempt
    name: str  # its PTR name as logged ("" for none)
    key: str  # the client key it waits under (Onajimi's)
    message: str = ""  # the log's id of the message that carried it
    reason: str = ""  # Onajimi's first refusal of it: "defer/s25r_rule1"
    logged_at: float | None = None  # accepted in the log
    logged_refused: bool = False  # refused for good in the log
    accepted_at: float | None = None  # accepted with the configuration
    refused: str = ""  # refused for good with the configuration: the code
    rides: int = 0  # later sessions of its sender it was retried in (and refused again)


@dataclass(slots=True)
class Message:
    """A message the log accepted."""

    deliveries: list[Delivery]

    @property
    def head(self) -> Delivery:
        return min(self.deliveries, key=lambda d: d.first)

    @property
    def first(self) -> float:
        return self.head.first

    @property
    def logged_at(self) -> float:
        return max(d.logged_at or 0.0 for d in self.deliveries)

    @property
    def accepted_at(self) -> float | None:
        """None while any recipient waits (or was refused)."""
        times = [d.accepted_at for d in self.deliveries]
        return None if None in times else max(t for t in times if t is not None)

    @property
    def refused(self) -> str:
        return next((d.refused for d in self.deliveries if d.refused), "")

    @property
    def added(self) -> float | None:
        """How much later than in the log the configuration accepts it (None: it does not)."""
        accepted = self.accepted_at
        return None if accepted is None else accepted - self.logged_at

    @property
    def status(self) -> str:
        if self.refused:
            return "refused"
        added = self.added
        if added is None:
            return "waiting"
        return "delayed" if added > 0 else "sooner" if added < 0 else "on time"

    def as_json(self) -> dict[str, Any]:
        head = self.head
        accepted = self.accepted_at
        return {
            "status": self.status,
            "message": head.message,
            "client": head.client,
            "name": head.name,
            "from": head.sender,
            "to": [d.recipient for d in self.deliveries],
            "first": self.first,
            "accepted_in_log": self.logged_at,
            "accepted": accepted,
            "logged_delay": self.logged_at - self.first,
            "delay": None if accepted is None else accepted - self.first,
            "added": self.added,
            "reason": next((d.reason for d in self.deliveries if d.reason), ""),
            "refused": self.refused or None,
            "retries_refused": max(d.rides for d in self.deliveries),
        }


@dataclass(slots=True)
class ClientFigures:
    address: str
    name: str  # as logged; "" for none
    key: str
    sessions: int = 0
    attempts: int = 0  # sessions that reached a decision
    first_seen: float = 0.0
    last_seen: float = 0.0
    reason: str = ""  # why it was first deferred or refused (a Reason's value)
    deferred: bool = False
    rescued: bool = False  # passed after a deferral
    decisions: Counter[str] = field(default_factory=Counter)  # "action/reason"

    def decided(self, now: float) -> None:
        if not self.attempts:
            self.first_seen = now
        self.attempts += 1
        self.last_seen = now

    @property
    def category(self) -> str:
        actions = {key.split("/", 1)[0] for key in self.decisions}
        if "penalty" in actions:
            return "penalised"
        if self.deferred:
            return "deferred, then passed" if self.rescued else "deferred"
        if "reject" in actions and "pass" not in actions:
            return "refused"
        return "passed" if actions else "no decision"

    def candidate(self) -> Candidate:
        return Candidate(
            self.key,
            self.address,
            self.name,
            self.reason,
            self.first_seen,
            self.last_seen,
            self.attempts,
            None,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "client": self.address,
            "name": self.name,
            "key": self.key,
            "category": self.category,
            "sessions": self.sessions,
            "attempts": self.attempts,
            "decisions": dict(sorted(self.decisions.items())),
        }


@dataclass(slots=True)
class ReplayResult:
    min_retry_delay: float
    deliveries: list[Delivery] = field(default_factory=list)
    clients: dict[str, ClientFigures] = field(default_factory=dict)  # by address
    spared: int = 0
    authenticated: int = 0  # transactions under SMTP AUTH: not replayed
    store: dict[str, int] = field(default_factory=dict)  # live records at the end
    decisions: dict[str, int] = field(default_factory=dict)  # "action/reason" -> count

    def client(self, address: str, key: str, name: str) -> ClientFigures:
        figures = self.clients.get(address)
        if figures is None:
            figures = self.clients[address] = ClientFigures(address, name, key)
        return figures

    def messages(self) -> list[Message]:
        """The messages the log accepted, in the order of their first attempt."""
        grouped: dict[tuple[str, str, float], list[Delivery]] = {}
        for d in self.deliveries:
            if d.logged_at is not None:
                grouped.setdefault((d.message, d.sender, d.logged_at), []).append(d)
        return sorted((Message(ds) for ds in grouped.values()), key=lambda m: m.first)

    def let_in(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.logged_at is None and d.accepted_at is not None]

    def categories(self) -> dict[str, int]:
        counts = Counter(c.category for c in self.clients.values())
        return {name: counts[name] for name in CATEGORIES}

    def candidates(self) -> list[tuple[CandidateGroup, dict[str, int]]]:
        """Allow-list candidates: clients Onajimi would have deferred that come back like
        MTAs (reports.Candidate.regular) with mail the log accepted; grouped by rDNS
        domain, each group with its messages delayed and waiting, and how many of its
        hosts were rescued anyway (promoted)."""
        costs: dict[str, Counter[str]] = {}
        for message in self.messages():
            costs.setdefault(message.head.client, Counter())[message.status] += 1
        chosen = [
            c
            for c in self.clients.values()
            if c.deferred and c.address in costs and c.candidate().regular
        ]
        groups = []
        for group in by_domain(c.candidate() for c in chosen):
            hosts = {c.client for c in group.candidates}
            figures = {
                "delayed": sum(costs[h]["delayed"] for h in hosts),
                "waiting": sum(costs[h]["waiting"] for h in hosts),
                "rescued": sum(self.clients[h].rescued for h in hosts),
            }
            groups.append((group, figures))
        groups.sort(key=lambda g: (-g[1]["delayed"] - g[1]["waiting"], -g[0].attempts))
        return groups

    def as_json(self, log: LogRead, config: str) -> dict[str, Any]:
        messages = self.messages()
        by_status = Counter(m.status for m in messages)
        added = sorted(m.added for m in messages if m.status == "delayed" and m.added)
        let_in = self.let_in()
        times = [c.when for c in log.conversations]
        return {
            "schema": SCHEMA,
            "config": config,
            "min_retry_delay": self.min_retry_delay,
            "log": {
                "path": log.path,
                "format": log.format,
                "lines": log.lines,
                "used": log.used,
                "ignored": log.ignored,
                "unreadable": log.unreadable,
                "unreadable_lines": log.unreadable_lines,
                "first": min(times, default=None),
                "last": max(times, default=None),
                "sessions": len(log.conversations),
                "unnamed_clients": log.unnamed,
            },
            "clients": {"total": len(self.clients), **self.categories()},
            "messages": {
                "accepted_in_log": len(messages),
                **{s: by_status[s] for s in ("on time", "sooner", "delayed", "waiting", "refused")},
                "added_delay": {
                    "p50": nearest_rank(added, 0.5),
                    "p90": nearest_rank(added, 0.9),
                    "max": added[-1],
                }
                if added
                else None,
            },
            "delayed": [m.as_json() for m in messages if m.status == "delayed"],
            "waiting": [m.as_json() for m in messages if m.status == "waiting"],
            "refused": [m.as_json() for m in messages if m.status == "refused"],
            "let_in": {"deliveries": len(let_in), "clients": len({d.client for d in let_in})},
            "spared_sessions": self.spared,
            "authenticated_transactions": self.authenticated,
            "candidates": [
                {
                    "domain": group.domain,
                    "suggestion": group.suggestion(),
                    "regular": group.regular,
                    "hosts": sorted({c.client for c in group.candidates}),
                    "attempts": group.attempts,
                    **figures,
                }
                for group, figures in self.candidates()
            ],
            "client_list": [
                c.as_json() for c in sorted(self.clients.values(), key=lambda c: c.address)
            ],
            "decisions": dict(sorted(self.decisions.items())),
            "store": dict(sorted(self.store.items())),
        }
