"""The text of `onajimi replay`: what the log was, what became of its clients and of the
mail it accepted, and the allow-list candidates. Plain text (no terminal control), the
words of outcome.py; times in local time, as syslog writes them. Lists stop at LIMIT
rows; `--json` has them all.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.replay.outcome import CATEGORIES, ReplayResult
from gateway.simulation.report import duration, grid, signed_duration

LIMIT = 20


def when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _client(address: str, name: str) -> str:
    return f"{address} {name or '(no PTR name)'}"


def _more(shown: int, total: int) -> list[str]:
    return [f"  ... and {total - shown} more (--json lists them all)"] if total > shown else []


def text(result: ReplayResult, data: dict[str, Any]) -> str:
    """`data` is `result.as_json(...)`: the report says what the JSON says."""
    log, messages = data["log"], data["messages"]
    lines = [f"onajimi replay: {log['path']} ({log['format']}) with {data['config']}"]
    unreadable = ""
    if log["unreadable"]:
        numbers = ", ".join(str(n) for n in log["unreadable_lines"])
        more = ", ..." if log["unreadable"] > len(log["unreadable_lines"]) else ""
        unreadable = f" (line{'s' if log['unreadable'] > 1 else ''} {numbers}{more})"
    lines.append(
        f"log: {_plural(log['lines'], 'line')}: {log['used']} used, {log['ignored']} ignored, "
        f"{log['unreadable']} unreadable{unreadable}"
    )
    lines.append(
        f"     {_plural(log['sessions'], 'session')} from {when(log['first'])} "
        f"to {when(log['last'])}"
    )
    if log["unnamed_clients"]:
        lines.append(
            f"     {_plural(log['unnamed_clients'], 'client')} the log never names: "
            "taken as having no PTR name"
        )
    clients = data["clients"]
    lines += ["", f"clients: {clients['total']}"]
    lines += grid([], [[f"  {name}", str(clients[name])] for name in CATEGORIES])
    added = messages["added_delay"] or {}
    lines += ["", f"mail the log accepted: {_plural(messages['accepted_in_log'], 'message')}"]
    for status, meaning in (
        ("on time", "accepted no later than in the log"),
        ("sooner", "accepted earlier than in the log"),
        (
            "delayed",
            f"added p50 {duration(added.get('p50'))}, p90 {duration(added.get('p90'))}, "
            f"max {duration(added.get('max'))}",
        ),
        ("waiting", "for a retry the log does not show"),
        ("refused", "5xx: the sender gets a bounce"),
    ):
        lines.append(f"  {status:<8}{messages[status]:>6}  {meaning}")
    let_in = data["let_in"]
    if let_in["deliveries"]:
        lines.append(
            f"recipients the log never accepted, accepted with this configuration: "
            f"{let_in['deliveries']} (from {_plural(let_in['clients'], 'client')})"
        )
    if data["spared_sessions"]:
        lines.append(
            f"sessions that only retried what Onajimi had taken already (left out): "
            f"{data['spared_sessions']}"
        )
    if data["authenticated_transactions"]:
        lines.append(
            f"transactions under SMTP AUTH (not screened, left out): "
            f"{data['authenticated_transactions']}"
        )
    lines += _delayed(data["delayed"]) + _waiting(data["waiting"], data["min_retry_delay"])
    lines += _refused(data["refused"]) + _candidates(data["candidates"])
    lines += _clients(data["client_list"])
    decisions = ", ".join(f"{k} {n}" for k, n in data["decisions"].items()) or "none"
    store = data["store"]
    kinds = ", ".join(f"{kind} {n}" for kind, n in store.items())
    lines += [
        "",
        f"decisions: {decisions}",
        f"store at the end: {_plural(sum(store.values()), 'record')}"
        + (f" ({kinds})" if kinds else ""),
    ]
    return "\n".join(lines) + "\n"


def _message_rows(items: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            f"  {when(m['first'])}",
            _client(m["client"], m["name"]),
            f"<{m['from']}>" if m["from"] != "<>" else "<>",
            ",".join(f"<{r}>" if r else "(recipient not logged)" for r in m["to"]),
        ]
        for m in items[:LIMIT]
    ]


def _delayed(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return []
    header = [["  first attempt", "client", "from", "to", "added", "delay", "in the log"]]
    rows = [
        [*row, signed_duration(m["added"]), duration(m["delay"]), duration(m["logged_delay"])]
        for row, m in zip(_message_rows(items), items, strict=False)
    ]
    lines = [
        "",
        "delayed: accepted at a later attempt of its sender in the log "
        "(its own retry timer may come sooner)",
    ]
    return lines + grid(header, rows, left=4) + _more(len(rows), len(items))


def _waiting(items: list[dict[str, Any]], min_retry_delay: float) -> list[str]:
    if not items:
        return []
    header = [["  first attempt", "client", "from", "to", "deferred", "later attempts"]]
    rows = []
    for row, m in zip(_message_rows(items), items, strict=False):
        rides = m["retries_refused"]
        later = f"{rides} refused" if rides else f"none after {duration(min_retry_delay)}"
        rows.append([*row, m["reason"] or "-", later])
    lines = ["", "waiting: accepted in the log, but for a retry the log does not show"]
    return lines + grid(header, rows, left=6) + _more(len(rows), len(items))


def _refused(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return []
    header = [["  first attempt", "client", "from", "to", "reply"]]
    rows = [[*row, m["refused"]] for row, m in zip(_message_rows(items), items, strict=False)]
    lines = ["", "refused: accepted in the log, refused for good with this configuration"]
    return lines + grid(header, rows, left=5) + _more(len(rows), len(items))


def _candidates(items: list[dict[str, Any]]) -> list[str]:
    lines = ["", "allow-list candidates: deferred, but they come back like MTAs, with real mail"]
    if not items:
        return [*lines, "  none"]
    rows = []
    for c in items[:LIMIT]:
        hosts = len(c["hosts"])
        rescued = f"{c['rescued']} of {hosts} promoted by a retry" if c["rescued"] else ""
        rows.append(
            [
                f"  {c['suggestion']}",
                _plural(hosts, "host"),
                _plural(c["attempts"], "attempt"),
                f"{c['delayed']} delayed",
                f"{c['waiting']} waiting",
                rescued,
            ]
        )
    return lines + grid([], rows, left=6) + _more(len(rows), len(items))


def _clients(items: list[dict[str, Any]]) -> list[str]:
    costly = [c for c in items if c["category"] not in ("passed", "no decision")]
    if not costly:
        return []
    header = [["  client", "name", "what became of it", "decisions", "sessions"]]
    rows = [
        [
            f"  {c['client']}",
            c["name"] or "(no PTR name)",
            c["category"],
            ", ".join(f"{k} {n}" for k, n in c["decisions"].items()),
            str(c["sessions"]),
        ]
        for c in costly[:LIMIT]
    ]
    lines = ["", "clients deferred, penalised or refused"]
    return lines + grid(header, rows, left=4) + _more(len(rows), len(costly))
