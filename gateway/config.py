"""`gateway.toml` -> typed, immutable settings, or one error line naming the key.

Each setting is declared once, below, with its default (as it would be written in TOML)
and its parser; the defaults go through the same parsers as the file, so the shipped
`conf/gateway.toml` and the code cannot disagree silently (a test compares them).
Relative paths are taken from the directory of the configuration file.
"""

from __future__ import annotations

import ipaddress
import logging
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.policy.dnsbl import parse_site
from gateway.policy.net import IPNetwork
from gateway.policy.vocabulary import (
    BareNewline,
    DeferMode,
    DnsblAction,
    KeyMode,
    OnError,
    PregreetAction,
    PromoteOn,
    SuspectAction,
)

DEFAULT_CONFIG = Path("conf/gateway.toml")


@dataclass(frozen=True, slots=True)
class Context:
    base_dir: Path


Parser = Callable[[Any, Context], Any]


class _Invalid(ValueError):
    """A value is wrong; the loader adds the file and key to the message."""


def _setting(default: Any, parse: Parser, *, required: bool = False) -> Any:
    return field(metadata={"default": default, "parse": parse, "required": required})


# -- value parsers ------------------------------------------------------------------------


def boolean(value: Any, ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")
    return value


def integer(lo: int | None = None, hi: int | None = None) -> Parser:
    def parse(value: Any, ctx: Context) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"must be a whole number, got {value!r}")
        if lo is not None and value < lo:
            raise _Invalid(f"must be at least {lo}, got {value}")
        if hi is not None and value > hi:
            raise _Invalid(f"must be at most {hi}, got {value}")
        return value

    return parse


def seconds(*, positive: bool = False) -> Parser:
    def parse(value: Any, ctx: Context) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"must be a number of seconds, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise _Invalid(
                f"must be {'more than' if positive else 'at least'} 0 seconds, got {value}"
            )
        return float(value)

    return parse


def per_second(value: Any, ctx: Context) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be a number per second, got {value!r}")
    if value < 0:
        raise _Invalid(f"must be at least 0, got {value}")
    return float(value)


def share(value: Any, ctx: Context) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be a share between 0 and 1, got {value!r}")
    if not 0 < value <= 1:
        raise _Invalid(f"must be more than 0 and at most 1, got {value}")
    return float(value)


def text(*, nonempty: bool = False) -> Parser:
    def parse(value: Any, ctx: Context) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"must be a string, got {value!r}")
        if "\r" in value or "\n" in value:
            raise _Invalid("must be a single line")
        if nonempty and not value.strip():
            raise _Invalid("must not be empty")
        return value

    return parse


def choice(*options: str) -> Parser:
    def parse(value: Any, ctx: Context) -> str:
        if value not in options:
            raise _Invalid(f"must be one of {', '.join(repr(o) for o in options)}, got {value!r}")
        return value

    return parse


def one_of(words: type[StrEnum]) -> Parser:
    """A choice among an enum's words (policy/vocabulary.py): the config says them as the
    logs and metrics do (gateway/glossary.py)."""
    return choice(*(word.value for word in words))


def list_of(item: Parser, *, nonempty: bool = False) -> Parser:
    def parse(value: Any, ctx: Context) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"must be a list, got {value!r}")
        if nonempty and not value:
            raise _Invalid("must not be empty")
        result = []
        for i, element in enumerate(value):
            try:
                result.append(item(element, ctx))
            except _Invalid as exc:
                raise _Invalid(f"[{i}]: {exc}") from None
        return tuple(result)

    return parse


