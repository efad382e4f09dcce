"""List files: every accepted format, every error message, and fast lookups that agree
with a brute-force scan."""

from __future__ import annotations

import ipaddress
import random
import re

import pytest

from gateway.assembly import load_list
from gateway.errors import ConfigError
from gateway.policy.lists import ClientList, EntryError, Role, parse_entry
from gateway.policy.net import NetSet, client_address
from gateway.policy.regexset import RegexSet

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def load(tmp_path, text: str, role: Role = Role.DENY, name: str = "list.txt") -> ClientList:
    path = tmp_path / name
    path.write_text(text)
    return load_list([path], role, [name])


def test_addresses_networks_partial_and_bracketed(tmp_path) -> None:
    lst = load(
        tmp_path,
        "192.0.2.7\n198.51.100.0/24\n203.0.113\n10\n[2001:db8::1]\n2001:db8:bad::/48\n"
        "::ffff:192.0.2.128/121\n",
    )

    def hit(ip: str):
        a = client_address(ip)
        return lst.match_address(a, str(a))

    assert hit("192.0.2.7").source == "list.txt:1"
    assert hit("192.0.2.8") is None
    assert hit("198.51.100.200").source == "list.txt:2"
    assert hit("203.0.113.99").source == "list.txt:3"  # partial IPv4: a /24
    assert hit("10.20.30.40").source == "list.txt:4"  # a /8
    assert hit("2001:db8::1").source == "list.txt:5"
    assert hit("2001:db8:bad:1::9").source == "list.txt:6"
    assert hit("192.0.2.200").source == "list.txt:7"  # IPv4-mapped network unmapped
    assert hit("::ffff:198.51.100.1").source == "list.txt:2"  # mapped client unmapped


def test_domains_match_name_and_subdomains_leading_dot_only_subdomains(tmp_path) -> None:
    lst = load(tmp_path, "example.com\n.example.org\n", Role.ALLOW)
    assert lst.match_name("example.com").source == "list.txt:1"
    assert lst.match_name("mail.example.com").source == "list.txt:1"
    assert lst.match_name("badexample.com") is None
    assert lst.match_name("example.org") is None
    assert lst.match_name("a.b.example.org").source == "list.txt:2"


def test_regex_on_name_and_on_address_text(tmp_path) -> None:
    lst = load(tmp_path, "/^223\\.123\\.45\\.67$/ OK\n/^mail[0-9]+\\.example\\.net$/\n", Role.ALLOW)
    a = client_address("223.123.45.67")
    assert lst.match_address(a, str(a)).source == "list.txt:1"
    assert lst.match_name("MAIL12.example.net".lower()).source == "list.txt:2"
    assert lst.match_name("mail.example.net") is None


def test_postfix_access_table_lines(tmp_path) -> None:
    deny = load(
        tmp_path,
        "# S25R rejections\n"
        "/\\.dip\\.t-dialin\\.net$/   450 S25R check\n"
        "/^dynamic/  REJECT\n"
        "192.0.2.0/24\tREJECT go away\n"
        "198.51.100.0/24 554 5.7.1 Spam source\n"
        "/^[[:digit:]]+-[[:digit:]]+\\./ DEFER_IF_PERMIT\n",
        Role.BLACKLIST,
    )
    assert deny.match_name("p1.dip.t-dialin.net").source == "list.txt:2"
    assert deny.match_name("dynamic-1.example.net").source == "list.txt:3"
    assert deny.match_name("12-34.example.net").source == "list.txt:6"  # POSIX classes
    a = client_address("192.0.2.5")
    assert deny.match_address(a, str(a)).reply == "go away"
    b = client_address("198.51.100.5")
    assert deny.match_address(b, str(b)).reply == "554 5.7.1 Spam source"


