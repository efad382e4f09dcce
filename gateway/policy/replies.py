"""SMTP replies the policy decides on: code, enhanced status code and text.

The SMTP layer sends them as they are; wording lives here so that `onajimi explain`
prints exactly what a client would receive.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

from gateway.policy.values import value


@value
class Reply:
    code: int
    status: str  # enhanced status code, RFC 3463
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    def with_code(self, code: int) -> Reply:
        return replace(self, code=code)


def human_duration(seconds: float) -> str:
    """`250` -> `4m10s`; what an operator reading a bounce understands at a glance."""
    total = max(0, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass(frozen=True, slots=True)
class Wording:
    """The configurable parts of deferral replies."""

    defer_text: str = "Try again later: first contact from this host ({reason})"
    help_url: str = ""

    def _with_help(self, text: str) -> str:
        return f"{text}, see {self.help_url}" if self.help_url else text

    def defer(self, reason: str, wait: float | None = None) -> Reply:
        if wait is None or wait <= 0:
            return _plain_deferral(self, reason)
        text = self.defer_text.format(reason=reason)
        text = f"{text}; retry in {human_duration(wait)} at the earliest"
        return Reply(450, "4.7.1", self._with_help(text))

    def penalty(self, remaining: float) -> Reply:
        text = f"Too many retries before the delay; come back in {human_duration(remaining)}"
        return Reply(421, "4.7.0", self._with_help(text))


@functools.lru_cache(maxsize=256)
def _plain_deferral(wording: Wording, reason: str) -> Reply:
    """The reply every first contact gets: the same few texts all day long."""
    return Reply(450, "4.7.1", wording._with_help(wording.defer_text.format(reason=reason)))


DNS_TEMPFAIL = Reply(451, "4.4.3", "Temporary DNS failure looking up your address, try again later")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")


def denied(custom: str = "") -> Reply:
    """The deny-list reply; a `554 text` action in the list file supplies the text."""
    text = custom.strip()
    if text[:3].isdigit():
        text = text[3:].strip()
        if text[:1].isdigit() and "." in text.split(" ", 1)[0]:
            text = text.split(" ", 1)[1] if " " in text else ""
    return Reply(554, "5.7.1", text or "Access denied")
