"""The strict logfmt reader the tests check log lines with: gateway.logs.read_logfmt
(key=value pairs, values bare or double-quoted with backslash escapes, bare words as
flags, the first one the event; it raises on anything else, and on a key given twice)."""

from __future__ import annotations

from gateway.logs import read_logfmt as parse

__all__ = ["parse"]
