"""Client keys (prefixes, rDNS lumping) and sender normalization."""

from __future__ import annotations

import pytest

from gateway.policy.keys import (
    address_key,
    client_key,
    normalize_sender,
    rdns_domain,
    triplet_key,
)
from gateway.policy.net import client_address

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


@pytest.mark.parametrize(
    ("address", "v4", "v6", "expected"),
    [
        ("203.0.113.9", 32, 64, "203.0.113.9"),
        ("203.0.113.9", 24, 64, "203.0.113.0/24"),
        ("2001:db8:1:2:3:4:5:6", 32, 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:3:4:5:6", 32, 128, "2001:db8:1:2:3:4:5:6"),
        ("::ffff:203.0.113.9", 24, 64, "203.0.113.0/24"),  # mapped IPv4 is IPv4
    ],
)
def test_address_key(address: str, v4: int, v6: int, expected: str) -> None:
    assert address_key(client_address(address), v4, v6) == expected


@pytest.mark.parametrize(
    ("name", "domain"),
    [
        ("mail-ot1-f41.google.com", "google.com"),
        ("mx.mail.example.co.jp", "mail.example.co.jp"),
        ("example.com", None),  # would leave a bare TLD
        ("localhost", None),
        ("203.0.113.9", None),  # an address in disguise
        ("mx.example.xn--p1ai", "example.xn--p1ai"),
    ],
)
def test_rdns_domain(name: str, domain: str | None) -> None:
    assert rdns_domain(name) == domain


def test_client_key_lumps_only_confirmed_clean_names() -> None:
    assert client_key("192.0.2.1", "mail-ot1-f41.google.com", False, True) == "google.com"
    assert client_key("192.0.2.1", "p1-2.dyn.example.net", True, True) == "192.0.2.1"
    assert client_key("192.0.2.1", None, False, True) == "192.0.2.1"
    assert client_key("192.0.2.1", "mail.example.org", False, False) == "192.0.2.1"


@pytest.mark.parametrize(
    ("sender", "normalized"),
    [
        ("<>", "<>"),
        ("", "<>"),
        ("Alice@Example.COM", "alice@example.com"),
        ("<newsletter+bounce-4711@list.example>", "newsletter@list.example"),
        ("prvs=1234abcdef=newsletter@list.example", "newsletter@list.example"),
        ("msprvs1=19345mMCjd8Ps=bounces-abc@mail.example", "bounces-abc@mail.example"),
        ("bounce-123-456789@mail.example", "bounce-#-#@mail.example"),
        ("PRVS=0123456789=User+tag-77@Example.org", "user@example.org"),
        ("postmaster", "postmaster"),
    ],
)
def test_normalize_sender(sender: str, normalized: str) -> None:
    assert normalize_sender(sender) == normalized


def test_triplet_key_normalizes_both_addresses() -> None:
    assert (
        triplet_key("192.0.2.1", "prvs=1a=news+x@list.example", "<Bob@Example.COM>")
        == "192.0.2.1/news@list.example/bob@example.com"
    )
