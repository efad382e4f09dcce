"""RFC 3461 xtext: how XCLIENT and XFORWARD attribute values travel on a command line."""

import re

# What stands for itself: printable ASCII but `+` and `=` (RFC 3461 section 4).
_PLAIN = re.compile(r"[!-*,-<>-~]*")


def xtext(value: str) -> str:
    """Encode `+`, `=`, spaces, controls and non-ASCII as `+HH` (bytes of the UTF-8 form).
    Names and addresses are nearly always plain: they go through as they are."""
    if _PLAIN.fullmatch(value):
        return value
    out = []
    for byte in value.encode("utf-8", "surrogateescape"):
        if 33 <= byte <= 126 and byte not in (ord("+"), ord("=")):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)
