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

    def defer(self, reason: str, wait: float | None = None, kind: str = "") -> Reply:
        """450 for a deferred attempt: `defer_text` for a first contact, fixed words for
        the other kinds of attempt (`kind`, deferral.AttemptKind's value: a new message, a copy,
        a retry before the delay...), and when a retry of the message can pass, if
        `wait` is given."""
        until = human_duration(wait) if wait is not None and wait > 0 else ""
        return _deferral(self, reason, _ATTEMPTS.get(kind, ""), until)

    def penalty(self, remaining: float, reason: str = "impatient") -> Reply:
        why = _PENALISED_FOR.get(reason, _PENALISED_FOR["impatient"])
        text = f"{why}; come back in {human_duration(remaining)}"
        return Reply(421, "4.7.0", self._with_help(text))


# What an attempt that is not a first contact is told instead of `defer_text` (which
# speaks of one), by deferral.AttemptKind value. Every one of them asks for the same message
# again: only its retry, after the delay, passes.
_ATTEMPTS = {
    "new_message": "a new message from this host",
    "copy": "another copy of a deferred message",
    "look_alike": "another copy of a deferred message",
    "expired": "a retry too late to count, so a new first try",
    "mx_fallback": "retried before the delay",
    "patient_retry": "retried before the delay",
    "early_retry": "retried too soon",
    "pace": "too many sessions before the delay",
}
_PENALISED_FOR = {
    "impatient": "Too many retries before the delay",
    "auth_failures": "Too many failed authentications",
    "autoban_relay": "Too many relay attempts",
    "autoban_probe": "Too many unknown recipients",
    "autoban_loiter": "Too many idle sessions",
}


@functools.lru_cache(maxsize=1024)
def _deferral(wording: Wording, reason: str, attempt: str, until: str) -> Reply:
    """The same few texts all day long (every first contact gets one of them)."""
    if attempt:
        text = f"Try again later: {attempt} ({reason})"
    else:
        text = wording.defer_text.format(reason=reason)
    if until:
        text = f"{text}; retry in {until} at the earliest"
    return Reply(450, "4.7.1", wording._with_help(text))


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


# -- what the SMTP session says itself (smtp/session.py and its adapter) ------------------
# Replies that name the gateway take its `listen.hostname`, as Postfix's do.
OK = "250 2.0.0 Ok"
SENDER_OK = "250 2.1.0 Ok"
BYE = "221 2.0.0 Bye"
CANNOT_VRFY = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
HELO_SYNTAX = "501 Syntax: HELO hostname"
EHLO_SYNTAX = "501 Syntax: EHLO hostname"
NO_AUTH = "502 5.5.1 Error: AUTH not available on this port"
AUTH_NEEDS_TLS = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_NEEDS_EHLO = "503 5.5.1 Error: send EHLO first"
AUTH_IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
AUTH_AGAIN = "503 5.5.1 Error: already authenticated"
AUTH_MECHANISM = "504 5.5.4 Unrecognized authentication type"
AUTH_SYNTAX = "501 5.5.2 Error: invalid SASL response (not base64)"
AUTH_USAGE = "501 5.5.4 Syntax: AUTH mechanism"
TLS_ALREADY = "554 5.5.1 Error: TLS already active"
DATA_NEEDS_HELO = "503 Error: send HELO first"  # aiosmtpd's words (the adapter adds 5.5.1)
DATA_NEEDS_RCPT = "503 Error: need RCPT command"
DATA_SYNTAX = "501 Syntax: DATA"
LINE_TOO_LONG = "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MUCH_DATA = "552 5.3.4 Error: Too much mail data"
NO_EXPN = "502 5.5.1 Error: EXPN not available"
SAY_QUIT = "503 5.5.1 Error: access denied, say QUIT"  # after a 554 greeting
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"
STORE_TEMPFAIL = "451 4.3.0 Temporary local problem, try again later"
INTERNAL_ERROR = "451 4.3.0 Internal error, try again later"
CONNECTION_LOST = "421 4.4.2 Connection lost"  # never seen: the client has gone
BACKEND_ERROR_TEXT = "451 4.4.1 Delivery temporarily unavailable, try again later"
BARE_NEWLINE = "550 5.5.2 Message contains bare CR or LF characters (see RFC 5321 2.3.8)"
NUL = "550 5.6.0 Message contains NUL characters"
LIMIT_REFUSALS = {  # by Limit, at the greeting
    "connections": "too many connections",
    "client_connections": "too many connections from your address",
}


def limit_refusal(hostname: str, limit: str) -> str:
    return f"421 4.7.0 {hostname} Error: {LIMIT_REFUSALS[limit]}, try again later"


def timed_out(hostname: str) -> str:
    return f"421 4.4.2 {hostname} Error: timeout exceeded"


def too_much_junk(hostname: str) -> str:
    return f"421 4.7.0 {hostname} Error: too many commands that do nothing"


def internal_error_before_greeting(hostname: str) -> str:
    return f"421 4.3.0 {hostname} Internal error, try again later"


def shutting_down(hostname: str) -> str:
    return f"421 4.3.2 {hostname} shutting down"


def pregreet_teaser(hostname: str) -> str:
    """The first line of a two-line greeting: a client that answers it is a pregreeter."""
    return f"220-{hostname} ESMTP"


def dnsbl_refusal(address: str, lists: str) -> Reply:
    """postscreen's words; `lists` as dnsbl.reply_names shows them."""
    return Reply(554, "5.7.1", f"Service unavailable; client [{address}] blocked using {lists}")


def too_many_auth_failures(hostname: str) -> str:
    return f"421 4.7.0 {hostname} Error: too many failed authentications"


def pregreet_refusal(hostname: str) -> str:
    return f"521 5.5.1 {hostname} Error: talking before the greeting was complete"


def proxy_refused(hostname: str, why: str) -> str:
    return f"421 4.3.0 {hostname} Error: {why}"