def test_postgrey_whitelist_clients_format(tmp_path) -> None:
    allow = load(
        tmp_path,
        "# greylisting.org: Southwest Airlines (unique sender, no retry)\n"
        "southwest.com\n"
        "/^ms-smtp.*\\.rr\\.com$/\n"
        "64.12.137\n"
        "12.107.209.250\n",
        Role.ALLOW,
    )
    assert allow.match_name("mx1.southwest.com").source == "list.txt:2"
    assert allow.match_name("ms-smtp-01.nyroc.rr.com").source == "list.txt:3"
    a = client_address("64.12.137.9")
    assert allow.match_address(a, str(a)).source == "list.txt:4"


def test_comments_after_entries_and_hash_inside_regex(tmp_path) -> None:
    lst = load(tmp_path, "192.0.2.1   # office\n/a#b/ # comment\n   \n", Role.DENY)
    assert len(lst) == 2
    assert lst.match_name("xa#by") is not None


@pytest.mark.parametrize(
    ("line", "role", "message"),
    [
        ("192.0.2.7/24", Role.DENY, "has host bits set: did you mean 192.0.2.0/24?"),
        ("/unclosed", Role.DENY, "has no closing '/'"),
        ("/a(b/", Role.DENY, "bad regular expression"),
        ("/x/q", Role.DENY, "unsupported regex flag 'q'"),
        ("!/x/ OK", Role.ALLOW, "negated patterns"),
        ("if /x/", Role.DENY, "if/endif blocks are not supported"),
        ("/x/ REJECT", Role.ALLOW, "move the line to a deny or s25r blacklist file"),
        ("192.0.2.1 OK", Role.DENY, "move the line to an allow file"),
        ("example.com DUNNO", Role.DENY, "DUNNO"),
        ("example.com HOLD", Role.DENY, "unsupported action 'HOLD'"),
        ("user@example.com", Role.DENY, "is not an IP address, network, domain name or /regex/"),
        ("not-a-host! OK", Role.ALLOW, "'not-a-host!' is not an IP address"),
        ("300.1.2", Role.DENY, "is not a valid address"),
        ("/x/y z", Role.DENY, "unsupported regex flag 'y'"),
        ("/[[:bogus:]]/", Role.DENY, "unknown POSIX class"),
    ],
)
def test_bad_lines_say_what_is_wrong(line: str, role: Role, message: str) -> None:
    with pytest.raises(EntryError, match=re.escape(message)):
        parse_entry(line, role, "f:1")


def test_file_errors_name_file_and_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^list\.txt:3: 'bad!' is not an IP"):
        load(tmp_path, "192.0.2.1\n# fine\nbad! entry\n")
    with pytest.raises(ConfigError, match=r"missing\.txt: list file not found"):
        load_list([tmp_path / "missing.txt"], Role.DENY, ["missing.txt"])


def test_netset_longest_prefix_wins() -> None:
    nets: NetSet[str] = NetSet()
    nets.add(ipaddress.ip_network("10.0.0.0/8"), "wide")
    nets.add(ipaddress.ip_network("10.1.0.0/16"), "narrow")
    nets.add(ipaddress.ip_network("10.1.2.3/32"), "host")
    nets.add(ipaddress.ip_network("10.1.0.0/16"), "duplicate")  # the first line is kept
    assert nets.lookup(client_address("10.1.2.3")) == "host"
    assert nets.lookup(client_address("10.1.9.9")) == "narrow"
    assert nets.lookup(client_address("10.9.9.9")) == "wide"
    assert nets.lookup(client_address("11.0.0.1")) is None
    assert len(nets) == 3


def test_netset_agrees_with_brute_force() -> None:
    rng = random.Random(7)
    networks = []
    nets: NetSet[int] = NetSet()
    for i in range(2000):
        prefix = rng.choice([8, 12, 16, 20, 24, 28, 32])
        net = ipaddress.ip_network((rng.getrandbits(32), prefix), strict=False)
        networks.append(net)
        nets.add(net, i)
    for _ in range(2000):
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        containing = [n for n in networks if address in n]
        found = nets.lookup(address)
        if not containing:
            assert found is None
        else:
            longest = max(n.prefixlen for n in containing)
            assert networks[found].prefixlen == longest and address in networks[found]


