"""RCPT syntax and the relay check: every relay trick gets a 5xx before any deferral."""

from __future__ import annotations

import pytest

from gateway.policy.recipients import (
    BAD_SYNTAX,
    AcceptDomains,
    ExemptRecipients,
    recipient_syntax,
    relay_check,
)
from gateway.policy.replies import RELAY_DENIED

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

ACCEPT = AcceptDomains.parse(["example.com", ".example.net"])


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.com",
        "Bob@EXAMPLE.COM.",
        "bob@mail.example.net",
        '"john doe"@example.com',
        "postmaster",
        "Postmaster",
    ],
)
def test_ours(address: str) -> None:
    assert recipient_syntax(address) is None
    assert relay_check(address, ACCEPT) is None


@pytest.mark.parametrize(
    "address",
    [
        "bob@elsewhere.example",  # other domain
        "bob@example.net",  # ".example.net" covers subdomains only
        "bob@badexample.com",
        "@relay.example.com,@other.example:bob@elsewhere.example",  # source route
        "@example.com:bob@example.com",
        "bob%elsewhere.example@example.com",  # percent hack
        "elsewhere.example!bob@example.com",  # bang path
        '"bob@elsewhere.example"@example.com',  # quoted local part hiding an address
        '"bob%elsewhere.example"@example.com',
        "bob@[192.0.2.1]",  # address literal
    ],
)
def test_relay_attempts_get_554(address: str) -> None:
    assert recipient_syntax(address) is None
    assert relay_check(address, ACCEPT) == RELAY_DENIED
    assert RELAY_DENIED.code == 554 and RELAY_DENIED.status == "5.7.1"


@pytest.mark.parametrize(
    "address", ["", "bob", "bob@", "@", '"unclosed@example.com', "a\r\nb@example.com"]
)
def test_bad_syntax(address: str) -> None:
    assert recipient_syntax(address) == BAD_SYNTAX


def test_exempt_recipients_by_local_part_mailbox_and_domain() -> None:
    exempt = ExemptRecipients.parse(
        ["postmaster@", "Abuse@", "help@example.com", "@partner.example", "ops.example"]
    )
    assert exempt.exempt("postmaster@example.com") == "postmaster@"
    assert exempt.exempt("PostMaster@sub.example.com") == "postmaster@"
    assert exempt.exempt("<postmaster>") == "postmaster@"  # RFC 5321's domainless form
    assert exempt.exempt("abuse@example.com") == "abuse@"
    assert exempt.exempt("help@example.com") == "help@example.com"
    assert exempt.exempt("help@other.example") is None
    assert exempt.exempt("anyone@partner.example") == "@partner.example"
    assert exempt.exempt("anyone@ops.example") == "@ops.example"
    assert exempt.exempt("bob@example.com") is None
    assert exempt.exempt("not an address") is None
    assert not ExemptRecipients.parse([])
