"""`--plot FILE.svg`: the delay distribution per class, as an SVG written by hand.

One row per class (two with `--vs`, A above B): a thin line from the shortest to the
longest delay, a bar from p50 to p90, a dot at the maximum, on a logarithmic time axis
whose left edge is "0 s" (most messages of most classes). Classes that delivered
nothing (bots that never got in) have no row. No dependency: the picture is a few
hundred lines of text, and the text table never needs it.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from gateway.simulation.stats import ClassFigures, RunResult

WIDTH = 960
LABEL = 210  # room for class names on the left
ZERO = 24  # the "0 s" column, before the logarithmic axis starts at 1 s
ROW = 16
TOP = 56
COLOURS = ("#1f6fb4", "#d3542b")
TICKS = {0: "0", 1: "1s", 10: "10s", 60: "1m", 300: "5m", 1800: "30m", 3600: "1h"}
TICKS |= {6 * 3600: "6h", 86400: "1d", 5 * 86400: "5d"}


def _x(delay: float, top: float) -> float:
    left = LABEL + ZERO
    if delay < 1:
        return LABEL + ZERO / 3
    span = WIDTH - 20 - left
    return left + span * math.log10(delay) / math.log10(top)


def delay_svg(runs: list[RunResult]) -> str:
    names = [c.name for c in runs[0].classes if any(_by(r, c.name).delays for r in runs)]
    longest = max((max(c.delays) for r in runs for c in r.classes if c.delays), default=1.0)
    top = max(3600.0, longest * 1.2)
    height = TOP + ROW * len(runs) * len(names) + 6 * len(names) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        '<text x="10" y="18" font-size="14">onajimi simulate: delay from first attempt to '
        "acceptance, per class</text>",
    ]
    legend = "; ".join(
        f'<tspan fill="{COLOURS[i]}">{"AB"[i]} = {escape(r.config)}</tspan>'
        for i, r in enumerate(runs)
    )
    out.append(f'<text x="10" y="34">{legend} — line: min to max, bar: p50 to p90, dot: max</text>')
    bottom = height - 30
    for tick, label in TICKS.items():
        if tick > top:
            break
        x = _x(tick, top)
        out.append(f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" text-anchor="middle">{label}</text>')
    y = TOP
    for name in names:
        out.append(f'<text x="10" y="{y + ROW * len(runs) / 2 + 4:.1f}">{escape(name)}</text>')
        for i, run in enumerate(runs):
            out.extend(_row(_by(run, name), y + ROW * i + ROW / 2, COLOURS[i], top))
        y += ROW * len(runs) + 6
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _by(run: RunResult, name: str) -> ClassFigures:
    return next(c for c in run.classes if c.name == name)


def _row(figures: ClassFigures, y: float, colour: str, top: float) -> list[str]:
    ordered = figures.ordered
    if not ordered:
        return []
    low, high = _x(ordered[0], top), _x(ordered[-1], top)
    p50, p90 = _x(figures.quantile(0.5) or 0, top), _x(figures.quantile(0.9) or 0, top)
    return [
        f'<line x1="{low:.1f}" y1="{y:.1f}" x2="{high:.1f}" y2="{y:.1f}" stroke="{colour}"/>',
        f'<rect x="{p50 - 2:.1f}" y="{y - 4:.1f}" width="{max(p90 - p50, 0) + 4:.1f}" '
        f'height="8" fill="{colour}" opacity="0.6"/>',
        f'<circle cx="{high:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>',
    ]
