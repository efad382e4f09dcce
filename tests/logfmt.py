"""A strict logfmt reader for tests: key=value pairs, values bare or double-quoted with
backslash escapes, and bare words (flags; the first one is the event). It raises on
anything else, and on a key given twice (a forged field), so a broken line cannot pass."""

from __future__ import annotations

_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def parse(line: str) -> tuple[str, dict[str, str]]:
    """`event k=v k="v w"` -> ("event", {"k": ...}); the event word is optional."""
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
            i += 1
            out = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quoted value")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    escape = line[i + 1]
                    if escape == "x":
                        out.append(chr(int(line[i + 2 : i + 4], 16)))
                        i += 4
                        continue
                    out.append(_UNESCAPE[escape])
                    i += 2
                    continue
                out.append(c)
                i += 1
            value = "".join(out)
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
