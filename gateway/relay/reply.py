"""The backend's replies as values: what the session core mirrors to the client.

Pure (no I/O): the session core (smtp/session.py) classifies and mirrors
these without knowing how they were obtained.
"""

from __future__ import annotations

import re

from gateway.policy.replies import BACKEND_ERROR_TEXT
from gateway.policy.values import value

_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


@value
class BackendReply:
    """A reply as the backend gave it: code and text (lines joined by newlines)."""

    code: int
    text: str

    def as_smtp(self) -> str:
        """The reply as lines for the client: `250-first` ... `250 last`, each line's
        text without control characters (a backend's stray CR must not break a line)."""
        lines = [_CONTROLS.sub("", line) for line in self.text.split("\n")] if self.text else [""]
        out = [f"{self.code}-{line}" for line in lines[:-1]]
        out.append(f"{self.code} {lines[-1]}".rstrip())
        return "\r\n".join(out)

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300


BACKEND_ERROR = BackendReply(451, BACKEND_ERROR_TEXT[4:])  # what a backend error gives
