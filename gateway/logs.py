"""Log lines an operator can grep, parse and trust.

One line per decision and per relayed transaction (README "Logs"), as logfmt by
default or JSON with `log.format = "json"`:

    decision session=3f2a client=203.0.113.9 ptr=p1234-ip45.dyn.example.jp helo=pc
        from=<a@b> to=<c@d> action=defer reason=s25r_rule1 key=203.0.113.9 attempt=1

Everything that came from a client (HELO, addresses, PTR names) is quoted so that it
cannot forge a line: no raw CR/LF or control characters ever reach the output, quotes
and backslashes are escaped. `read_logfmt` reads such a line back, strictly (the tests,
and `onajimi replay` of a decision log).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

decision_log = logging.getLogger("onajimi.decision")
relay_log = logging.getLogger("onajimi.relay")
log = logging.getLogger("onajimi")

_PLAIN = re.compile(r"[A-Za-z0-9.\-_:/@<>+\[\]%,]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def logfmt_value(value: Any) -> str:
    """A value as logfmt: bare when it is plain, else quoted with every control escaped."""
    text = "" if value is None else str(value)
    if _PLAIN.fullmatch(text):
        return text
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF:
            out.append(f"\\x{ord(c) & 0xFF:02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def logfmt(event: str, fields: Mapping[str, Any]) -> str:
    return event + "".join(f" {key}={logfmt_value(value)}" for key, value in fields.items())


_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def read_logfmt(line: str) -> tuple[str, dict[str, str]]:
    """`event k=v k="v w"` -> ("event", {"k": ...}); the event word is optional. Values are
    bare or double-quoted with backslash escapes; bare words are flags, the first one the
    event. Raises ValueError on anything else, and on a key given twice (a forged field),
    so a broken line cannot pass."""
    if "\n" in line or "\r" in line:
        raise ValueError("a log line must not contain a raw line break")
    fields: dict[str, str] = {}
    event = ""
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        start = i
        while i < n and line[i] not in "= ":
            i += 1
        key = line[start:i]
        if i >= n or line[i] == " ":
            if event:
                raise ValueError(f"second bare word {key!r}")
            event = key
            continue
        i += 1  # '='
        if i < n and line[i] == '"':
            value, i = _quoted(line, i + 1)
        else:
            start = i
            while i < n and line[i] != " ":
                i += 1
            value = line[start:i]
            if '"' in value:
                raise ValueError(f"unquoted value with a quote: {value!r}")
        if key in fields:
            raise ValueError(f"duplicate key {key!r}: a forged field?")
        fields[key] = value
    return event, fields


def _quoted(line: str, i: int) -> tuple[str, int]:
    """The quoted value starting at `i` (after its opening quote), and where it ends."""
    out = []
    n = len(line)
    while True:
        if i >= n:
            raise ValueError("unterminated quoted value")
        c = line[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            escape = line[i + 1 : i + 2]
            if escape == "x":
                out.append(chr(int(line[i + 2 : i + 4], 16)))
                i += 4
                continue
            if escape not in _UNESCAPE:
                raise ValueError(f"unknown escape \\{escape}")
            out.append(_UNESCAPE[escape])
            i += 2
            continue
        out.append(c)
        i += 1


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    # Lone surrogates (undecodable client bytes) would make json.dumps produce invalid UTF-8.
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


class EventFormatter:
    """Turns (event, fields) into the configured line format."""

    def __init__(self, style: str = "logfmt") -> None:
        self.style = style

    def format(self, event: str, fields: Mapping[str, Any]) -> str:
        if self.style == "json":
            payload = {"event": event, **{k: _json_safe(v) for k, v in fields.items()}}
            return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        return logfmt(event, fields)


_formatter = EventFormatter()


def emit(
    logger: logging.Logger, event: str, fields: Mapping[str, Any], level: int = logging.INFO
) -> None:
    """One event line. The record is made directly: `logger.info` would also look up the
    caller's file and line, which no line of ours shows."""
    if logger.isEnabledFor(level):
        message = _formatter.format(event, fields)
        logger.handle(logger.makeRecord(logger.name, level, "", 0, message, None, None))


class LineHandler(logging.StreamHandler):
    """Writes the lines of one event-loop round together.

    Under load one round of the loop decides for dozens of sessions; a write and a flush
    per line is a system call per decision. On the loop's thread a line waits until the
    loop has run the callbacks that were ready with it (`call_soon`), so an idle gateway
    still logs at once; on any other thread, or with no loop running, it is written
    straight away. `flush` (called by logging at exit) writes whatever is pending.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # where a write is scheduled

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._pending.append(line)
        try:
            loop = asyncio.get_running_loop()  # only ever this thread's own loop
        except RuntimeError:
            self.flush()
            return
        if self._loop is not loop:  # nothing scheduled here (or on a loop since closed)
            if self._loop is not None:
                self.flush()
            self._loop = loop
            loop.call_soon(self._write_round)

    def _write_round(self) -> None:
        with self.lock:
            self._loop = None
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if self._pending:
                text = "\n".join(self._pending) + "\n"
                self._pending.clear()
                try:
                    self.stream.write(text)
                except Exception:  # a closed or broken stream must not end a session
                    return
            super().flush()


class _LineFormatter(logging.Formatter):
    """`ts=... level=... msg` for our own events; other records get their text quoted."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts = f"{ts}.{int(record.msecs):03d}Z"
        message = record.getMessage()
        if record.name in ("onajimi.decision", "onajimi.relay"):
            if self.style == "json":
                return f'{{"ts":"{ts}",' + message[1:]
            return f"ts={ts} {message}"
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if self.style == "json":
            return json.dumps(
                {
                    "ts": ts,
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "msg": message,
                },
                ensure_ascii=False,
            )
        level = record.levelname.lower()
        return f"ts={ts} level={level} logger={record.name} msg={logfmt_value(message)}"


def configure(level: str = "info", style: str = "logfmt", stream=None) -> None:
    """Set the process's log level and line format (called at start and on reload)."""
    _formatter.style = style
    handler = LineHandler(stream or sys.stderr)
    handler.setFormatter(_LineFormatter(style))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # No line shows the thread, process or multiprocessing names: not worth a lookup each.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # aiosmtpd logs every command at INFO and every bot typo at WARNING ("mail.log"):
    # far too chatty for a port 25. Our own lines say what matters.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