def network(value: Any, ctx: Context) -> IPNetwork:
    if not isinstance(value, str):
        raise _Invalid(f"must be a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise _Invalid(f"{value!r} is not a network: {exc}") from None


@dataclass(frozen=True, slots=True)
class HostPort:
    """A host and port, written `HOST:PORT` or `[IPv6]:PORT`."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Parse `HOST:PORT`, `[v6]:PORT`, and (with a default port) `HOST`, `v6`, `[v6]`."""
    text_value = value.strip()
    if text_value.startswith("["):
        host, sep, rest = text_value[1:].partition("]")
        if not sep:
            raise _Invalid(f"{value!r}: missing ']'")
        if not rest:
            port_text = None
        elif rest.startswith(":"):
            port_text = rest[1:]
        else:
            raise _Invalid(f"{value!r}: expected ':PORT' after ']'")
    elif text_value.count(":") == 1:
        host, _, port_text = text_value.partition(":")
    elif ":" in text_value:  # a bare IPv6 address
        host, port_text = text_value, None
    else:
        host, port_text = text_value, None
    if not host:
        raise _Invalid(f"{value!r}: missing host")
    if port_text is None:
        if default_port is None:
            raise _Invalid(f"{value!r}: expected HOST:PORT (IPv6 as [ADDRESS]:PORT)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise _Invalid(f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def host_port(value: Any, ctx: Context) -> HostPort:
    if not isinstance(value, str):
        raise _Invalid(f"must be a 'HOST:PORT' string, got {value!r}")
    host, port = split_host_port(value)
    return HostPort(host, port)


def optional_host_port(value: Any, ctx: Context) -> HostPort | None:
    if value == "":
        return None
    return host_port(value, ctx)


def nameserver(value: Any, ctx: Context) -> HostPort:
    if not isinstance(value, str):
        raise _Invalid(f"must be 'IP' or 'IP:PORT', got {value!r}")
    host, port = split_host_port(value, default_port=53)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise _Invalid(f"{value!r}: a nameserver must be an IP address") from None
    if port == 0:
        raise _Invalid(f"{value!r}: port 0 is not a nameserver port")
    return HostPort(host, port)


def web_url(value: Any, ctx: Context) -> str:
    """An http(s) URL, or "" (unset)."""
    parsed = text()(value, ctx)
    if parsed and not parsed.startswith(("http://", "https://")):
        raise _Invalid(f"must start with http:// or https://, got {parsed!r}")
    if any(c.isspace() or c in '<>"' for c in parsed):
        raise _Invalid(f"{parsed!r} is not a URL (spaces, quotes or angle brackets)")
    return parsed


def contact(value: Any, ctx: Context) -> str:
    """Whom senders may write to: an address (postmaster@...), or "" for the default."""
    parsed = text()(value, ctx).strip()
    if parsed and ("@" not in parsed or any(c.isspace() or c in '<>"' for c in parsed)):
        raise _Invalid(f"must be a mail address like postmaster@example.com, got {parsed!r}")
    return parsed


def dnsbl_site(value: Any, ctx: Context) -> str:
    """postscreen's DOMAIN[=FILTER][*WEIGHT] (policy/dnsbl.py)."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a string like 'zen.spamhaus.org=127.0.0.[2..11]*3', got {value!r}")
    try:
        parse_site(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return value.strip()


def name_map(value: Any, ctx: Context) -> tuple[tuple[str, str], ...]:
    """A table of domain = "shown name" (dnsbl.reply_names)."""
    if not isinstance(value, dict):
        raise _Invalid(
            f'must be a table like {{ "key.zen.dq.spamhaus.net" = "zen" }}, got {value!r}'
        )
    pairs = []
    for key, shown in value.items():
        if not isinstance(shown, str) or not shown.strip() or "\n" in shown or "\r" in shown:
            raise _Invalid(f"{key!r}: the name shown must be a one-line string, got {shown!r}")
        pairs.append((domain(key, ctx), shown.strip()))
    return tuple(pairs)


def exempt_recipient(value: Any, ctx: Context) -> str:
    """`local@`, `local@domain`, `@domain` or `domain` (policy/recipients.py)."""
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be local@, local@domain or @domain, got {value!r}")
    local, at, rest = value.strip().rpartition("@")
    if at and local and (" " in local or "@" in local):
        raise _Invalid(f"{value!r}: not a local part")
    if rest:
        domain(rest, ctx)
    elif not local:
        raise _Invalid(f"{value!r} names nobody")
    return value.strip()


def domain(value: Any, ctx: Context) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(f"must be a domain name, got {value!r}")
    cleaned = value.strip().rstrip(".").lower()
    labels = cleaned.lstrip(".").split(".")
    if any(not label or len(label) > 63 or " " in label or "@" in label for label in labels):
        raise _Invalid(f"{value!r} is not a domain name")
    return cleaned


def path(*, must_exist: bool = True) -> Parser:
    """A file path; "" means unset (None). Relative paths start at the config directory."""

    def parse(value: Any, ctx: Context) -> Path | None:
        if not isinstance(value, str):
            raise _Invalid(f"must be a path string, got {value!r}")
        if value == "":
            return None
        resolved = (
            (ctx.base_dir / value).resolve() if not Path(value).is_absolute() else Path(value)
        )
        if must_exist and not resolved.is_file():
            raise _Invalid(f"{value!r}: no such file ({resolved})")
        return resolved

    return parse


def store_url(value: Any, ctx: Context) -> str:
    """`memory:`, `sqlite://PATH` (`sqlite:///var/lib/x.db` is absolute; relative paths
    start at the config directory, and are made absolute here), `redis://[:PASSWORD@]HOST:PORT/DB`,
    `rediss://...` (TLS), `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`
    or `redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/` (`rediss+cluster://`: TLS)."""
    if not isinstance(value, str):
        raise _Invalid(f"must be a URL string, got {value!r}")
    if value == "memory:":
        return value
    if value.startswith(("redis://", "rediss://")):
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise _Invalid(f"{value!r}: bad port") from None
        if not parts.hostname:
            raise _Invalid(f"{value!r}: missing host (redis://HOST:PORT/DB)")
        database = parts.path.strip("/")
        if database and not database.isdigit():
            raise _Invalid(f"{value!r}: the path must be a database number (/0)")
        return value
    if value.startswith(("redis+cluster://", "rediss+cluster://")):
        from gateway.store import display_url
        from gateway.store.cluster import parse_cluster_url

        try:
            parse_cluster_url(value)
        except ValueError as exc:  # named without its password
            raise _Invalid(f"{display_url(value)!r}: {exc}") from None
        return value
    if value.startswith("redis+sentinel://"):
        from gateway.store.redis import parse_sentinel_url

        try:
            parse_sentinel_url(value)
        except ValueError as exc:
            raise _Invalid(f"{value!r}: {exc}") from None
        return value
    if value.startswith("sqlite://"):
        raw = value[len("sqlite://") :]
        if not raw:
            raise _Invalid(f"{value!r}: missing database path (sqlite:///PATH)")
        db = Path(raw) if raw.startswith("/") else (ctx.base_dir / raw).resolve()
        return f"sqlite://{db}"
    raise _Invalid(
        f"{value!r}: expected sqlite:///PATH, redis://HOST:PORT/DB, redis+sentinel://...,"
        " redis+cluster://HOST:PORT[,HOST:PORT...]/ or memory:"
    )


def defer_text(value: Any, ctx: Context) -> str:
    parsed = text(nonempty=True)(value, ctx)
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(parsed) if name is not None}
    except ValueError as exc:
        raise _Invalid(f"bad template: {exc}") from None
    unknown = names - {"reason"}
    if unknown:
        raise _Invalid(f"unknown placeholder {{{sorted(unknown)[0]}}} (only {{reason}} exists)")
    return parsed


def s25r_rule(value: Any, ctx: Context) -> int:
    return integer(0, 6)(value, ctx)


def log_level(value: Any, ctx: Context) -> str:
    return choice("debug", "info", "warning", "error")(value, ctx)


# -- sections -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenSettings:
    addresses: tuple[HostPort, ...] = _setting(
        ["0.0.0.0:25", "[::]:25"], list_of(host_port, nonempty=True)
    )
    hostname: str = _setting("mx.example.com", text(nonempty=True))
    proxy_protocol: bool = _setting(False, boolean)
    proxy_trusted: tuple[IPNetwork, ...] = _setting([], list_of(network))


@dataclass(frozen=True, slots=True)
class TLSSettings:
    mode: str = _setting("auto", choice("auto", "off"))
    cert: Path | None = _setting("", path())
    key: Path | None = _setting("", path())
    self_signed_dir: Path | None = _setting("/var/lib/onajimi", path(must_exist=False))


@dataclass(frozen=True, slots=True)
class BackendSettings:
    host: str = _setting("127.0.0.1", text(nonempty=True))
    port: int = _setting(10025, integer(1, 65535))
    tls: str = _setting("none", choice("none", "starttls", "implicit"))
    ca_file: Path | None = _setting("", path())
    helo_name: str = _setting("", text())
    forward_client: str = _setting("auto", choice("auto", "xclient", "xforward", "off"))
    connect_timeout: float = _setting(10, seconds(positive=True))
    command_timeout: float = _setting(120, seconds(positive=True))
    reuse: bool = _setting(False, boolean)
    reuse_idle: float = _setting(30, seconds(positive=True))
    reuse_max: int = _setting(50, integer(1))


@dataclass(frozen=True, slots=True)
class RelaySettings:
    accept_domains: tuple[str, ...] = _setting(None, list_of(domain, nonempty=True), required=True)
    add_received: bool = _setting(True, boolean)
    bare_newline: str = _setting("reject", one_of(BareNewline))


@dataclass(frozen=True, slots=True)
class PolicySettings:
    trusted_networks: tuple[IPNetwork, ...] = _setting(["127.0.0.0/8", "::1/128"], list_of(network))
    defer: str = _setting("suspect", one_of(DeferMode))
    key: str = _setting("client", one_of(KeyMode))
    ipv4_prefix: int = _setting(32, integer(0, 32))
    ipv6_prefix: int = _setting(64, integer(0, 128))
    lump_by_rdns: bool = _setting(True, boolean)
    promote_on: str = _setting("retry", one_of(PromoteOn))
    min_retry_delay: float = _setting(300, seconds())
    retry_window: float = _setting(86400, seconds(positive=True))
    familiar_ttl: float = _setting(3024000, seconds(positive=True))
    impatient_retries: int = _setting(5, integer(0))
    penalty_ttl: float = _setting(3600, seconds())
    auto_familiar_after: int = _setting(3, integer(0))
    burst_window: float = _setting(5, seconds())
    pace_allowance: int = _setting(300, integer(0))
    pace_rate: float = _setting(1.0, per_second)
    suspect_action: str = _setting("defer", one_of(SuspectAction))
    exempt_recipients: tuple[str, ...] = _setting(
        ["postmaster@", "abuse@"], list_of(exempt_recipient)
    )
    help_url: str = _setting("", text())
    defer_text: str = _setting(
        "Try again later: first contact from this host ({reason})", defer_text
    )


@dataclass(frozen=True, slots=True)
class S25RSettings:
    rules: tuple[int, ...] = _setting([0, 1, 2, 3, 4, 5, 6], list_of(s25r_rule))
    blacklist_files: tuple[Path, ...] = _setting(["s25r-blacklist.txt"], list_of(path()))


@dataclass(frozen=True, slots=True)
class ListsSettings:
    allow_files: tuple[Path, ...] = _setting(["allow.txt"], list_of(path()))
    deny_files: tuple[Path, ...] = _setting(["deny.txt"], list_of(path()))


@dataclass(frozen=True, slots=True)
class DNSSettings:
    nameservers: tuple[HostPort, ...] = _setting([], list_of(nameserver))
    timeout: float = _setting(5, seconds(positive=True))
    cache_size: int = _setting(100000, integer(0))


@dataclass(frozen=True, slots=True)
class StoreSettings:
    url: str = _setting("sqlite:///var/lib/onajimi/state.db", store_url)
    on_error: str = _setting("tempfail", one_of(OnError))
    timeout: float = _setting(2, seconds(positive=True))


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    max_message_size: int = _setting(26214400, integer(1024))
    max_recipients: int = _setting(1000, integer(1))
    max_connections: int = _setting(2000, integer(1))
    max_connections_per_client: int = _setting(20, integer(1))
    command_timeout: float = _setting(300, seconds(positive=True))
    junk_commands: int = _setting(100, integer(1))
    stress_threshold: float = _setting(0.8, share)
    stress_command_timeout: float = _setting(10, seconds(positive=True))
    stress_junk_commands: int = _setting(5, integer(1))


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    listen: HostPort | None = _setting("127.0.0.1:9125", optional_host_port)


@dataclass(frozen=True, slots=True)
class WebSettings:
    listen: HostPort | None = _setting("", optional_host_port)
    public_url: str = _setting("", web_url)
    contact: str = _setting("", contact)
    admin_token_file: Path | None = _setting("", path())
    cookie_secure: bool = _setting(False, boolean)
    lookups_per_minute: int = _setting(10, integer(1, 10000))
    recent_decisions: int = _setting(2000, integer(0, 1000000))


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = _setting("info", log_level)
    format: str = _setting("logfmt", choice("logfmt", "json"))


@dataclass(frozen=True, slots=True)
class PregreetSettings:
    greet_wait: float = _setting(0, seconds())
    action: str = _setting("drop", one_of(PregreetAction))
    ttl: float = _setting(86400, seconds(positive=True))


@dataclass(frozen=True, slots=True)
class TarpitSettings:
    delay: float = _setting(65, seconds(positive=True))
    max_sessions: int = _setting(1000, integer(0))


@dataclass(frozen=True, slots=True)
class DnsblSettings:
    sites: tuple[str, ...] = _setting([], list_of(dnsbl_site))
    threshold: int = _setting(1, integer(1))
    allowlist_threshold: int = _setting(-1, integer(None, 0))
    action: str = _setting("defer", one_of(DnsblAction))
    reply_names: tuple[tuple[str, str], ...] = _setting({}, name_map)
    min_ttl: float = _setting(60, seconds())
    max_ttl: float = _setting(3600, seconds(positive=True))


@dataclass(frozen=True, slots=True)
class AuthSettings:
    mode: str = _setting("auto", choice("auto", "off"))
    max_failures: int = _setting(5, integer(0))
    failure_window: float = _setting(3600, seconds(positive=True))
    penalty_ttl: float = _setting(3600, seconds())


@dataclass(frozen=True, slots=True)
class AutobanSettings:
    relay_limit: int = _setting(5, integer(0))
    probe_limit: int = _setting(30, integer(0))
    loiter_limit: int = _setting(10, integer(0))
    window: float = _setting(3600, seconds(positive=True))
    penalty_ttl: float = _setting(3600, seconds())


@dataclass(frozen=True, slots=True)
class ServerSettings:
    workers: int = _setting(1, integer(1, 64))


SECTIONS: dict[str, type] = {
    "listen": ListenSettings,
    "tls": TLSSettings,
    "backend": BackendSettings,
    "relay": RelaySettings,
    "policy": PolicySettings,
    "s25r": S25RSettings,
    "lists": ListsSettings,
    "dns": DNSSettings,
    "store": StoreSettings,
    "limits": LimitsSettings,
    "pregreet": PregreetSettings,
    "dnsbl": DnsblSettings,
    "tarpit": TarpitSettings,
    "auth": AuthSettings,
    "autoban": AutobanSettings,
    "metrics": MetricsSettings,
    "web": WebSettings,
    "log": LogSettings,
    "server": ServerSettings,
}


@dataclass(frozen=True, slots=True)
class Settings:
    source: str  # the file as the operator named it, for messages
    base_dir: Path
    listen: ListenSettings
    tls: TLSSettings
    backend: BackendSettings
    relay: RelaySettings
    policy: PolicySettings
    s25r: S25RSettings
    lists: ListsSettings
    dns: DNSSettings
    store: StoreSettings
    limits: LimitsSettings
    pregreet: PregreetSettings
    dnsbl: DnsblSettings
    tarpit: TarpitSettings
    auth: AuthSettings
    autoban: AutobanSettings
    metrics: MetricsSettings
    web: WebSettings
    log: LogSettings
    server: ServerSettings

    @property
    def backend_helo(self) -> str:
        return self.backend.helo_name or self.listen.hostname

    @property
    def tls_enabled(self) -> bool:
        return self.tls.mode != "off"

    @property
    def web_url(self) -> str:
        """Where senders reach the sender's page: web.public_url, else this host's name
        and the web port; "" with the pages off."""
        if self.web.listen is None:
            return ""
        if self.web.public_url:
            return self.web.public_url
        port = self.web.listen.port
        return f"http://{self.listen.hostname}{'' if port == 80 else f':{port}'}/"

    @property
    def help_url(self) -> str:
        """The URL deferral replies name: policy.help_url, else the sender's page if on."""
        return self.policy.help_url or self.web_url

    @property
    def contact(self) -> str:
        """Whom the sender's page tells senders to write to."""
        return self.web.contact or f"postmaster@{self.relay.accept_domains[0].lstrip('.')}"


# Settings that were, and what replaced them: still accepted (and ignored), with one
# warning line, so that a configuration written for an earlier version still starts.
RETIRED = {
    ("policy", "sibling_retries"): "retries from another address count only with proof now "
    "(SPF for the sender's domain, or one forward-confirmed name); see README, How it decides",
}


def _build_section(cls: type, raw: Mapping[str, Any], section: str, ctx: Context, source: str):
    known = {f.name: f for f in fields(cls)}
    for key in list(raw):
        retired = RETIRED.get((section, key))
        if retired is not None:
            logging.getLogger("onajimi").warning(
                "%s: %s.%s is no longer a setting (ignored): %s", source, section, key, retired
            )
            raw = {k: v for k, v in raw.items() if k != key}
        elif key not in known:
            raise ConfigError(f"{source}: {section}.{key}: unknown setting")
    values = {}
    for name, f in known.items():
        if name in raw:
            value = raw[name]
        elif f.metadata["required"]:
            raise ConfigError(f"{source}: {section}.{name}: required setting is missing")
        else:
            value = f.metadata["default"]
        try:
            values[name] = f.metadata["parse"](value, ctx)
        except _Invalid as exc:
            raise ConfigError(f"{source}: {section}.{name}: {exc}") from None
    return cls(**values)


def _check_together(settings: Settings) -> None:
    source = settings.source
    if (settings.tls.cert is None) != (settings.tls.key is None):
        raise ConfigError(f"{source}: tls.cert and tls.key: set both, or neither (self-signed)")
    tls = settings.tls
    if tls.mode != "off" and tls.cert is None and tls.self_signed_dir is None:
        raise ConfigError(f"{source}: tls.self_signed_dir: needed without tls.cert")
    p = settings.policy
    if p.retry_window <= p.min_retry_delay:
        raise ConfigError(
            f"{source}: policy.retry_window: must be longer than policy.min_retry_delay "
            f"({p.retry_window:g} <= {p.min_retry_delay:g})"
        )
    d = settings.dnsbl
    if d.min_ttl > d.max_ttl:
        raise ConfigError(
            f"{source}: dnsbl.min_ttl: must not be more than dnsbl.max_ttl "
            f"({d.min_ttl:g} > {d.max_ttl:g})"
        )
    if len(set(settings.s25r.rules)) != len(settings.s25r.rules):
        raise ConfigError(f"{source}: s25r.rules: a rule is listed twice")
    if settings.web.listen is None:
        for key in ("public_url", "admin_token_file"):
            if getattr(settings.web, key):
                raise ConfigError(f"{source}: web.{key}: needs web.listen (the pages are off)")
    b = settings.backend
    if b.reuse and b.forward_client not in ("xforward", "off"):
        raise ConfigError(
            f"{source}: backend.reuse: needs backend.forward_client = 'xforward' or 'off' "
            f"(got {b.forward_client!r}: XCLIENT makes a connection one client's for good)"
        )
    if settings.server.workers > 1 and settings.store.url == "memory:":
        raise ConfigError(
            f"{source}: server.workers: worker processes cannot share a 'memory:' store; "
            "use sqlite:// or redis://"
        )


def settings_from_mapping(raw: Mapping[str, Any], source: str, base_dir: Path) -> Settings:
    ctx = Context(base_dir)
    for section, table in raw.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: [{section}]: unknown section")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {section}: must be a table ([{section}])")
    sections = {
        name: _build_section(cls, raw.get(name, {}), name, ctx, source)
        for name, cls in SECTIONS.items()
    }
    settings = Settings(source=source, base_dir=base_dir, **sections)
    _check_together(settings)
    return settings


def load_settings(config_path: str | Path) -> Settings:
    """Read and validate a configuration file. Raises ConfigError with one clear line."""
    config = Path(config_path)
    source = str(config_path)
    try:
        data = config.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{source}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read configuration: {exc.strerror}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{source}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    return settings_from_mapping(raw, source, config.resolve().parent)


def default_values() -> dict[str, dict[str, Any]]:
    """Every setting's default as written in TOML (for tests and `onajimi check`)."""
    return {
        name: {f.name: f.metadata["default"] for f in fields(cls)} for name, cls in SECTIONS.items()
    }
