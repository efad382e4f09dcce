"""`onajimi replay LOG`: what this configuration would have done to the mail in a log.

Reads a Postfix maillog (or Onajimi's own decision log, `--format onajimi`; `-` for
standard input, `.gz` read as such) and runs its sessions through the real policy code
with the configuration's settings and list files, on a memory store with the log's
timestamps as the clock (the configured `store.url` is not touched, and no DNS is
asked). See gateway/replay/. A line it cannot read is counted, never fatal; a log it
cannot open or read is one line and status 2.
"""

from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from gateway.cli.common import print_json, settings_from
from gateway.errors import UserError
from gateway.replay import report
from gateway.replay.model import LogRead
from gateway.replay.onajimi import OnajimiReader
from gateway.replay.postfix import PostfixReader
from gateway.replay.replay import replay


@contextmanager
def _opened(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdin
        return
    opener: Any = gzip.open if path.endswith(".gz") else open
    try:
        stream = opener(path, "rt", encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{path}: cannot open the log: {exc.strerror or exc}") from None
    with stream:
        yield stream


def read_log(path: str, format: str) -> LogRead:
    reader = OnajimiReader(path) if format == "onajimi" else PostfixReader(path)
    with _opened(path) as stream:
        try:
            return reader.lines(stream)
        except (OSError, EOFError, zlib.error) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise UserError(f"{path}: cannot read the log: {why}") from None


def run(args: Any) -> int:
    settings = settings_from(args)
    log = read_log(args.log, args.format)
    result = replay(settings, log)
    data = result.as_json(log, args.config)
    if args.json:
        print_json(data)
    else:
        print(report.text(result, data), end="")
    return 0
