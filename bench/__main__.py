"""`python -m bench [SECTION ...]`: run the benchmark sections, print one table.

Sections run in separate processes so that one section's CPU pinning, caches and
garbage do not colour the next one.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time

from bench.report import RESULTS, Row, machine, print_table, run_section, write_json

SECTIONS = {
    "policy": "bench.policy",
    "smtp": "bench.smtp",
    "screening": "bench.screening",
}

# Seconds a section may take. The screening section waits by design (three rounds of a
# 6 s pregreet wait, of 5,000 held sessions, of the DNS-list rows) and measured 280 s
# on a 2-core VM, right at the old 280 s limit, which stopped whole runs.
SECTION_LIMIT = 480


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("sections", nargs="*", choices=[*SECTIONS, []], help="default: all")
    args = parser.parse_args(argv)
    chosen = args.sections or list(SECTIONS)
    ctx = multiprocessing.get_context("spawn")
    rows: list[Row] = []
    about = machine()
    started = time.monotonic()
    for name in chosen:
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=run_section, args=(SECTIONS[name], sender))
        proc.start()
        proc.join(SECTION_LIMIT)
        if proc.is_alive():
            proc.kill()
            print(f"bench: section {name} exceeded its time limit", file=sys.stderr)
            return 1
        if proc.exitcode != 0 or not receiver.poll():
            print(f"bench: section {name} failed (exit {proc.exitcode})", file=sys.stderr)
            return 1
        rows.extend(receiver.recv())
    print_table(rows)
    write_json(rows, RESULTS, about | {"seconds": round(time.monotonic() - started)})
    print(f"\n{len(rows)} figures in {time.monotonic() - started:.0f} s; written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
