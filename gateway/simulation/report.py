"""The text tables of `onajimi simulate`: one configuration, or two side by side (`--vs`).

Plain text only (no terminal control): the table is what operators paste into a ticket,
and the figures never need the plot. The words are stats.py's.
"""

from __future__ import annotations

from gateway.simulation.stats import ClassFigures, RunResult


def duration(seconds: float | None) -> str:
    """`0s`, `42s`, `7m05s`, `2h03m`, `1d04h`; `-` for no value."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def signed_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if round(seconds) == 0:
        return "="
    return ("+" if seconds > 0 else "-") + duration(abs(seconds))


def percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def points(delta: float | None) -> str:
    if delta is None:
        return "-"
    if abs(delta) < 0.0005:
        return "="
    return f"{100 * delta:+.1f}pp"


def grid(header: list[list[str]], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns sized to fit; the first `left` columns left-aligned, the rest right."""
    table = header + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            cell.ljust(widths[i]) if i < left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _store(run: RunResult) -> str:
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(run.store.items()))
    return f"{run.records} records" + (f" ({kinds})" if kinds else "")


def _days(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


LEGEND = (
    "in: share of the messages delivered (for bots: what got in); "
    "delay: first attempt to acceptance, delivered messages (p50/p90 by nearest rank); "
    "delayed: delivered later than at once;\n"
    "late: attempts refused although the message had waited min_retry_delay ({mrd}); "
    "421: attempts that met the penalty box;\n"
    "accepted: share of attempts in which a recipient was accepted (for bots: what got in); "
    "messages are followed past the last day until delivered or given up."
)


def single(run: RunResult) -> str:
    header = [
        [
            "class",
            "senders",
            "msgs",
            "deliv",
            "in",
            "lost",
            "delayed",
            "p50",
            "p90",
            "max",
            "attempts",
            "late",
            "421",
            "accepted",
        ]
    ]

    def row(c: ClassFigures) -> list[str]:
        return [
            c.name,
            str(c.senders),
            str(c.messages),
            str(c.delivered),
            percent(c.delivered / c.messages if c.messages else None),
            str(c.lost),
            str(c.delayed),
            duration(c.quantile(0.5)),
            duration(c.quantile(0.9)),
            duration(c.quantile(1.0)),
            str(c.attempts),
            str(c.late),
            str(c.penalised),
            percent(c.accepted_share),
        ]

    rows = [row(c) for c in run.classes]
    rows.append([""] * len(header[0]))
    rows += [row(c) for c in run.totals()]
    probes = sum(c.probes for c in run.classes)
    refused = sum(c.probes_refused for c in run.classes)
    lines = [
        f"onajimi simulate: {run.config}, {_days(run.days)}, seed {run.seed}: "
        f"{run.sessions} sessions",
        "",
        *grid(header, rows),
        "",
        f"store at the end of day {run.days:g}: {_store(run)}",
        f"callback probes: {probes}, refused {refused}",
        "",
        LEGEND.format(mrd=duration(run.min_retry_delay)),
    ]
    return "\n".join(lines) + "\n"


def side_by_side(a: RunResult, b: RunResult) -> str:
    header = [
        [
            "",
            "delivered",
            "",
            "lost",
            "",
            "p90 delay",
            "",
            "",
            "max delay",
            "",
            "",
            "accepted",
            "",
            "",
        ],
        ["class", "A", "B", "A", "B", "A", "B", "Δ", "A", "B", "Δ", "A", "B", "Δ"],
    ]
    others = {c.name: c for c in b.classes}
    both = [(c, others[c.name]) for c in a.classes if c.name in others]
    totals = list(zip(a.totals(), b.totals(), strict=True))

    def row(x: ClassFigures, y: ClassFigures) -> list[str]:
        p90x, p90y = x.quantile(0.9), y.quantile(0.9)
        maxx, maxy = x.quantile(1.0), y.quantile(1.0)
        sx, sy = x.accepted_share, y.accepted_share
        return [
            x.name,
            str(x.delivered),
            str(y.delivered),
            str(x.lost),
            str(y.lost),
            duration(p90x),
            duration(p90y),
            signed_duration(None if p90x is None or p90y is None else p90y - p90x),
            duration(maxx),
            duration(maxy),
            signed_duration(None if maxx is None or maxy is None else maxy - maxx),
            percent(sx),
            percent(sy),
            points(None if sx is None or sy is None else sy - sx),
        ]

    rows = [row(x, y) for x, y in both]
    rows.append([""] * 14)
    rows += [row(x, y) for x, y in totals]
    lines = [
        f"onajimi simulate: {_days(a.days)}, seed {a.seed}",
        f"  A = {a.config}: {a.sessions} sessions",
        f"  B = {b.config}: {b.sessions} sessions",
        "",
        *grid(header, rows),
        "",
        f"store at the end of day {a.days:g}: A {_store(a)}; B {_store(b)}",
        f"late refusals: A {a.totals()[0].late}, B {b.totals()[0].late}; "
        f"penalised attempts of legitimate senders: A {a.totals()[0].penalised}, "
        f"B {b.totals()[0].penalised}",
    ]
    lines += ["", "Δ: B minus A (p90 and max of the delay; accepted in percentage points)."]
    return "\n".join(lines) + "\n"
