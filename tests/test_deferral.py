"""Every transition of the deferral procedure (SPEC section 3), boundaries included."""

from __future__ import annotations

import pytest

from gateway.policy.deferral import Rules, count_pass, on_delivery, step
from gateway.policy.records import Familiar, Penalty, Pending, Tally
from gateway.policy.replies import Wording
from gateway.policy.vocabulary import Action, Reason, Retry

T0 = 1_800_000_000.0
RULES = Rules(
    min_retry_delay=300,
    retry_window=86400,
    familiar_ttl=3024000,
    impatient_retries=5,
    penalty_ttl=3600,
    auto_familiar_after=3,
)
R1 = Reason.S25R_RULE1


def first(now: float = T0):
    return step(None, now, RULES, R1, client="192.0.2.9", ptr="p1.dyn.example.net")


def test_new_key_is_deferred_and_recorded() -> None:
    s = first()
    assert s.action is Action.DEFER and s.reason is R1
    assert s.changed and isinstance(s.record, Pending)
    assert s.record == Pending(
        T0, T0, 1, 0, "s25r_rule1", T0 + 2 * 86400, "192.0.2.9", "p1.dyn.example.net"
    )
    assert s.reply is not None and str(s.reply) == (
        "450 4.7.1 Try again later: first contact from this host (s25r_rule1)"
    )
    assert s.retry is None and s.attempt == 1 and s.wait == 300


def test_early_retry_counts_and_keeps_first_seen() -> None:
    s1 = first()
    s2 = step(s1.record, T0 + 299.5, RULES, R1)
    assert s2.action is Action.DEFER and s2.reason is Reason.EARLY_RETRY
    assert s2.retry is Retry.EARLY
    assert s2.record.first_seen == T0  # an early retry never moves first_seen
    assert (s2.record.attempts, s2.record.early) == (2, 1)
    assert s2.record.last_seen == T0 + 299.5
    assert s2.record.reason == "s25r_rule1"  # the original reason is kept for candidates
    assert s2.wait == pytest.approx(0.5)
    assert "retry in 1s at the earliest" in s2.reply.text


def test_boundary_exactly_min_retry_delay_promotes() -> None:
    s = step(first().record, T0 + 300, RULES, R1)
    assert s.action is Action.PASS and s.reason is Reason.PROMOTED and s.retry is Retry.PROMOTED
    assert s.record == Familiar(T0 + 300, T0 + 300, T0 + 300 + 3024000)
    assert s.reply is None and s.attempt == 2


def test_boundary_exactly_retry_window_promotes_and_one_second_later_starts_over() -> None:
    record = first().record
    at_window = step(record, T0 + 86400, RULES, R1)
    assert at_window.reason is Reason.PROMOTED
    late = step(record, T0 + 86400.001, RULES, R1)
    assert late.action is Action.DEFER and late.reason is R1 and late.retry is Retry.EXPIRED
    assert late.record.first_seen == T0 + 86400.001 and late.record.attempts == 1


def test_pending_record_gone_from_store_after_its_expiry_is_a_stranger_again() -> None:
    record = first().record
    s = step(record, record.expires, RULES, R1)
    assert s.reason is R1 and s.retry is None  # expired out of the store: a new contact


def test_impatient_host_goes_to_penalty_box_and_its_key_is_cleared() -> None:
    record = first().record
    for i in range(1, 5):
        s = step(record, T0 + i, RULES, R1, client="192.0.2.9")
        assert s.action is Action.DEFER and s.record.early == i
        record = s.record
    s = step(record, T0 + 5, RULES, R1, client="192.0.2.9")
    assert s.action is Action.PENALTY and s.reason is Reason.IMPATIENT
    assert s.record is None and s.changed  # the key is cleared: no promotion after the penalty
    assert s.penalty == Penalty(T0 + 5, T0 + 5 + 3600, 6, "192.0.2.9", "p1.dyn.example.net")
    assert s.reply is not None and s.reply.code == 421 and s.reply.status == "4.7.0"


def test_impatient_retries_zero_never_penalises() -> None:
    rules = Rules(impatient_retries=0)
    record = step(None, T0, rules, R1).record
    for i in range(1, 50):
        s = step(record, T0 + i, rules, R1)
        assert s.action is Action.DEFER
        record = s.record
    assert record.early == 49


def test_familiar_passes_without_writing_until_expiry() -> None:
    familiar = Familiar(T0, T0, T0 + 3024000)
    s = step(familiar, T0 + 3023999, RULES, R1)
    assert s.action is Action.PASS and s.reason is Reason.FAMILIAR and not s.changed
    expired = step(familiar, T0 + 3024000, RULES, R1)
    assert expired.action is Action.DEFER and expired.reason is R1
    assert isinstance(expired.record, Pending)


def test_delivery_refreshes_familiar_only() -> None:
    familiar = Familiar(T0, T0, T0 + 3024000)
    refreshed = on_delivery(familiar, T0 + 1000, RULES)
    assert refreshed == Familiar(T0, T0 + 1000, T0 + 1000 + 3024000)
    assert on_delivery(first().record, T0 + 1, RULES) is None
    assert on_delivery(None, T0, RULES) is None
    assert on_delivery(familiar, T0 + 3024000, RULES) is None  # already expired


def test_triplet_passes_make_the_client_familiar() -> None:
    r1 = count_pass(None, T0, RULES)
    assert r1 == Tally(1, T0, T0 + 3024000)
    r2 = count_pass(r1, T0 + 10, RULES)
    assert isinstance(r2, Tally) and r2.passed == 2
    r3 = count_pass(r2, T0 + 20, RULES)
    assert r3 == Familiar(T0 + 20, T0 + 20, T0 + 20 + 3024000)
    assert count_pass(r3, T0 + 30, RULES) is None
    assert count_pass(None, T0, Rules(auto_familiar_after=0)) is None
    assert isinstance(count_pass(first().record, T0, RULES), Tally)  # a mode switch: start counting


def test_foreign_record_kinds_count_as_absent() -> None:
    s = step(Tally(2, T0, T0 + 100), T0 + 1, RULES, Reason.GREYLIST)
    assert s.reason is Reason.GREYLIST and s.record.attempts == 1


def test_defer_text_and_help_url() -> None:
    rules = Rules(wording=Wording("Greylisted ({reason})", "https://help.example.com/onajimi"))
    s = step(None, T0, rules, Reason.ICHIGEN)
    assert str(s.reply) == "450 4.7.1 Greylisted (ichigen), see https://help.example.com/onajimi"
