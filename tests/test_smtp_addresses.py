"""The fast path for MAIL/RCPT arguments gives exactly what aiosmtpd's parser gives."""

from __future__ import annotations

import random

import pytest
from aiosmtpd.smtp import SMTP

from gateway.smtp.addresses import helo_fault, path_fault, plain_path

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def aiosmtpd_getaddr(argument: str) -> tuple[str | None, str | None]:
    # _getaddr only reads the class attribute local_part_limit: no connection needed.
    return SMTP._getaddr(SMTP.__new__(SMTP), argument)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<a@b.example>", ("a@b.example", "")),
        ("<a@b.example> SIZE=1000 BODY=8BITMIME", ("a@b.example", "SIZE=1000 BODY=8BITMIME")),
        ("<>", ("<>", "")),
        ("<> SIZE=10", ("<>", " SIZE=10")),
        ("<first.last+tag@mail.example.org>", ("first.last+tag@mail.example.org", "")),
        ("<o'brien@example.ie>", ("o'brien@example.ie", "")),
    ],
)
def test_plain_paths_match_the_parser(argument: str, expected: tuple[str, str]) -> None:
    assert plain_path(argument) == expected
    assert aiosmtpd_getaddr(argument) == expected


@pytest.mark.parametrize(
    "argument",
    [
        '<"quoted local"@example.org>',
        "<user@[192.0.2.1]>",
        "<@relay.example:user@example.org>",
        "<a@b>(comment)",
        "<a@b>x",
        "<a..b@example.org>",
        "<.a@example.org>",
        "<a@b.>",
        "<ü@example.org>",
        "a@example.org",
        "<a@b",
        "",
    ],
)
def test_anything_else_is_left_to_the_parser(argument: str) -> None:
    assert plain_path(argument) is None


def test_generated_arguments_agree_with_the_parser() -> None:
    """Random arguments built from the characters that matter to either reader."""
    rng = random.Random(2026)
    pieces = ["a", "Z", "0", "-", "_", "+", "'", ".", "..", "@", "<", ">", " ", "\t",
              '"', "(", ")", "[", "]", ",", ";", ":", "\\", "é", "SIZE=1", "x.example"]  # fmt: skip
    fast = 0
    for _ in range(20_000):
        body = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        start = ["<", "<a@b", "<x.y@z.example", "", "<a@b>", "<a@b> ", "<>", "<> ", "<a@b>  "]
        argument = rng.choice(start) + body
        ours = plain_path(argument)
        if ours is not None:
            fast += 1
            assert ours == aiosmtpd_getaddr(argument), argument
    assert fast > 2_000  # the generator does reach the fast path


@pytest.mark.parametrize(
    ("argument", "address", "fault"),
    [
        ("<bob@example.com>", "bob@example.com", None),
        ('<"a b"@example.com>', '"a b"@example.com', None),
        ("<bob@[192.0.2.1]>", "bob@[192.0.2.1]", None),
        ("<bob@example.com >", "bob@example.com", "a space inside the angle brackets"),
        ("< bob@example.com>", "bob@example.com", "a space inside the angle brackets"),
        ("<bo\x00b@example.com>", "bob@example.com", "a control character"),
        (f"<b@{'a' * 64}.com>", f"b@{'a' * 64}.com", "a domain longer than DNS allows"),
        (f"<b@{'a.' * 128}com>", f"b@{'a.' * 128}com", "a domain longer than DNS allows"),
        (f"<b@{'a' * 63}.com>", f"b@{'a' * 63}.com", None),
    ],
)
def test_path_fault(argument: str, address: str, fault: str | None) -> None:
    assert path_fault(argument, address) == fault


def test_helo_fault() -> None:
    assert helo_fault("mx.example.org") is None and helo_fault("[192.0.2.1]") is None
    assert helo_fault("mx\x00.example.org") == "a control character"
    assert helo_fault("m" * 256) == "longer than a domain name can be"
