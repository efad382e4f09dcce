"""The observer: what the session core noted becomes one log line and the matching metric.

No socket: a Session is driven through its rules with facts given as values, and its
notes are handed to an Observer over a fresh Metrics registry.
"""

from __future__ import annotations

import logging

import pytest

from gateway.metrics import Metrics
from gateway.observer import Observer
from gateway.policy.decision import RcptDecision
from gateway.policy.vocabulary import BareNewline, Limit, OnError, RelayResult
from gateway.relay.reply import BackendReply
from gateway.smtp.session import SessionRules, StoreFault
from tests.sessions import CLIENT, DEFER, NOW, OK, PASS, QUEUED, accepted, in_transaction

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def observer() -> Observer:
    return Observer(Metrics())


def lines(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_a_decision_is_one_line_and_one_count(observer, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi")
    session = in_transaction()
    session.rcpt_decided("bob@example.com", RcptDecision(DEFER, CLIENT))
    observer.noted(session)
    (line,) = lines(caplog, "onajimi.decision")
    assert line.startswith(f"decision session={session.id} client={CLIENT} ptr=mail.example.org")
    assert "from=<a@sender.example> to=<bob@example.com> action=defer reason=s25r_rule1" in line
    assert f"key={CLIENT}" in line
    counted = sample(
        observer.metrics, "onajimi_decisions_total", action="defer", reason="s25r_rule1"
    )
    assert counted == 1
    assert session.notes == []  # drained: written once


def test_a_delivery_is_one_relay_line_and_one_count(observer, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi")
    session = in_transaction()
    accepted(session)
    session.data()
    session.message(b"Subject: x\r\n\r\nhello\r\n", NOW)
    session.delivered(QUEUED, 0.25)
    observer.noted(session)
    (line,) = lines(caplog, "onajimi.relay")
    assert f"id={session.id}.1" in line and "to=<bob@example.com> rcpts=1 size=21" in line
    assert 'result=delivered reply="250 2.0.0 Ok: queued as ABC" seconds=0.250' in line
    for result in RelayResult:
        expected = 1 if result is RelayResult.DELIVERED else 0
        assert sample(observer.metrics, "onajimi_relay_transactions_total", result=result) == (
            expected
        )
    assert sample(observer.metrics, "onajimi_relay_seconds_count") == 1


def test_a_limit_is_a_line_and_a_count(observer, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi")
    session = in_transaction()
    session.timed_out()
    observer.noted(session)
    (line,) = [line for line in lines(caplog, "onajimi") if line.startswith("limit ")]
    assert line == f"limit session={session.id} client={CLIENT} limit=command_timeout"
    for limit in Limit:
        expected = 1 if limit is Limit.COMMAND_TIMEOUT else 0
        assert sample(observer.metrics, "onajimi_limit_refusals_total", limit=limit) == expected


@pytest.mark.parametrize("on_error", list(OnError), ids=str)
def test_a_store_outage_says_what_the_client_got(observer, caplog, on_error) -> None:
    caplog.set_level(logging.INFO, logger="onajimi")
    session = in_transaction(rules=SessionRules(on_error=on_error))
    session.rcpt_decided("bob@example.com", StoreFault.ERROR)
    observer.noted(session)
    (line,) = [line for line in lines(caplog, "onajimi") if line.startswith("store_error ")]
    assert line.endswith(f"to=bob@example.com on_error={on_error}")


def test_a_backend_failure_is_a_warning(observer, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi")
    session = in_transaction()
    session.rcpt_decided("bob@example.com", RcptDecision(PASS, CLIENT))
    session.backend_error(BackendReply(451, "4.4.1 unavailable"), "connection refused")
    observer.noted(session)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("backend_error ")]
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith('detail="connection refused"')


def test_repairs_are_counted_by_what(observer) -> None:
    session = in_transaction(rules=SessionRules(bare_newline=BareNewline.NORMALIZE))
    accepted(session)
    session.data()
    session.message(b"a\nb\x00\r\n", NOW)
    observer.noted(session)
    assert sample(observer.metrics, "onajimi_data_normalized_total", what="nul") == 1
    assert sample(observer.metrics, "onajimi_data_normalized_total", what="bare_newline") == 1


def test_the_relay_line_names_five_recipients_at_most(observer, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi")
    session = in_transaction()
    for n in range(7):
        accepted(session, f"user{n}@example.com")
    session.data()
    session.message(b"x\r\n", NOW)
    session.delivered(OK, 0.01)
    observer.noted(session)
    (line,) = lines(caplog, "onajimi.relay")
    assert "<user4@example.com>... rcpts=7" in line
