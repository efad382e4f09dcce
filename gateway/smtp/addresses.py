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
