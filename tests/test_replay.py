"""`onajimi replay` against logs small enough to check by hand: what the replay makes of
them (the real session core and Decider, on the log's clock), with the shipped
configuration and a few changes to it. The readers, the fixtures and their lines:
tests/test_replay_logs.py.
"""

from __future__ import annotations

import pytest

from gateway.replay.outcome import ReplayResult
from gateway.replay.replay import replay
from gateway.replay.report import when
from tests.conftest import make_settings
from tests.test_replay_logs import local, read_decisions, read_postfix

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def statuses(result: ReplayResult) -> dict[str, str]:
    """Each message the log accepted, by its first recipient: its status."""
    return {m.head.recipient: m.status for m in result.messages()}


def by_recipient(result: ReplayResult):
    return {m.head.recipient: m for m in result.messages()}


# -- the replay ----------------------------------------------------------------------------
def test_the_fixture_with_the_shipped_configuration() -> None:
    """The clean host passes. The S25R host's first message (10:00:10) is deferred and
    rides along with its next session, 360 s later (>= min_retry_delay 300), which the
    deferral procedure promotes: delayed by exactly that gap; its second message is on
    time. The host without a PTR never comes back: waiting. The relay attempt is
    refused, as Postfix refused it, and struck."""
    result = replay(make_settings(), read_postfix())
    categories = {c.address: c.category for c in result.clients.values()}
    assert categories == {
        "203.0.113.5": "passed",
        "198.51.100.7": "deferred, then passed",
        "192.0.2.99": "deferred",
        "203.0.113.66": "refused",
    }
    assert statuses(result) == {
        "bob@example.com": "on time",
        "carol@example.com": "delayed",
        "dave@example.com": "on time",
        "frank@example.com": "waiting",
    }
    messages = by_recipient(result)
    delayed = messages["carol@example.com"]
    assert delayed.added == 360.0 and delayed.first == local(12, 1, 10, 0, 10)
    assert delayed.logged_at == delayed.first  # Postfix took it at once
    waiting = messages["frank@example.com"]
    assert waiting.as_json()["reason"] == "defer/s25r_rule0"
    assert waiting.as_json()["retries_refused"] == 0
    assert result.decisions["reject/relay_denied"] == 1
    assert result.store == {"familiar": 1, "pending": 1, "strikes": 1, "trace": 2}
    ((group, figures),) = result.candidates()
    assert group.suggestion() == "onajimi allow add p1234-ip45.dyn.example.jp"
    assert figures == {"delayed": 1, "waiting": 0, "rescued": 1}


def test_an_attempt_before_min_retry_delay_carries_nothing() -> None:
    """min_retry_delay 900: the next session (360 s on) is too early to retry the first
    message, and is deferred itself: both of the host's messages wait."""
    result = replay(make_settings({"policy": {"min_retry_delay": 900}}), read_postfix())
    assert statuses(result)["carol@example.com"] == "waiting"
    assert statuses(result)["dave@example.com"] == "waiting"
    assert result.clients["198.51.100.7"].category == "deferred"


def _accepted(pid: int, at: str, queue: str, recipient: str) -> str:
    client = "p1234-ip45.dyn.example.jp[198.51.100.7]"
    return f"""
Dec  1 {at} mx postfix/smtpd[{pid}]: connect from {client}
Dec  1 {at} mx postfix/smtpd[{pid}]: {queue}: client={client}
Dec  1 {at} mx postfix/qmgr[900]: {queue}: from=<news@shop.example>, size=900, nrcpt=1
Dec  1 {at} mx postfix/local[3001]: {queue}: to=<{recipient}>, relay=local, status=sent (ok)"""


def test_a_message_is_retried_min_retry_delay_after_its_own_first_attempt() -> None:
    """Three messages of the S25R host, at 10:00:00, 10:01:40 and 10:05:50. The first is
    deferred (first contact), the second too (early: a new message, not counted); the
    third, 350 s after the first contact, is promoted and carries the first (350 >= 300)
    but not the second (250 s after its own first attempt: its sender's timer has not
    run out): that one waits for a retry the log does not show."""
    log = read_postfix(
        _accepted(1, "10:00:00", "AAA1", "m1@example.com")
        + _accepted(2, "10:01:40", "AAA2", "m2@example.com")
        + _accepted(3, "10:05:50", "AAA3", "m3@example.com")
    )
    result = replay(make_settings(), log)
    assert statuses(result) == {
        "m1@example.com": "delayed",
        "m2@example.com": "waiting",
        "m3@example.com": "on time",
    }
    assert by_recipient(result)["m1@example.com"].added == 350.0


def test_with_the_tarpit_a_suspect_waits_and_passes_at_its_first_attempt() -> None:
    result = replay(make_settings({"policy": {"suspect_action": "tarpit"}}), read_postfix())
    messages = by_recipient(result)
    assert messages["carol@example.com"].added == 65.0  # tarpit.delay
    assert messages["frank@example.com"].added == 65.0
    assert messages["dave@example.com"].status == "on time"  # familiar by then


def test_what_postfix_greylisted_passes_at_once_and_its_retry_is_spared() -> None:
    """A clean host greylisted by Postfix (450) and accepted at its retry ten minutes
    later: Onajimi takes it at the first attempt (sooner by 600 s), so the retry would
    not have come. A recipient Postfix refused as unknown (5.1.1) is refused by the
    backend in the replay too, and counts as a strike."""
    log = read_postfix(fixture="greylisted.maillog")
    result = replay(make_settings(), log)
    (message,) = result.messages()
    assert message.status == "sooner" and message.added == -600.0
    assert result.spared == 1
    assert result.decisions == {"pass/clean": 2}
    assert result.store == {"strikes": 1}


# -- Onajimi's own decision log ------------------------------------------------------------
def test_a_decision_log_replayed_with_its_own_and_with_a_slower_configuration() -> None:
    """The same settings give the same decisions: the S25R host's message waited 360 s
    in the log and does with the configuration (on time). With min_retry_delay 900 its
    retry at 360 s is early: it waits for a retry the log does not show."""
    same = replay(make_settings(), read_decisions())
    assert statuses(same) == {"bob@example.com": "on time", "carol@example.com": "on time"}
    message = by_recipient(same)["carol@example.com"]
    assert message.as_json()["delay"] == message.as_json()["logged_delay"] == 360.0
    assert same.decisions == {
        "pass/clean": 1,
        "defer/s25r_rule1": 1,
        "pass/promoted": 1,
        "defer/s25r_rule0": 1,
    }
    slower = replay(make_settings({"policy": {"min_retry_delay": 900}}), read_decisions())
    assert statuses(slower)["carol@example.com"] == "waiting"


def test_local_times_are_shown_as_the_log_wrote_them() -> None:
    assert when(local(12, 1, 10, 0, 10)) == "2026-12-01 10:00:10"
