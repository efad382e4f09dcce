"""The Received: header the gateway prepends (RFC 5321 section 4.4, RFC 3848 protocols).

    Received: from pc.example (p1234-ip45.dyn.example.jp [192.0.2.9])
            (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
            by mx.example.com (Onajimi) with ESMTPS id 3f2a.1
            for <bob@example.com>; Sun, 22 Nov 2026 08:11:00 +0000

Built from strings, not the email package: it is on the path of every message. Values
that came from the client are reduced to printable ASCII so the header cannot be broken.
"""

from __future__ import annotations

import re
import time

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rfc5322_date(when: float) -> str:
    """`Sun, 22 Nov 2026 08:11:00 +0000`, independent of the process locale."""
    t = time.localtime(when)
    offset = t.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset), 60)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {sign}{hours:02d}{minutes:02d}"
    )


# Anything but printable ASCII, and the characters that would confuse parsers.
_UNSAFE = re.compile(r"[^\x21-\x7e]|[()\[\]\\;]")
_UNSAFE_OR_SPACE = re.compile(r"[^\x20-\x7e]|[()\[\]\\;]")


def _clean(text: str, limit: int = 255, allow_space: bool = False) -> str:
    """Printable ASCII without parentheses or brackets, each other character as `?`."""
    return (_UNSAFE_OR_SPACE if allow_space else _UNSAFE).sub("?", text[:limit])


def protocol_name(esmtp: bool, tls: bool, utf8: bool, authenticated: bool = False) -> str:
    """RFC 3848 / RFC 6531 `with` keyword: ESMTP, then S for TLS, A for AUTH."""
    suffix = ("S" if tls else "") + ("A" if authenticated else "")
    if utf8:
        return "UTF8SMTP" + suffix
    if esmtp or authenticated:  # AUTH is an extension: an authenticated session is ESMTP
        return "ESMTP" + suffix
    return "SMTPS" if tls else "SMTP"


def received_header(
    *,
    helo: str,
    ptr: str | None,
    address: str,
    protocol: str,
    tls: str | None,
    hostname: str,
    transaction_id: str,
    recipient: str | None,
    when: float,
) -> bytes:
    literal = f"IPv6:{address}" if ":" in address else address
    lines = [f"Received: from {_clean(helo) or 'unknown'} ({_clean(ptr or 'unknown')} [{literal}])"]
    if tls:
        lines.append(f"\t({_clean(tls, 200, allow_space=True)})")
    lines.append(f"\tby {hostname} (Onajimi) with {protocol} id {transaction_id}")
    if recipient is not None:
        lines.append(f"\tfor <{_clean(recipient)}>; {rfc5322_date(when)}")
    else:
        lines[-1] += f";\r\n\t{rfc5322_date(when)}"
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
