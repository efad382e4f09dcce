"""One table for every section, and the same rows as JSON for comparing runs."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    metric: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        ok = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "meets" if ok else "MISSES"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(rows: list[Row]) -> None:
    header = ("section", "metric", "value", "unit", "target", "", "note")
    table = [header]
    for r in rows:
        target = (
            "" if r.target is None else ("≥ " if r.higher_is_better else "≤ ") + _number(r.target)
        )
        table.append((r.section, r.metric, _number(r.value), r.unit, target, r.verdict, r.note))
    widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
    for n, line in enumerate(table):
        print("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_json(rows: list[Row], path: Path) -> None:
    payload = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": [asdict(r) | {"verdict": r.verdict} for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def run_section(module_name: str, out) -> None:
    """Child-process entry: run one section's `run(tmp)` and send its rows back."""
    module = importlib.import_module(module_name)
    try:  # the load generator runs on uvloop, like the gateway: cheaper clients, cleaner figures
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    with tempfile.TemporaryDirectory(prefix="onajimi-bench-") as tmp:
        rows = runner(module.run(Path(tmp)))
    out.send(rows)
