"""Retry schedules (gateway/simulation/retry.py), against their sources' arithmetic."""

from __future__ import annotations

import random

import pytest

from gateway.simulation.retry import (
    EximRetry,
    IntervalRetry,
    Never,
    PostfixRetry,
    next_queue_run,
    parse_exim_rules,
    parse_time,
)

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

RNG = random.Random(0)


def test_postfix_waits_as_long_as_the_message_has_queued_clamped() -> None:
    timer = PostfixRetry(queue_run=0)  # exactly when due: the arithmetic alone
    # Deferred 1 s after the first try (the backup MX): minimal_backoff_time.
    assert timer.next_try(0, 1, 0, 1, RNG, 0) == (301, 300)
    # Deferred again at 302: it has queued 302 s, so it waits 302 s more.
    assert timer.next_try(0, 302, 300, 2, RNG, 0) == (604, 302)
    # Old messages wait maximal_backoff_time at most.
    assert timer.next_try(0, 10_000, 0, 5, RNG, 0) == (14_000, 4000)
    # Past maximal_queue_lifetime (5 days) it bounces.
    assert timer.next_try(0, 5 * 86400 - 100, 0, 99, RNG, 0) is None


def test_postfix_retries_at_the_next_deferred_queue_scan() -> None:
    timer = PostfixRetry()  # queue_run_delay 300 s, scans at 100, 400, 700, ...
    assert timer.next_try(0, 1, 0, 1, RNG, 100.0) == (400, 300)
    assert next_queue_run(400, 100, 300) == 400  # a scan exactly when due takes it


def test_exim_default_rule_fixed_then_geometric_then_fixed_then_gives_up() -> None:
    timer = EximRetry(queue_run=0)
    assert timer.next_try(0, 0, 0, 1, RNG, 0) == (900, 900)  # F,2h,15m
    when, gap = timer.next_try(0, 7300, 900, 9, RNG, 0)  # past 2h: G,16h,1h,1.5 starts at 1h
    assert (when, gap) == (7300 + 3600, 3600)
    assert timer.next_try(0, 10_900, 3600, 10, RNG, 0) == (10_900 + 5400, 5400)  # x1.5
    assert timer.next_try(0, 17 * 3600, 9999, 20, RNG, 0) == (17 * 3600 + 6 * 3600, 6 * 3600)
    assert timer.next_try(0, 4 * 86400 + 1, 6 * 3600, 30, RNG, 0) is None  # past 4d


def test_exim_retries_wait_for_the_queue_runner() -> None:
    timer = EximRetry()  # -q30m: runs at 1000, 2800, ...
    assert timer.next_try(0, 0, 0, 1, RNG, 1000.0) == (1000, 900)
    assert timer.next_try(0, 200, 0, 1, RNG, 1000.0) == (2800, 900)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("F,2h", "is not F,<cutoff>,<gap>"),
        ("G,16h,1h,0.5", "below 1"),
        ("F,2h,15x", "not a time"),
        ("F,4d,6h; F,2h,15m", "cutoffs must grow"),
    ],
)
def test_exim_rules_that_make_no_sense_say_why(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_exim_rules(text)


def test_exim_times() -> None:
    assert parse_time("15m") == 900
    assert parse_time("1h30m") == 5400
    assert parse_time("4d") == 4 * 86400


def test_interval_timer_tries_lifetime_and_growth() -> None:
    fixed = IntervalRetry(900, 900, lifetime=2 * 86400)
    assert fixed.next_try(0, 10, 0, 1, RNG, 0) == (910, 900)
    assert fixed.next_try(0, 2 * 86400 - 100, 0, 50, RNG, 0) is None
    once = IntervalRetry(600, 600, tries=1)
    assert once.next_try(0, 0, 0, 1, RNG, 0) == (600, 600)
    assert once.next_try(0, 600, 600, 2, RNG, 0) is None
    growing = IntervalRetry(300, 300, factor=2, cap=1000)
    assert [growing.next_try(0, 0, 0, n, RNG, 0)[1] for n in (1, 2, 3)] == [300, 600, 1000]
    assert Never().next_try(0, 0, 0, 1, RNG, 0) is None
