"""Client lists: allow, deny and the S25R blacklist, read from files an admin already has.

One entry a line; `#` starts a comment (at the start of a line, or after whitespace). An
entry is one of:

* an IP address (`192.0.2.7`, `2001:db8::1`, `[2001:db8::1]`) or a CIDR network;
* a partial IPv4 address as in Postfix hash tables and postgrey (`192.0.2` is a /24,
  `10` a /8);
* a domain name, matching the PTR name and its subdomains (`.example.com`: subdomains
  only);
* `/regex/flags`, tried on the PTR name and on the address text, like Postfix's
  `check_client_access regexp:` (case-insensitive; POSIX classes like `[[:digit:]]` work).

Any entry may be followed by a Postfix access action, so existing S25R `white_list`
(`/re/ OK`), `rejections` (`/re/ 450 S25R check`) and postgrey `whitelist_clients` files
load unchanged. The action must fit the file's role (OK/PERMIT in an allow file;
REJECT/DEFER/4xx/5xx in a deny or blacklist file): a mismatch is an error, because
silently turning an `OK` into a rejection is the worst kind of migration surprise.

Allow lists match names only when the PTR name is forward-confirmed (README "Lists");
deny and blacklist entries match any PTR name the client presents.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gateway.policy.net import IPAddress, IPNetwork, NetSet
from gateway.policy.regexset import RegexSet, can_match_within


class Role(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    BLACKLIST = "blacklist"


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One line of a list: where it came from and what it said."""

    source: str  # "conf/deny.txt:12", or "dynamic" for entries from the store
    text: str  # the entry as written (without its action)
    reply: str = ""  # custom reply text of a 4xx/5xx action, used for deny greetings

    def __str__(self) -> str:
        return f"{self.source} {self.text}"


class EntryError(ValueError):
    """A line that is not a valid entry; the message names the problem, not the place."""


_ALLOW_ACTIONS = {"OK", "PERMIT"}
_DENY_ACTIONS = {"REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT"}
_CODE_ACTION = re.compile(r"^([245])\d\d(?:\s+(.*))?$")
_POSIX_CLASSES = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "a-zA-Z0-9",
    "upper": "A-Z",
    "lower": "a-z",
    "xdigit": "0-9A-Fa-f",
    "space": r" \t\r\n\f\v",
    "blank": r" \t",
    "punct": r"!-/:-@\[-`{-~",
}
_POSIX_CLASS = re.compile(r"\[:([a-z]+):\]")
_DOMAIN = re.compile(
    r"^\.?(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$"
)
_PARTIAL_V4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){0,2}$")
_COMMENT = re.compile(r"(?:^|\s)#.*$")
_V4_TEXT = "0123456789."
_V6_TEXT = "0123456789abcdef:."


