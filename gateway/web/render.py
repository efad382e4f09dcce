"""The template environment: Jinja2 with autoescaping on for every template, and the few
filters the pages need to write times and durations for people, in English and Japanese.

Autoescaping is the pages' defence against what they echo (an address field full of
HTML comes back as text): no template may mark a value safe, and none does.
"""

from __future__ import annotations

import datetime as dt

import jinja2

from gateway.policy.replies import human_duration

_UNITS = {
    "en": (("day", "days", 86400), ("hour", "hours", 3600), ("minute", "minutes", 60)),
    "ja": (("日", "日", 86400), ("時間", "時間", 3600), ("分", "分", 60)),
}
_SECONDS = {"en": ("second", "seconds"), "ja": ("秒", "秒")}


def duration(seconds: float, lang: str = "en") -> str:
    """`300` -> "5 minutes" / "5 分"; `3600` -> "1 hour"; `86400` -> "24 hours" (as an
    operator says a retry window), `172800` -> "2 days": the largest unit that gives a
    whole number, else rounded in the largest unit that fits."""
    total = max(0, round(seconds))
    units = [(one, many, size) for one, many, size in _UNITS[lang] if total >= size]
    units = [u for u in units if u[2] != 86400 or total >= 2 * 86400]
    for one, many, size in units:
        if total % size == 0:
            return _count(total // size, one, many, lang)
    if units:
        one, many, size = units[0]
        return _count(round(total / size), one, many, lang)
    one, many = _SECONDS[lang]
    return _count(total, one, many, lang)


def _count(n: int, one: str, many: str, lang: str) -> str:
    if lang == "ja":
        return f"{n}{one}"
    return f"{n} {one if n == 1 else many}"


def utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def relative(timestamp: float, now: float, lang: str = "en") -> str:
    """ "in 4m10s" / "4m10s ago" (ja: "4m10s 後" / "4m10s 前")."""
    span = human_duration(abs(timestamp - now))
    if lang == "ja":
        return f"{span}後" if timestamp > now else f"{span}前"
    return f"in {span}" if timestamp > now else f"{span} ago"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.web", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,  # a misspelt name is an error, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.filters["utc"] = utc
    env.filters["relative"] = relative
    env.filters["span"] = human_duration
    return env
