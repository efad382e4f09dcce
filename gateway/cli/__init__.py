"""The `onajimi` command. Every subcommand takes `-c/--config FILE`.

Operator mistakes (bad config, bad list line, unparsable address, unusable store) print
one line, `onajimi: <what and where>`, and exit with status 2. Only bugs keep a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.config import DEFAULT_CONFIG
from gateway.errors import StoreError, UserError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other operator error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def default_config() -> str:
    """`ONAJIMI_CONFIG` when set (the systemd unit and the image set it, so that
    `onajimi deny add ...` reaches the running gateway's store), else conf/gateway.toml."""
    return os.environ.get("ONAJIMI_CONFIG") or str(DEFAULT_CONFIG)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=default_config(),
        metavar="FILE",
        help=f"configuration file (default: $ONAJIMI_CONFIG, else {DEFAULT_CONFIG})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="onajimi", description="Queue-less SMTP front door.")
    parser.add_argument("--version", action="version", version=f"onajimi {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="serve SMTP until SIGTERM (SIGHUP reloads)")
    _config_option(run)
    run.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)

    check = sub.add_parser("check", help="validate config and list files; print what would run")
    _config_option(check)

    explain = sub.add_parser("explain", help="the decision the gateway would make now, and why")
    _config_option(explain)
    explain.add_argument("ip", help="client address")
    explain.add_argument(
        "--name", help="PTR name to assume (forward-confirmed) instead of asking DNS"
    )
    explain.add_argument("--helo", help="HELO name the client would give")
    explain.add_argument("--sender", help="envelope sender ('' for the null sender)")
    explain.add_argument("--rcpt", help="envelope recipient")
    explain.add_argument(
        "--size", type=int, help="SIZE declared at MAIL (with sender and recipient: the message)"
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")

    for role in ("allow", "deny"):
        lst = sub.add_parser(role, help=f"dynamic {role} entries in the state store")
        actions = lst.add_subparsers(dest="action", required=True, parser_class=_Parser)
        add = actions.add_parser("add", help=f"add an {role} entry")
        _config_option(add)
        add.add_argument("entry", help="IP, CIDR, domain or /regex/")
        add.add_argument("--ttl", help="lifetime: seconds or 90m, 12h, 7d, 2w (default: permanent)")
        add.add_argument("--comment", help="why (shown by list)")
        remove = actions.add_parser("remove", help=f"remove an {role} entry")
        _config_option(remove)
        remove.add_argument("entry")
        listing = actions.add_parser("list", help=f"show {role} entries")
        _config_option(listing)
        listing.add_argument("--json", action="store_true")
        lst.set_defaults(list=role)

    candidates = sub.add_parser("candidates", help="deferred keys that came back: the rescue list")
    _config_option(candidates)
    candidates.add_argument("--min-attempts", type=int, default=2, metavar="N", help="default 2")
    candidates.add_argument("--since", metavar="DURATION", help="only keys seen within, e.g. 7d")
    candidates.add_argument(
        "--impatient", action="store_true", help="the penalty box and keys near it"
    )
    candidates.add_argument("--json", action="store_true")

    export = sub.add_parser(
        "export-blocklist", help="penalty box and deny addresses for a firewall"
    )
    _config_option(export)
    export.add_argument("--format", choices=("plain", "nft", "ipset"), default="plain")

    status = sub.add_parser("status", help="record counts and the store in use")
    _config_option(status)
    status.add_argument("--json", action="store_true")

    simulate = sub.add_parser(
        "simulate", help="what this configuration costs real senders, over simulated days"
    )
    _config_option(simulate)
    simulate.add_argument("--vs", metavar="OTHER.toml", help="a second configuration, side by side")
    simulate.add_argument(
        "--days", type=float, default=7, metavar="N", help="days of mail (default 7)"
    )
    simulate.add_argument(
        "--senders", metavar="FILE", help="TOML: new sender classes, or built-in ones reweighted"
    )
    simulate.add_argument(
        "--seed", type=int, default=1, metavar="N", help="random seed (default 1)"
    )
    simulate.add_argument("--json", action="store_true", help="machine-readable output")
    simulate.add_argument(
        "--plot", metavar="FILE.svg", help="the delay distribution per class, as an SVG"
    )
    replay = sub.add_parser(
        "replay", help="what this configuration would have done to the mail in a log"
    )
    _config_option(replay)
    replay.add_argument("log", metavar="LOG", help="the log file ('-': standard input)")
    replay.add_argument(
        "--format",
        choices=("postfix", "onajimi"),
        default="postfix",
        help="a Postfix maillog (default) or Onajimi's decision log",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


# Each command's module, imported only when that command runs: `onajimi run` must choose
# its metrics directory before anything imports prometheus_client (see cli/run.py).
_MODULES = {
    "run": "run",
    "check": "check",
    "explain": "explain",
    "allow": "entries",
    "deny": "entries",
    "candidates": "candidates",
    "export-blocklist": "blocklist",
    "status": "status",
    "simulate": "simulate",
    "replay": "replay",
}


def _dispatch(args: argparse.Namespace) -> int:
    module = _MODULES.get(args.command)
    if module is None:
        raise AssertionError(f"unhandled command {args.command}")
    return importlib.import_module(f"gateway.cli.{module}").run(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (UserError, StoreError) as exc:
        print(f"onajimi: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
