"""`--senders FILE`: define sender classes, or reweight the built-in ones. TOML:

    builtins = true               # false: only the classes this file defines
    neighbours = 1                # single hosts (MTAs, bots) packed this many to a /24

    [senders]                     # class -> number of senders (0 takes a class out)
    "postfix/s25r" = 100
    "bot-return/s25r" = 0

    [[class]]                     # a new class (or, under a built-in's name, a new version)
    name = "bank/s25r"
    like = "postfix/s25r"         # the built-in class it starts from (required)
    rdns = "s25r"                 # clean | s25r | none | real
    senders = 20
    domain = "bank.example"       # {domain} in the PTR templates
    names = { s25r = "out{n}-{c}-{d}.{domain}" }
    bursts_per_day = 2.0          # or: bursts = 1 (that many, at random times)
    at = [0, 3600]                # or: fixed burst times (seconds from the start)
    backlog = [1, 5]              # messages per burst
    parallel = 3                  # sessions at once
    spacing = 1.0                 # seconds between two sessions of one lane
    recipients = [1, 2]           # recipients of ours per message
    mx_fallback = true            # tries the backup MX at once
    fallback_after = 1.0
    callback = 0.1                # share of messages preceded by a callback probe
    pregreet = 0.0                # share of sessions talking before the greeting
    bot = false
    spf = "host"                  # its domain's SPF: none | host | networks | plus_all
    batv = false                  # a new BATV tag (prvs=) on the sender at every try
    verp = false                  # a mailing list: one message per recipient, VERP sender
    pool = { addresses = 8, networks = 2, shared = false, rotate = "random" }
    retry = { kind = "postfix", min_backoff = 300, queue_run = 300, lifetime = "5d" }

Retry kinds and their keys: never; postfix (min_backoff, max_backoff, queue_run,
lifetime); exim (rules = "F,2h,15m; G,16h,1h,1.5; F,4d,6h", queue_run); interval (low,
high, factor, cap, lifetime, tries). Times are seconds, or Exim-style text ("15m",
"2h", "5d"). Keys a retry table leaves out come from the `like` class when the kind is
the same, else from the kind's defaults. Any mistake is one line naming the file and
the key (UserError: the CLI prints it and exits 2).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gateway.errors import UserError
from gateway.simulation.retry import (
    EximRetry,
    IntervalRetry,
    Never,
    PostfixRetry,
    Retry,
    RetryKind,
    parse_exim_rules,
    parse_time,
)
from gateway.simulation.senders import Naming, Pool, Rotate, SenderClass, Spf, builtin_classes

PLACEHOLDERS = dict(a=10, b=0, c=0, d=1, n=0, domain="sender.example", isp="isp0.example")


@dataclass(frozen=True, slots=True)
class Population:
    """What a run simulates: the classes in report order, and how single hosts share /24s."""

    classes: list[SenderClass]
    neighbours: int = 1


class SendersError(UserError):
    """A `--senders` file that cannot be used."""


class _Bad(ValueError):
    """A value is wrong; the caller adds the file and key."""


def load_population(path: Path | None) -> Population:
    """The classes to simulate: the built-in population, changed by the file if any."""
    classes = builtin_classes()
    if path is None:
        return Population(classes)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SendersError(f"{where}: senders file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SendersError(f"{where}: cannot read senders file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SendersError(f"{where}: invalid TOML: {exc}") from None
    return apply(raw, classes, where)


def apply(raw: dict[str, Any], builtins: list[SenderClass], where: str) -> Population:
    unknown = set(raw) - {"builtins", "neighbours", "senders", "class"}
    if unknown:
        raise SendersError(
            f"{where}: {sorted(unknown)[0]}: unknown key (builtins, neighbours, senders, class)"
        )
    keep = raw.get("builtins", True)
    if not isinstance(keep, bool):
        raise SendersError(f"{where}: builtins: must be true or false, got {keep!r}")
    neighbours = raw.get("neighbours", 1)
    if (
        isinstance(neighbours, bool)
        or not isinstance(neighbours, int)
        or not 1 <= neighbours <= 254
    ):
        raise SendersError(f"{where}: neighbours: must be a whole number from 1 to 254")
    known = {c.name: c for c in builtins}
    order = [c.name for c in builtins] if keep else []
    chosen = dict(known) if keep else {}
    tables = raw.get("class", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise SendersError(f"{where}: class: must be tables ([[class]])")
    seen: set[str] = set()
    for i, table in enumerate(tables):
        label = f"{where}: class[{i}]"
        try:
            cls = _class(table, known)
        except _Bad as exc:
            name = table.get("name")
            shown = f" ({name})" if isinstance(name, str) else ""
            raise SendersError(f"{label}{shown}.{exc}") from None
        if cls.name in seen:
            raise SendersError(f"{label}.name: {cls.name!r} is defined twice")
        seen.add(cls.name)
        if cls.name not in chosen:
            order.append(cls.name)
        chosen[cls.name] = cls
    counts = raw.get("senders", {})
    if not isinstance(counts, dict):
        raise SendersError(f"{where}: senders: must be a table ([senders])")
    for name, count in counts.items():
        if name not in chosen:
            raise SendersError(f"{where}: senders.{name}: no such class")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise SendersError(f"{where}: senders.{name}: must be a whole number >= 0")
        chosen[name] = replace(chosen[name], senders=count)
    result = [chosen[name] for name in order]
    if not any(c.senders for c in result):
        raise SendersError(f"{where}: no class has any senders")
    return Population(result, neighbours)


# -- one [[class]] table -----------------------------------------------------------------
SIMPLE = {
    "senders": "count",
    "domain": "text",
    "bursts_per_day": "rate",
    "bursts": "count",
    "at": "times",
    "backlog": "range",
    "parallel": "positive",
    "spacing": "seconds",
    "recipients": "range",
    "mx_fallback": "bool",
    "fallback_after": "seconds",
    "callback": "share",
    "pregreet": "share",
    "bot": "bool",
    "batv": "bool",
    "verp": "bool",
}
KEYS = {"name", "like", "rdns", "names", "pool", "retry", "spf", *SIMPLE}


def _class(table: dict[str, Any], known: dict[str, SenderClass]) -> SenderClass:
    for key in table:
        if key not in KEYS:
            raise _Bad(f"{key}: unknown key")
    name = table.get("name")
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise _Bad("name: required, a word like family/variant")
    like = table.get("like")
    if like not in known:
        raise _Bad(f"like: must name a built-in class (e.g. postfix/s25r), got {like!r}")
    base = known[like]
    changes: dict[str, Any] = {"name": name, "family": name.split("/", 1)[0]}
    for key, kind in SIMPLE.items():
        if key in table:
            changes[key] = _value(key, kind, table[key])
    if "rdns" in table:
        try:
            changes["naming"] = Naming(table["rdns"])
        except ValueError:
            raise _Bad("rdns: must be one of clean, s25r, none, real") from None
    if "spf" in table:
        try:
            changes["spf"] = Spf(table["spf"])
        except ValueError:
            raise _Bad("spf: must be one of none, host, networks, plus_all") from None
    names = dict(base.names)
    if "names" in table:
        names.update(_names(table["names"]))
    changes["names"] = names
    if "pool" in table:
        changes["pool"] = _pool(table["pool"], base.pool)
    if "retry" in table:
        changes["retry"] = _retry(table["retry"], base.retry)
    cls = replace(base, **changes)
    if cls.naming is not Naming.NONE and cls.naming not in cls.names:
        raise _Bad(f"names: no {cls.naming.value} template for rdns = {cls.naming.value!r}")
    if cls.pool.rotate is Rotate.SEQUENTIAL and cls.pool.shared:
        raise _Bad("pool.rotate: sequential needs a pool of its own (shared = false)")
    return cls


def _value(key: str, kind: str, value: Any) -> Any:
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"{key}: must be true or false")
        return value
    if kind == "text":
        if not isinstance(value, str) or not value or " " in value:
            raise _Bad(f"{key}: must be a domain name")
        return value.lower()
    if kind == "range":
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 1 <= value[0] <= value[1]
        ):
            raise _Bad(f"{key}: must be [low, high], whole numbers with 1 <= low <= high")
        return (value[0], value[1])
    if kind == "times":
        if not isinstance(value, list):
            raise _Bad(f"{key}: must be a list of times")
        return tuple(sorted(_seconds(key, v) for v in value))
    if kind in ("count", "positive"):
        if isinstance(value, bool) or not isinstance(value, int) or value < (kind == "positive"):
            least = 1 if kind == "positive" else 0
            raise _Bad(f"{key}: must be a whole number >= {least}")
        return value
    number = _number(key, value) if kind in ("rate", "share") else _seconds(key, value)
    if kind == "share" and not 0 <= number <= 1:
        raise _Bad(f"{key}: must be between 0 and 1")
    return number


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Bad(f"{key}: must be a number >= 0")
    if not math.isfinite(value):
        raise _Bad(f"{key}: must be finite")
    return float(value)


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError as exc:
            raise _Bad(f"{key}: {exc}") from None
    return _number(key, value)


def _names(table: Any) -> dict[Naming, str]:
    if not isinstance(table, dict):
        raise _Bad("names: must be a table of templates by rdns variant")
    out = {}
    for key, template in table.items():
        try:
            naming = Naming(key)
        except ValueError:
            raise _Bad(f"names.{key}: not a variant (clean, s25r, real)") from None
        if naming is Naming.NONE or not isinstance(template, str):
            raise _Bad(f"names.{key}: must be a PTR name template")
        try:
            template.format(**PLACEHOLDERS)
        except (KeyError, IndexError, ValueError) as exc:
            raise _Bad(
                f"names.{key}: bad template ({exc}); use {{a}} {{b}} {{c}} {{d}} {{n}} "
                "{domain} {isp}"
            ) from None
        out[naming] = template
    return out


def _pool(table: Any, base: Pool) -> Pool:
    if not isinstance(table, dict):
        raise _Bad("pool: must be a table")
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("addresses", "networks"):
            changes[key] = _value(f"pool.{key}", "positive", value)
        elif key == "shared":
            changes[key] = _value("pool.shared", "bool", value)
        elif key == "rotate":
            try:
                changes[key] = Rotate(value)
            except ValueError:
                raise _Bad("pool.rotate: must be fixed, random or sequential") from None
        else:
            raise _Bad(f"pool.{key}: unknown key (addresses, networks, shared, rotate)")
    pool = replace(base, **changes)
    if pool.addresses > 254 * pool.networks:
        raise _Bad("pool.addresses: at most 254 per network")
    return pool


_RETRY_TYPES: dict[RetryKind, type] = {
    RetryKind.NEVER: Never,
    RetryKind.POSTFIX: PostfixRetry,
    RetryKind.EXIM: EximRetry,
    RetryKind.INTERVAL: IntervalRetry,
}


def _retry(table: Any, base: Retry) -> Retry:
    if not isinstance(table, dict):
        raise _Bad("retry: must be a table")
    try:
        kind = RetryKind(table.get("kind", base.kind))
    except ValueError:
        raise _Bad("retry.kind: must be one of never, postfix, exim, interval") from None
    cls = _RETRY_TYPES[kind]
    allowed = {f.name for f in fields(cls)} - {"kind"}
    if kind in (RetryKind.NEVER, RetryKind.INTERVAL):  # retry timers, not queue runs
        allowed.discard("queue_run")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "kind":
            continue
        if key not in allowed:
            raise _Bad(f"retry.{key}: not a setting of kind {kind.value!r}")
        if key == "rules":
            if not isinstance(value, str):
                raise _Bad("retry.rules: must be Exim retry rules as text")
            try:
                values[key] = parse_exim_rules(value)
            except ValueError as exc:
                raise _Bad(f"retry.rules: {exc}") from None
        elif key == "tries":
            values[key] = _value("retry.tries", "count", value)
        elif key == "factor":
            values[key] = _number("retry.factor", value)
            if values[key] < 1:
                raise _Bad("retry.factor: must be at least 1")
        else:
            values[key] = _seconds(f"retry.{key}", value)
    if base.kind is kind:
        retry = replace(base, **values)
    elif kind is RetryKind.INTERVAL and not {"low", "high"} <= values.keys():
        raise _Bad("retry: kind 'interval' needs low and high")
    else:
        retry = cls(**values)
    if isinstance(retry, IntervalRetry) and retry.high < retry.low:
        raise _Bad("retry.high: must not be below retry.low")
    return retry
