"""The timestamps of a log line, as epoch seconds.

Two shapes:

* syslog's `Dec  1 10:00:00` (RFC 3164): local time, no year. The first one is taken in
  the current year, or in the last one if that would put it more than a day in the
  future (a December log read in January). After that the year follows the log: a
  stamp more than half a year before the latest one seen has crossed New Year (`Dec 31`
  then `Jan  1`); one more than half a year after it is a late line from the old year
  (two hosts' logs merged across midnight), and changes nothing for the lines after it.
* RFC 3339, as Postfix's `maillog_file`, rsyslog's high-precision template and our own
  lines write it: `2026-12-01T10:00:00.123456+00:00`, `...Z`, `...+0900`; without an
  offset, local time.
"""

from __future__ import annotations

import datetime as dt
import re
import time

_SYSLOG = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)$")
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}
HALF_YEAR = 183 * 86400.0
FUTURE = 86400.0  # how far ahead of now a first syslog stamp may be before it is last year's


class Timestamps:
    """Reads one log's timestamps in order (the year of syslog stamps depends on the
    lines before). `now`: the current time, for the year of the first syslog stamp."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self.year: int | None = None
        self.latest = 0.0

    def read(self, text: str) -> float:
        """Epoch seconds; ValueError when `text` is neither shape."""
        m = _SYSLOG.match(text)
        if m is None:
            return rfc3339(text)
        month = _MONTHS.get(m.group(1))
        if month is None:
            raise ValueError(f"no month {m.group(1)!r}")
        day, hour, minute, second = (int(m.group(i)) for i in range(2, 6))

        def local(year: int) -> float:
            return dt.datetime(year, month, day, hour, minute, second).timestamp()

        if self.year is None:
            self.year = time.localtime(self.now).tm_year
            if local(self.year) > self.now + FUTURE:
                self.year -= 1
            self.latest = local(self.year)
        when = local(self.year)
        if when < self.latest - HALF_YEAR:  # New Year
            self.year += 1
            when = local(self.year)
        elif when > self.latest + HALF_YEAR:  # a late line of the year before
            return local(self.year - 1)
        self.latest = max(self.latest, when)
        return when


def rfc3339(text: str) -> float:
    """`2026-12-01T10:00:00.123456+00:00` (or `Z`, `+0900`, no offset: local time)."""
    if len(text) < 19 or text[10] != "T":
        raise ValueError(f"not a timestamp: {text!r}")
    return dt.datetime.fromisoformat(text).timestamp()