def _patterns(rng: random.Random, count: int) -> list[str]:
    shapes = [
        lambda i: rf"\.pool{i}\.isp{i % 37}\.net$",
        lambda i: rf"^[0-9a-f]{{4}}\.dyn{i}\.example$",
        lambda i: rf"^dhcp{i}-",
        lambda i: rf"^(cable|dsl){i}[a-z]*\.",
        lambda i: rf"adsl{i}",
        lambda i: rf"^host{i}\.(a|b)\.net$",
        lambda i: rf"^x(y)\1z{i}",  # a backreference: must be tried alone
        lambda i: rf"(?x) ^ mx {i} \. ",  # global inline flags: must be tried alone
        lambda i: rf"^[0-9]+\.{i}\.in-addr$",
        lambda i: rf"^[0-9a-f]{{8}}\.c{i}\.",  # anchored, first character from a class
        lambda i: rf"^(dhcp|ppp|[achrsvx]?dsl)[^.]*{i}\.",  # branches, optional prefix
        lambda i: rf"^\d+-{i}\.",  # digit category
        lambda i: rf"^x?y{i}\.",  # nullable start: both x and y can begin a match
        lambda i: rf"mid{i}[0-9]",  # unanchored with a required literal: trigram
        lambda i: rf"[0-9]ab{i}z",  # the literal comes after a class
        lambda i: rf"^(?:)?q{i}",  # an empty group
        lambda i: rf"^.{{2}}zz{i}\.",  # anchored, but any first character: generic anchored
        lambda i: rf"(ab|cd)[0-9]{i % 10}w",  # no literal of three: the generic bucket
    ]
    return [shapes[rng.randrange(len(shapes))](i) for i in range(count)]


def _names(rng: random.Random, count: int) -> list[str]:
    out = []
    for _ in range(count):
        i = rng.randrange(400)
        out.append(
            rng.choice(
                [
                    f"a1.pool{i}.isp{i % 37}.net",
                    f"beef.dyn{i}.example",
                    f"dhcp{i}-7.example.org",
                    f"cable{i}x.example.org",
                    f"zzadsl{i}zz.example",
                    f"host{i}.b.net",
                    f"xyyz{i}.example",
                    f"mx{i}.example",
                    f"12.{i}.in-addr",
                    f"mail.example{i}.com",
                    f"deadbeef.c{i}.example",
                    f"adsl-{i}.example",
                    f"ppp{i}.example",
                    f"12-{i}.example",
                    f"y{i}.example",
                    f"xy{i}.example",
                    f"amid{i}5.example",
                    f"9ab{i}z.example",
                    f"q{i}.example",
                    f"ijzz{i}.example",
                    f"xcd5{i % 10}w.example",
                ]
            )
        )
    return out


def test_regexset_agrees_with_brute_force() -> None:
    rng = random.Random(11)
    patterns = _patterns(rng, 800)
    compiled = [re.compile(p, re.IGNORECASE) for p in patterns]
    rs = RegexSet((c, i) for i, c in enumerate(compiled))
    for name in _names(rng, 6000):
        expected = {i for i, c in enumerate(compiled) if c.search(name)}
        found = rs.first(name)
        if expected:
            assert found in expected, (name, found, sorted(expected)[:5])
        else:
            assert found is None, (name, patterns[found])


def test_regexset_reports_the_earliest_line_across_buckets() -> None:
    items = [(re.compile(r"\.example\.net$"), "suffix"), (re.compile(r"^mail"), "anchored")]
    assert RegexSet(items).first("mail.example.net") == "suffix"
    assert RegexSet(list(reversed(items))).first("mail.example.net") == "anchored"
