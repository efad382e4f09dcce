"""Message content checks before anything reaches the backend.

A bare CR or a bare LF in DATA is how SMTP smuggling works: two servers disagreeing on
where a message ends (`\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n`, `\\r\\n.\\n`) lets one message
carry a second, forged one. So is a NUL next to the dot (`\\r\\n\\x00.\\r\\n`): a backend
that drops NUL bytes sees an end of data there. The gateway ends DATA only at
`\\r\\n.\\r\\n`, and then either refuses a message containing bare line ends or NUL (the
default, `relay.bare_newline = "reject"`) or normalizes it: NUL bytes removed, bare line ends
made CRLF, after which the backend sees ordinary, dot-stuffed lines.
"""

from __future__ import annotations

import re

from gateway.policy.replies import BARE_NEWLINE, NUL
from gateway.policy.values import value
from gateway.policy.vocabulary import BareNewline

NORMALIZED = ("nul", "bare_newline")  # what normalize mode normalizes (a metric label)

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def has_bare_newline(data: bytes) -> bool:
    """True if `data` holds a CR not followed by LF, or an LF not preceded by CR."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


def normalize_newlines(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF."""
    return _LINE_ENDS.sub(b"\r\n", data)


@value
class Screened:
    """What may go to the backend: the content, or the reply that refuses it."""

    content: bytes
    refusal: str | None = None
    normalized: tuple[str, ...] = ()  # what was normalized, among NORMALIZED


def screen_content(data: bytes, mode: BareNewline) -> Screened:
    """`mode` is relay.bare_newline: refuse, or normalize."""
    nul = b"\x00" in data
    bare = has_bare_newline(data)
    if not (nul or bare):
        return Screened(data)
    if mode is BareNewline.REJECT:
        return Screened(data, BARE_NEWLINE if bare else NUL)
    if nul:
        data = data.replace(b"\x00", b"")
        bare = has_bare_newline(data)  # a NUL may have stood between CR and LF
    if bare:
        data = normalize_newlines(data)
    return Screened(data, normalized=("nul",) * nul + ("bare_newline",) * bare)
