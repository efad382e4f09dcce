"""gateway/relay/content.py: what may reach the backend, refused or normalized."""

from __future__ import annotations

import pytest

from gateway.policy.replies import BARE_NEWLINE, NUL
from gateway.policy.vocabulary import BareNewline
from gateway.relay.content import screen_content

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (b"Subject: x\r\n\r\nfine\r\n", None),
        (b"a\nb\r\n", BARE_NEWLINE),
        (b"a\rb\r\n", BARE_NEWLINE),
        (b"a\r\n\x00.\r\nb\r\n", NUL),
        (b"a\r\n.\x00\r\nb\r\n", NUL),
    ],
)
def test_reject_mode_refuses_bare_line_ends_and_nul(data: bytes, refusal: str | None) -> None:
    screened = screen_content(data, BareNewline.REJECT)
    assert screened.refusal == refusal and screened.content == data


def test_normalize_mode_repairs_and_says_what() -> None:
    assert screen_content(b"a\r\x00\nb\n", BareNewline.NORMALIZE).content == b"a\r\nb\r\n"
    screened = screen_content(b"a\r\n\x00.\r\nb\rc\r\n", BareNewline.NORMALIZE)
    assert screened.refusal is None
    assert screened.content == b"a\r\n.\r\nb\r\nc\r\n"  # the lone dot: stuffed on the way out
    assert screened.normalized == ("nul", "bare_newline")
    assert screen_content(b"clean\r\n", BareNewline.NORMALIZE).normalized == ()
