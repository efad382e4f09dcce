"""Message content checks before anything reaches the backend.

A bare CR or a bare LF in DATA is how SMTP smuggling works: two servers disagreeing on
where a message ends (`\\n.\\n`, `\\r.\\r`, `\\n.\\r\\n`, `\\r\\n.\\n`) lets one message
carry a second, forged one. The gateway ends DATA only at `\\r\\n.\\r\\n`, and then either
refuses a message containing bare line ends (the default) or rewrites each of them to
CRLF, after which the backend sees an ordinary, dot-stuffed line.
"""

from __future__ import annotations

import re

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def has_bare_newline(data: bytes) -> bool:
    """True if `data` holds a CR not followed by LF, or an LF not preceded by CR."""
    crlf = data.count(b"\r\n")
    return data.count(b"\n") != crlf or data.count(b"\r") != crlf


def normalise_newlines(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF."""
    return _LINE_ENDS.sub(b"\r\n", data)
