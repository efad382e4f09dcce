"""One table for every section, and the same rows as JSON for comparing runs.

`python -m bench.report [results.json]` prints a saved run again, as Markdown (the
README's Performance table comes from it).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure (`value`), with the SMTP paths' companions where they apply."""

    section: str
    metric: str
    value: float
    unit: str
    target: float | None = None  # the target applies to `target_on`
    higher_is_better: bool = True
    note: str = ""
    cpu_ms: float | None = None  # gateway CPU time per session or message
    p50_ms: float | None = None
    p99_ms: float | None = None
    vs_direct: float | None = None  # rate through the gateway / rate straight to the sink
    target_on: str = "value"  # value | cpu_ms

    @property
    def judged(self) -> float | None:
        return self.cpu_ms if self.target_on == "cpu_ms" else self.value

    @property
    def verdict(self) -> str:
        judged = self.judged
        if self.target is None or judged is None:
            return ""
        ok = judged >= self.target if self.higher_is_better else judged <= self.target
        return "meets" if ok else "MISSES"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        sign = "≥ " if self.higher_is_better else "≤ "
        what = " ms CPU" if self.target_on == "cpu_ms" else ""
        return f"{sign}{number(self.target)}{what}"


def number(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


HEADER = ("section", "metric", "value", "unit", "CPU ms", "p50 ms", "p99 ms", "vs direct",
          "target", "", "note")  # fmt: skip


def cells(r: Row) -> tuple[str, ...]:
    ratio = "" if r.vs_direct is None else f"{r.vs_direct:.0%}"
    return (r.section, r.metric, number(r.value), r.unit, number(r.cpu_ms), number(r.p50_ms),
            number(r.p99_ms), ratio, r.target_text, r.verdict, r.note)  # fmt: skip


def print_table(rows: list[Row], out=sys.stdout) -> None:
    table = [HEADER, *(cells(r) for r in rows)]
    used = [i for i in range(len(HEADER)) if i < 4 or any(line[i] for line in table[1:])]
    widths = {i: max(len(line[i]) for line in table) for i in used}
    for n, line in enumerate(table):
        print("  ".join(line[i].ljust(widths[i]) for i in used).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * widths[i] for i in used), file=out)


def print_markdown(rows: list[Row], out=sys.stdout) -> None:
    print("| " + " | ".join(h or "verdict" for h in HEADER[1:]) + " |", file=out)
    print("|" + "---|" * (len(HEADER) - 1), file=out)
    for r in rows:
        print("| " + " | ".join(c.replace("|", "/") for c in cells(r)[1:]) + " |", file=out)


def machine() -> dict[str, object]:
    load = os.getloadavg()
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load],
    }


def write_json(rows: list[Row], path: Path, about: dict[str, object]) -> None:
    payload = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **about,
        "rows": [asdict(r) | {"verdict": r.verdict} for r in rows],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


def read_json(path: Path) -> tuple[dict[str, object], list[Row]]:
    payload = json.loads(path.read_text())
    names = {f.name for f in fields(Row)}
    rows = [Row(**{k: v for k, v in r.items() if k in names}) for r in payload.pop("rows")]
    return payload, rows


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


if __name__ == "__main__":
    about, saved = read_json(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS)
    print(f"Run of {about.get('when')}: {about}\n".replace("'", ""))
    print_markdown(saved)
