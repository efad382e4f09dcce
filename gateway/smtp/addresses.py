"""The common reverse- and forward-path, read without the email package.

aiosmtpd reads every MAIL and RCPT argument with the email package's RFC 5322 header
parser (~18 µs, and it defines a new typing.Protocol class on every call, which costs
as much again). Nearly every argument on port 25 is a plain `<local@domain>` or `<>`;
those are read here by one regular expression, with exactly the parser's results
(tests/test_smtp_addresses.py compares the two on generated input). Anything else
(quoted local parts, address literals, comments, UTF-8, source routes) returns None
and takes aiosmtpd's way.
"""

from __future__ import annotations

import re

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
# `<addr>` or `<>`, then the end or spaces and parameters. "<a@b>x" and a comment after
# the path are left to the parser, which has its own opinion about them.
_PLAIN_PATH = re.compile(rf"<(?:({_DOT_ATOM}@{_DOT_ATOM})|)>(?=$|[ \t]+(?:$|[^ \t(]))")


def plain_path(argument: str) -> tuple[str, str] | None:
    """(address, the rest) as aiosmtpd's `_getaddr` would return them, or None when the
    argument is not plain. The null path reads as "<>", as aiosmtpd has it."""
    match = _PLAIN_PATH.match(argument)
    if match is None:
        return None
    address = match.group(1)
    rest = argument[match.end() :]
    if address is None:
        return "<>", rest  # the parser leaves the rest of a null path unstripped
    return address, rest.lstrip(" \t")


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def path_fault(argument: str, address: str) -> str | None:
    """Why a path the parser read is still no path (RFC 5321 4.1.2, 4.5.3.1), or None.

    The email package's parser forgives what SMTP does not: a space inside the angle
    brackets (`<bob@example.com >`), control characters (NUL), domains longer than DNS
    allows (a label of 63 octets, a name of 255).
    """
    if _CONTROLS.search(argument):
        return "a control character"
    text = argument.lstrip()
    if text.startswith("<"):
        inside = text[1 : text.find(">")] if ">" in text else text[1:]
        if inside != inside.strip():
            return "a space inside the angle brackets"
    domain = address.rpartition("@")[2]
    literal = domain.startswith("[")
    if not literal and (len(domain) > 255 or any(len(part) > 63 for part in domain.split("."))):
        return "a domain longer than DNS allows"
    return None


def helo_fault(name: str) -> str | None:
    """Why a HELO/EHLO argument is no name at all, or None: control characters and
    lengths past DNS's; anything else real MTAs say is taken as it is."""
    if _CONTROLS.search(name):
        return "a control character"
    if len(name) > 255:
        return "longer than a domain name can be"
    return None
