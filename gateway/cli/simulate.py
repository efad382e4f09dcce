"""`onajimi simulate`: what a configuration costs real senders, over simulated days.

Runs the built-in sender population (or one changed by `--senders FILE`) through the
real policy code with the configuration's settings and list files, on a memory store
with a simulated clock (the configured `store.url` is not touched), and prints the
figures per sender class; `--vs` runs a second configuration on the very same senders
and messages and shows both side by side. See gateway/simulation/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.cli.common import print_json, settings_from
from gateway.config import load_settings
from gateway.errors import UserError
from gateway.simulation import plot, report, stats
from gateway.simulation.engine import simulate
from gateway.simulation.gate import local_domain
from gateway.simulation.loader import load_population
from gateway.simulation.population import PopulationError, build_world

MAX_DAYS = 366


def run(args: Any) -> int:
    if not 0 < args.days <= MAX_DAYS:
        raise UserError(f"--days: must be more than 0 and at most {MAX_DAYS}, got {args.days:g}")
    settings = settings_from(args)
    runs = [(settings, args.config)]
    if args.vs:
        runs.append((load_settings(Path(args.vs)), args.vs))
    population = load_population(Path(args.senders) if args.senders else None)
    domain = local_domain(settings)

    def world():
        return build_world(population.classes, args.days, args.seed, domain, population.neighbours)

    try:
        world()  # fails early, before any run, if the population does not fit
        results = [simulate(s, world, args.days, args.seed, label) for s, label in runs]
    except PopulationError as exc:
        raise UserError(str(exc)) from None
    if args.plot:
        try:
            Path(args.plot).write_text(plot.delay_svg(results), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--plot: cannot write {args.plot}: {exc.strerror}") from None
    if args.json:
        print_json(stats.as_json(results))
    elif len(results) == 2:
        print(report.side_by_side(*results), end="")
    else:
        print(report.single(results[0]), end="")
    return 0
