"""S25R rules 0-6 exactly as policy/s25r.py states them, the blacklist, and rule switches."""

from __future__ import annotations

import pytest

from gateway.policy.facts import RDNS, RDNSStatus, normalize_name
from gateway.policy.lists import ClientList, Role, parse_entry
from gateway.policy.net import client_address
from gateway.policy.s25r import ALL_RULES, S25RClassifier
from gateway.policy.vocabulary import Reason

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

ADDRESS = client_address("192.0.2.9")


def confirmed(*names: str) -> RDNS:
    clean = tuple(normalize_name(n) for n in names)
    return RDNS(RDNSStatus.CONFIRMED, clean, clean)


def classify(name: str, rules=ALL_RULES, blacklist: ClientList | None = None):
    return S25RClassifier(rules, blacklist).classify(ADDRESS, str(ADDRESS), confirmed(name))


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("p1234-ip45.dyn.example.jp", 1),
        ("mail-ot1-f41.google.com", 1),
        ("2001-0db8-0000-0001.static.example.net", 1),  # IPv6-looking label
        ("YahooBB219170130196.bbtec.net", 2),
        ("host12345.example.com", 2),
        ("mail.12345.example.co.jp", 3),
        ("dsl.0123.pool.example.net", 3),
        ("123.45.example.co.jp", 3),  # rules 3 and 5 both match: the first is reported
        ("ip1.10-20-30.example.net", 4),
        ("host1.pool2.dyn.example.net", 5),
        ("ns1.dns2.example.co.jp", 5),
        ("dhcp5.example.com", 6),
        ("adsl-pool7.example.net", 6),
        ("PPP7.Example.NET", 6),  # case-insensitive
        ("MAIL-OT1-F41.GOOGLE.COM", 1),
        ("xdsl9.example.org", 6),
    ],
)
def test_generic_rules_match(name: str, rule: int) -> None:
    result = classify(name)
    assert result.suspect
    assert result.rule == rule
    assert result.reason is Reason.s25r_rule(rule)


@pytest.mark.parametrize(
    "name",
    [
        "mail.example.com",
        "mx1.example.com",
        "smtp-out1.example.com",
        "dsl.example.com",  # rule 6 needs a digit
        "mydsl1.example.com",  # rule 6 is anchored at the start
        "1st.example.com",
        "mail.12345.example.com",  # five digits in the second label only
        "ns1.dns2.example.com",
        "mail2.example.co.uk",
        "a1-2",  # rule 1 needs a dot after the host number
    ],
)
def test_generic_rules_do_not_match(name: str) -> None:
    result = classify(name)
    assert not result.suspect, result.describe()
    assert result.reason is None


def test_trailing_dot_is_not_a_label() -> None:
    # With the final dot kept, "a1-2." would satisfy rule 1's "\." and look dynamic.
    assert normalize_name("A1-2.") == "a1-2"
    assert not classify("A1-2.").suspect
    assert S25RClassifier().rule_matching("a1-2.") == 1  # what would happen without it


def test_rule0_no_ptr_and_unconfirmed_ptr() -> None:
    c = S25RClassifier()
    no_ptr = c.classify(ADDRESS, str(ADDRESS), RDNS(RDNSStatus.UNCONFIRMED, detail="NXDOMAIN"))
    assert no_ptr.reason is Reason.S25R_RULE0 and no_ptr.rule == 0
    unconfirmed = c.classify(
        ADDRESS, str(ADDRESS), RDNS(RDNSStatus.UNCONFIRMED, ("mail.example.com",))
    )
    assert unconfirmed.reason is Reason.S25R_RULE0


def test_rules_switch_individually() -> None:
    assert classify("p1234-ip45.dyn.example.jp", rules=[0, 2, 3, 4, 5, 6]).reason is None
    assert classify("dhcp5.example.com", rules=[0, 1]).reason is None
    off0 = S25RClassifier([1, 2, 3, 4, 5, 6])
    assert not off0.classify(ADDRESS, str(ADDRESS), RDNS(RDNSStatus.UNCONFIRMED)).suspect


def test_any_clean_confirmed_name_makes_the_client_clean() -> None:
    c = S25RClassifier()
    both = confirmed("p1234-ip45.dyn.example.jp", "mail.example.org")
    result = c.classify(ADDRESS, str(ADDRESS), both)
    assert not result.suspect and result.name == "mail.example.org"


def _blacklist(*lines: str) -> ClientList:
    entries = [parse_entry(line, Role.BLACKLIST, f"bl.txt:{i}") for i, line in enumerate(lines, 1)]
    return ClientList(Role.BLACKLIST, [e for e in entries if e is not None])


def test_blacklist_entry_is_reported_with_file_and_line() -> None:
    bl = _blacklist("# comment", r"/\.dip\.t-dialin\.net$/", "dyn.optonline.net")
    result = classify("p3E9C1A2B.dip.t-dialin.net", blacklist=bl)
    # Rule 1 matches this name too; rules are tried before the blacklist.
    assert result.reason is Reason.S25R_RULE1
    plain = classify("ool-4353ab.dyn.optonline.net", blacklist=bl)
    assert plain.reason is Reason.S25R_BLACKLIST
    assert plain.entry is not None and plain.entry.source == "bl.txt:3"
    assert "bl.txt:3" in plain.describe()


def test_blacklist_address_entries_apply_even_without_ptr() -> None:
    bl = _blacklist("192.0.2.0/24 450 S25R check")
    c = S25RClassifier([1, 2, 3, 4, 5, 6], bl)
    result = c.classify(ADDRESS, str(ADDRESS), RDNS(RDNSStatus.UNCONFIRMED))
    assert result.reason is Reason.S25R_BLACKLIST and result.entry.source == "bl.txt:1"


def test_shipped_blacklist_catches_named_pools() -> None:
    from gateway.assembly import load_list
    from tests.conftest import CONF

    bl = load_list([CONF / "s25r-blacklist.txt"], Role.BLACKLIST)
    for name in (
        "pool-ab.dyn.optonline.net",
        "pd95e1a2b.dip0.t-ipconnect.de",
        "x.dynamic.163data.com.cn",
    ):
        assert bl.match_name(name) is not None, name
    assert bl.match_name("mail.example.com") is None