def _translate_posix(pattern: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in _POSIX_CLASSES:
            raise EntryError(f"unknown POSIX class [:{name}:]")
        return _POSIX_CLASSES[name]

    return _POSIX_CLASS.sub(repl, pattern)


def _split_regex(line: str) -> tuple[str, str, str]:
    """Split `/pattern/flags rest` at the closing unescaped slash."""
    i = 1
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c == "/":
            break
        i += 1
    else:
        raise EntryError("regular expression has no closing '/'")
    pattern = line[1:i]
    rest = line[i + 1 :]
    flags_match = re.match(r"[A-Za-z]*", rest)
    flags = flags_match.group(0) if flags_match else ""
    return pattern, flags, rest[len(flags) :]


def compile_pattern(pattern: str, flags: str = "") -> re.Pattern[str]:
    """Compile a list regex: case-insensitive always (DNS names are), Postfix flags honoured."""
    if not pattern:
        raise EntryError("empty regular expression")
    re_flags = re.IGNORECASE
    for flag in flags:
        if flag == "x":
            re_flags |= re.VERBOSE
        elif flag in "im":
            continue  # i: names are matched case-insensitively regardless; m: no newlines here
        else:
            raise EntryError(f"unsupported regex flag {flag!r} (supported: i, m, x)")
    try:
        return re.compile(_translate_posix(pattern), re_flags)
    except re.error as exc:
        raise EntryError(f"bad regular expression: {exc}") from None


def _parse_action(action: str, role: Role) -> str:
    """Check the access action against the list's role; return custom reply text if any."""
    if not action:
        return ""
    word = action.split(None, 1)[0].upper()
    code = _CODE_ACTION.match(action)
    if role is Role.ALLOW:
        if word in _ALLOW_ACTIONS or (code and code.group(1) == "2"):
            return ""
        if word in _DENY_ACTIONS or code:
            raise EntryError(
                f"action {word!r} refuses mail, but this is an allow list: "
                "move the line to a deny or s25r blacklist file"
            )
    else:
        if word in _DENY_ACTIONS:
            return action.split(None, 1)[1] if " " in action else ""
        if code and code.group(1) in "45":
            return action
        if word in _ALLOW_ACTIONS or (code and code.group(1) == "2"):
            raise EntryError(
                f"action {word!r} accepts mail, but this is a {role.value} list: "
                "move the line to an allow file (lists.allow_files)"
            )
    if word == "DUNNO":
        raise EntryError("DUNNO (exception) lines are not supported: remove the line")
    raise EntryError(f"unsupported action {word!r}")


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """A line turned into one of the three kinds of key, plus its entry record."""

    entry: ListEntry
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    domain: str | None = None  # lower-case; leading "." means subdomains only
    regex: re.Pattern[str] | None = None


def parse_entry(line: str, role: Role, source: str) -> ParsedEntry | None:
    """Parse one line; None for blank and comment lines. Raises EntryError."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("!/"):
        raise EntryError("negated patterns (!/re/) are not supported")
    if text.startswith("/"):
        pattern, flags, rest = _split_regex(text)
        rest = _COMMENT.sub("", rest)
        if rest and not rest[0].isspace():
            raise EntryError(f"unexpected text {rest.split()[0]!r} after the regular expression")
        compiled = compile_pattern(pattern, flags)
        reply = _parse_action(rest.strip(), role)
        return ParsedEntry(ListEntry(source, f"/{pattern}/{flags}", reply), regex=compiled)

    text = _COMMENT.sub("", text).strip()
    if not text:
        return None
    key, *rest = text.split(None, 1)
    action = " ".join(rest[0].split()) if rest else ""
    lowered = key.lower()
    if lowered in {"if", "endif"}:
        raise EntryError("if/endif blocks are not supported: flatten them into plain lines")
    network = _parse_network(key)
    is_domain = (
        network is None and _DOMAIN.match(lowered) and not lowered.replace(".", "").isdigit()
    )
    if network is None and not is_domain:
        raise EntryError(f"{key!r} is not an IP address, network, domain name or /regex/")
    entry = ListEntry(source, key, _parse_action(action, role))
    if network is not None:
        return ParsedEntry(entry, network=network)
    return ParsedEntry(entry, domain=lowered)


def _parse_network(key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    text = key[1:-1] if key.startswith("[") and key.endswith("]") else key
    if "/" in text:
        address_text, _, prefix = text.partition("/")
        if address_text.startswith("[") and address_text.endswith("]"):
            address_text = address_text[1:-1]
        try:
            network = ipaddress.ip_network(f"{address_text}/{prefix}", strict=False)
        except ValueError:
            raise EntryError(f"{key!r} is not a valid network") from None
        if network.network_address != ipaddress.ip_address(address_text):
            raise EntryError(f"{key!r} has host bits set: did you mean {network}?")
        return _unmapped(network)
    try:
        return _unmapped(ipaddress.ip_network(text))
    except ValueError:
        pass
    if _PARTIAL_V4.match(text):
        octets = text.split(".")
        if all(int(o) <= 255 for o in octets):
            padded = ".".join(octets + ["0"] * (4 - len(octets)))
            return ipaddress.ip_network(f"{padded}/{8 * len(octets)}")
        raise EntryError(f"{key!r} is not a valid address")
    return None


def _unmapped(network: ipaddress.IPv4Network | ipaddress.IPv6Network):
    """`::ffff:192.0.2.0/120` in a list means the IPv4 network, as clients are unmapped."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.ip_network((mapped, network.prefixlen - 96))
    return network


class ClientList:
    """A loaded list with constant-time-ish lookups by address and by name."""

    __slots__ = ("_domains", "_nets", "_regexes", "_v4_regexes", "_v6_regexes", "role", "size")

    def __init__(self, role: Role, entries: Iterable[ParsedEntry] = ()) -> None:
        self.role = role
        self._nets: NetSet[ListEntry] = NetSet()
        self._domains: dict[str, ListEntry] = {}
        patterns: list[tuple[re.Pattern[str], ListEntry]] = []
        self.size = 0
        for parsed in entries:
            self.size += 1
            if parsed.network is not None:
                self._nets.add(parsed.network, parsed.entry)
            elif parsed.domain is not None:
                self._domains.setdefault(parsed.domain, parsed.entry)
            elif parsed.regex is not None:
                patterns.append((parsed.regex, parsed.entry))
        self._regexes: RegexSet[ListEntry] = RegexSet(patterns)
        # Address texts are made of few characters: most name patterns can never match
        # them, and need not be tried on every connection's address.
        self._v4_regexes: RegexSet[ListEntry] = RegexSet(
            item for item in patterns if can_match_within(item[0], _V4_TEXT)
        )
        self._v6_regexes: RegexSet[ListEntry] = RegexSet(
            item for item in patterns if can_match_within(item[0], _V6_TEXT)
        )

    def __len__(self) -> int:
        return self.size

    @property
    def has_name_entries(self) -> bool:
        return bool(self._domains) or len(self._regexes) > 0

    def match_address(self, address: IPAddress, address_text: str) -> ListEntry | None:
        """Networks first (most specific wins), then regexes on the address text."""
        if not self.size:
            return None
        found = self._nets.lookup(address)
        if found is None:
            regexes = self._v4_regexes if address.version == 4 else self._v6_regexes
            if len(regexes):
                found = regexes.first(address_text)
        return found

    def networks(self) -> list[tuple[IPNetwork, ListEntry]]:
        """The address and network entries (for exporting them to a firewall)."""
        return list(self._nets)

    def match_name(self, name: str) -> ListEntry | None:
        """Domains (the name or a parent), then regexes. `name`: lower-case, no final dot."""
        if self._domains:
            domains = self._domains
            found = domains.get(name)
            if found is not None:
                return found
            start = name.find(".")
            while start >= 0:
                found = domains.get(name[start + 1 :]) or domains.get(name[start:])
                if found is not None:
                    return found
                start = name.find(".", start + 1)
        if len(self._regexes):
            return self._regexes.first(name)
        return None

    def match_names(self, names: Sequence[str]) -> ListEntry | None:
        if not self.size:
            return None
        for name in names:
            found = self.match_name(name)
            if found is not None:
                return found
        return None
