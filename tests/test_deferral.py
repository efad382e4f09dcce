"""Every transition of the deferral procedure (README "How it decides"), boundaries included."""

from __future__ import annotations

import pytest

from gateway.policy.deferral import (
    Attempt,
    AttemptKind,
    DeferralRules,
    abandoned,
    count_pass,
    on_delivery,
    promoted,
    step,
)
from gateway.policy.keys import message_key
from gateway.policy.messages import MESSAGES_KEPT, Message, envelope, recipient_id
from gateway.policy.records import Familiar, Penalty, Pending, Tally
from gateway.policy.replies import Wording
from gateway.policy.vocabulary import Action, PromoteOn, Reason, Retry

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

T0 = 1_800_000_000.0
RULES = DeferralRules(
    min_retry_delay=300,
    retry_window=86400,
    familiar_ttl=3024000,
    impatient_retries=5,
    penalty_ttl=3600,
    auto_familiar_after=3,
)
R1 = Reason.S25R_RULE1


def msg(name: str, size: int | None = 2048, recipient: str = "bob@example.com"):
    """The envelope of message `name`: its own sender, one recipient, a SIZE."""
    return envelope(f"sender@{name}.example", recipient, size)


MSG = Attempt(msg("m1"), "mx1")


def first(now: float = T0):
    return step(None, now, RULES, R1, client="192.0.2.9", ptr="p1.dyn.example.net", attempt=MSG)


def test_new_key_is_deferred_and_recorded() -> None:
    s = first()
    assert s.action is Action.DEFER and s.reason is R1
    assert s.changed and isinstance(s.record, Pending)
    assert s.record == Pending(
        T0,
        T0,
        1,
        0,
        "s25r_rule1",
        T0 + 2 * 86400,
        "192.0.2.9",
        "p1.dyn.example.net",
        counted_at=T0,
        remembered=(Message(MSG.envelope.sender, 2048, MSG.envelope.recipients, T0, T0, "mx1"),),
    )
    assert s.reply is not None and str(s.reply) == (
        "450 4.7.1 Try again later: first contact from this host (s25r_rule1);"
        " retry in 5m00s at the earliest"
    )
    assert s.retry is None and s.attempt == 1 and s.wait == 300


def test_early_retry_counts_and_keeps_first_seen() -> None:
    s1 = first()
    s2 = step(s1.record, T0 + 20, RULES, R1, attempt=MSG)
    assert s2.action is Action.DEFER and s2.reason is Reason.EARLY_RETRY
    assert s2.retry is Retry.EARLY and s2.kind is AttemptKind.EARLY_RETRY
    assert s2.record.first_seen == T0  # an early retry never moves first_seen
    assert (s2.record.attempts, s2.record.early) == (2, 1)
    assert s2.record.last_seen == T0 + 20
    assert s2.record.reason == "s25r_rule1"  # the original reason is kept for candidates
    assert s2.wait == pytest.approx(280)
    assert "retry in 4m40s at the earliest" in s2.reply.text
    # Half a minute or more after its previous try: a (short) retry timer, not counted.
    s3 = step(s2.record, T0 + 299.5, RULES, R1, attempt=MSG)
    assert s3.kind is AttemptKind.PATIENT_RETRY and s3.early == 1
    # Not counted, so not an early retry: the key's reason, and words for a retry.
    assert s3.reason is R1 and s3.retry is Retry.EARLY
    assert s3.reply.text == (
        "Try again later: retried before the delay (s25r_rule1); retry in 1s at the earliest"
    )
    assert "retried too soon (early_retry)" in s2.reply.text


# -- promotion is earned by a retry of a deferred message (issue 23) ---------------------


def test_a_new_message_after_the_delay_is_deferred_and_remembered() -> None:
    record = first().record
    later = step(record, T0 + 400, RULES, R1, attempt=Attempt(msg("other"), "mx1"))
    assert later.action is Action.DEFER and later.kind is AttemptKind.NEW_MESSAGE
    assert later.reason is R1 and later.wait == 300  # its own delay, from now
    assert "a new message from this host (s25r_rule1); retry in 5m00s" in later.reply.text
    # The first message's retry promotes; the new one's too, once its own delay is over.
    assert step(later.record, T0 + 400, RULES, R1, attempt=MSG).reason is Reason.PROMOTED
    too_soon = step(later.record, T0 + 600, RULES, R1, attempt=Attempt(msg("other"), "mx1"))
    assert too_soon.action is Action.DEFER and too_soon.kind is AttemptKind.PATIENT_RETRY
    assert too_soon.wait == pytest.approx(100)
    again = step(later.record, T0 + 700, RULES, R1, attempt=Attempt(msg("other"), "mx1"))
    assert again.reason is Reason.PROMOTED and again.kind is AttemptKind.RETRY
    assert again.matched is not None and again.matched.first == T0 + 400


def test_a_bot_returning_with_new_spam_never_gets_in() -> None:
    record = first().record
    for hour in range(1, 24):  # new spam every hour for a day
        s = step(record, T0 + 3600 * hour, RULES, R1, attempt=Attempt(msg(f"spam{hour}x"), "mx1"))
        assert s.action is Action.DEFER and s.kind is AttemptKind.NEW_MESSAGE
        record = s.record
    assert len(record.remembered) == MESSAGES_KEPT
    # With promote_on = "any" (the seed's rule) its first return promotes it.
    rules = DeferralRules(promote_on=PromoteOn.ANY)
    anything = step(first().record, T0 + 3600, rules, R1, attempt=Attempt(msg("spam"), "mx1"))
    assert anything.reason is Reason.PROMOTED and anything.kind is AttemptKind.RETURN


def test_what_makes_an_attempt_a_retry_of_a_deferred_message() -> None:
    both = envelope("alice@a.example", "bob@example.com", 5000)
    both = both.with_recipient(recipient_id("carol@example.com"))
    record = step(None, T0, RULES, R1, attempt=Attempt(both, "mx1")).record

    def promoted_by(env) -> bool:
        return (
            step(record, T0 + 300, RULES, R1, attempt=Attempt(env, "mx1")).kind is AttemptKind.RETRY
        )

    # Only the recipient still pending (bob was delivered elsewhere): the same message.
    assert promoted_by(envelope("alice@a.example", "carol@example.com", 5000))
    # A new BATV tag, a VERP digit run or an SRS rewrite of the same sender: the same.
    assert promoted_by(envelope("prvs=0123abcd=alice@a.example", "bob@example.com", 5000))
    srs = "SRS0=HHH=TT=a.example=alice@forwarder.example"
    assert envelope(srs, "bob@example.com", 5000).sender == both.sender
    # Another SIZE, another sender, no recipient in common: another message.
    assert not promoted_by(envelope("alice@a.example", "bob@example.com", 5001))
    assert not promoted_by(envelope("alice@a.example", "bob@example.com", None))
    assert not promoted_by(envelope("mallory@a.example", "bob@example.com", 5000))
    assert not promoted_by(envelope("alice@a.example", "dave@example.com", 5000))
    assert not promoted_by(envelope("<>", "bob@example.com", 5000))  # <> matches only <>
    # No SIZE at all, both times: the same message.
    bare = step(None, T0, RULES, R1, attempt=Attempt(msg("x", None), "mx1")).record
    assert (
        step(bare, T0 + 300, RULES, R1, attempt=Attempt(msg("x", None))).kind is AttemptKind.RETRY
    )


def test_the_delay_counts_per_message_and_the_window_too() -> None:
    record = first().record
    record = step(record, T0 + 250, RULES, R1, attempt=Attempt(msg("second"), "mx1")).record
    # At +350 the first message is due, the second is not.
    assert step(record, T0 + 350, RULES, R1, attempt=MSG).kind is AttemptKind.RETRY
    early = step(record, T0 + 350, RULES, R1, attempt=Attempt(msg("second"), "mx1"))
    assert early.action is Action.DEFER and early.wait == pytest.approx(200)
    # A retry a window after its message's first try is too late: it starts over.
    late = step(record, T0 + 86400 + 1, RULES, R1, attempt=MSG)
    assert late.kind is AttemptKind.EXPIRED and late.retry is Retry.EXPIRED and late.wait == 300
    assert step(late.record, T0 + 86400 + 301, RULES, R1, attempt=MSG).kind is AttemptKind.RETRY


def test_a_further_recipient_joins_the_message_and_a_retry_carrying_it_matches() -> None:
    record = first().record  # deferred at bob's RCPT
    joined = Attempt(MSG.envelope.with_recipient(recipient_id("carol@example.com")), more=True)
    s = step(record, T0 + 0.1, RULES, R1, attempt=joined)
    assert s.action is Action.DEFER and s.record.attempts == 1  # still one attempt
    assert len(s.record.remembered[0].recipients) == 2
    retry = Attempt(msg("m1", recipient="carol@example.com"))
    assert step(s.record, T0 + 300, RULES, R1, attempt=retry).kind is AttemptKind.RETRY


def test_a_big_backlog_retried_in_order_meets_a_message_it_remembers() -> None:
    # OpenSMTPD: 200 messages to 200 addresses, ten a session, retried in the order it
    # first sent them. The forgotten ones come first; deferred again, they must not push
    # out the remembered ones, or the host would never be let in.
    def session(at: float, first_n: int) -> list:
        return [(at, [f"n{first_n + k}x"], "mx1") for k in range(10)]

    flush = [event for i in range(20) for event in session(i * 5.0, 10 * i)]
    retry = [event for i in range(20) for event in session(400 + i * 5.0, 10 * i)]
    steps = attempts([(at, names[0], place) for at, names, place in flush + retry])
    promoted_at = next(i for i, s in enumerate(steps) if s.action is Action.PASS)
    assert promoted_at == 200  # the retry of the very first message


def test_a_record_of_the_version_before_still_reads_and_promotes() -> None:
    old_key = message_key("sender@m1.example", "bob@example.com", 2048)
    legacy = Pending(T0, T0, 1, 0, "s25r_rule1", T0 + 86400, messages=((old_key, T0, "mx1"),))
    assert step(legacy, T0 + 300, RULES, R1, attempt=MSG).kind is AttemptKind.RETRY  # its retry
    newer = step(legacy, T0 + 300, RULES, R1, attempt=Attempt(msg("m2"), "mx1"))
    assert newer.kind is AttemptKind.NEW_MESSAGE
    assert newer.record.messages == () and len(newer.record.remembered) == 2  # upgraded


# -- what counts as impatient (issue 9): real MTAs never, bots always -------------------


def attempts(events, rules: DeferralRules = RULES, reason: Reason = R1, record=None):
    """Run (seconds after T0, message, place[, judge_pace]) attempts through one key."""
    steps = []
    for event in events:
        at, message, place, *pace = event
        env = msg(message) if message else None
        attempt = Attempt(env, place, judge_pace=pace[0] if pace else True)
        s = step(record, T0 + at, rules, reason, client="192.0.2.9", attempt=attempt)
        steps.append(s)
        record = s.record
    return steps


def test_a_backlog_in_parallel_sessions_is_not_a_retry() -> None:
    # Postfix with 20 queued messages: five sessions at once, then one per message.
    steps = attempts([(i * 0.05, f"m{i}", "mx1") for i in range(20)])
    assert [s.action for s in steps] == [Action.DEFER] * 20
    assert {s.kind for s in steps[1:]} == {AttemptKind.NEW_MESSAGE}
    assert all(s.reason is R1 and s.retry is None for s in steps)  # still a first contact
    assert steps[-1].record.early == 0 and steps[-1].record.attempts == 20
    assert "retry in 5m00s at the earliest" in steps[-1].reply.text
    assert len(steps[-1].record.remembered) == MESSAGES_KEPT  # bounded memory
    promoted = step(steps[-1].record, T0 + 300, RULES, R1, attempt=Attempt(msg("m0"), "mx1"))
    assert promoted.reason is Reason.PROMOTED


def test_the_same_message_at_our_other_mx_at_once_is_a_fallback() -> None:
    steps = attempts([(0, "m", "mx1"), (0.2, "m", "mx2"), (0.4, "m", "mx3")])
    assert [s.kind for s in steps] == [
        AttemptKind.FIRST,
        AttemptKind.MX_FALLBACK,
        AttemptKind.MX_FALLBACK,
    ]
    assert steps[-1].record.early == 0 and steps[-1].reason is R1
    # At the other MX after the burst, it is a retry.
    late = attempts([(0, "m", "mx1"), (6, "m", "mx2")])
    assert late[-1].kind is AttemptKind.EARLY_RETRY and late[-1].early == 1


def test_look_alike_messages_of_a_backlog_are_not_retries() -> None:
    # Twenty alerts of one template to one address (same sender, recipient and SIZE), in
    # parallel sessions and then one per message, at both MX hosts.
    events = []
    for i in range(20):
        events += [(i * 0.05, "alert", "mx1"), (i * 0.05 + 0.02, "alert", "mx2")]
    steps = attempts(events)
    assert {s.kind for s in steps[1:]} == {AttemptKind.LOOK_ALIKE, AttemptKind.MX_FALLBACK}
    assert steps[-1].early == 0
    assert all(s.reason is R1 for s in steps if s.kind is not AttemptKind.MX_FALLBACK)
    # At concurrency 1 over a slow link: one every two seconds, for forty seconds.
    slow = attempts([(i * 2, "alert", "mx1") for i in range(20)])
    assert slow[-1].early == 0 and slow[-1].record.burst_over is False


def test_a_retry_timer_is_patience_however_short() -> None:
    # Messages arriving over a minute, each retried after its own 60 s timer (a short
    # one: Postfix waits 300 s, Exim 15 min), at both MX hosts: never counted.
    events = []
    for i in range(10):
        for at in (i * 6, i * 6 + 60, i * 6 + 120, i * 6 + 180):
            events += [(at, f"m{i}", "mx1"), (at + 0.1, f"m{i}", "mx2")]
    steps = attempts(sorted(events))
    assert all(s.action is Action.DEFER for s in steps)
    assert steps[-1].record.early == 0
    assert {s.kind for s in steps} >= {
        AttemptKind.PATIENT_RETRY,
        AttemptKind.MX_FALLBACK,
        AttemptKind.NEW_MESSAGE,
    }
    promoted = step(steps[-1].record, T0 + 300, RULES, R1, attempt=Attempt(msg("m0"), "mx1"))
    assert promoted.reason is Reason.PROMOTED


def test_a_bot_retrying_at_once_and_then_every_five_seconds_is_impatient() -> None:
    # Ten at once at first contact look like ten copies; the retries that follow every
    # five seconds are counted one by one: the box within half a minute.
    events = [(i * 0.1, "spam", "mx1") for i in range(10)]
    events += [(1 + i * 5, "spam", "mx1") for i in range(1, 13)]
    steps = attempts(events)
    penalised = next(i for i, s in enumerate(steps) if s.action is Action.PENALTY)
    assert [s.kind for s in steps[1:10]] == [AttemptKind.LOOK_ALIKE] * 9
    assert steps[penalised].reason is Reason.IMPATIENT and steps[penalised].early == 5
    assert steps[penalised].reply.code == 421 and steps[penalised].reply.status == "4.7.0"
    at = events[penalised][0]
    assert at <= 30
    assert steps[penalised].penalty == Penalty(
        T0 + at, T0 + at + 3600, penalised + 1, "192.0.2.9", ""
    )


@pytest.mark.parametrize("interval", [1, 2, 3, 4.9, 5, 10, 20, 29])
def test_a_bot_retrying_one_message_is_boxed_before_it_could_be_promoted(interval) -> None:
    steps = attempts([(i * interval, "spam", "mx1") for i in range(int(300 / interval))])
    penalised = next(i for i, s in enumerate(steps) if s.action is Action.PENALTY)
    assert penalised * interval <= 60 + 5 * interval  # round 0 lasts a fifth of the delay


@pytest.mark.parametrize("interval", [1, 2, 4])
def test_a_bot_alternating_our_two_mx_is_boxed_too(interval) -> None:
    events = [(i * interval, "spam", ("mx1", "mx2")[i % 2]) for i in range(int(300 / interval))]
    steps = attempts(events)
    penalised = next(i for i, s in enumerate(steps) if s.action is Action.PENALTY)
    assert penalised * interval <= 60 + 10 * interval


def test_a_bot_cycling_two_messages_is_boxed() -> None:
    steps = attempts([(i * 1.5, f"spam{i % 2}", "mx1") for i in range(200)])
    assert any(s.action is Action.PENALTY for s in steps)


def test_a_fast_bot_is_given_away_by_its_pace_even_within_round_0() -> None:
    fast = attempts([(i / 10, "spam", "mx1") for i in range(3000)])
    penalised = next(i for i, s in enumerate(fast) if s.action is Action.PENALTY)
    assert fast[penalised].kind is AttemptKind.PACE and penalised / 10 < 60


def test_a_bot_rotating_senders_and_recipients_is_caught_by_its_pace() -> None:
    # 50 sessions a second, never the same message twice: no retry at all, but a pace no
    # MTA keeps up. Past pace_allowance each burst_window counts once.
    steps = attempts([(i / 50, f"m{i}", "mx1") for i in range(2000)])
    penalised = next(i for i, s in enumerate(steps) if s.action is Action.PENALTY)
    assert steps[penalised].kind is AttemptKind.PACE
    assert penalised > 300 and penalised / 50 < 60  # caught within a minute
    assert sum(s.kind is AttemptKind.PACE for s in steps[: penalised + 1]) == 5
    # A key that gathers a whole domain's servers (rDNS lumping) is not judged by pace.
    lumped = attempts([(i / 50, f"m{i}", "mx1", False) for i in range(2000)])
    assert all(s.action is Action.DEFER for s in lumped)
    # An MTA with new mail every two seconds for the whole delay is not caught either.
    steady = attempts([(i * 2, f"m{i}", "mx1") for i in range(150)])
    assert steady[-1].record.early == 0


def sessions(events, rules: DeferralRules = RULES, record=None):
    """Run (seconds after T0, [message of each transaction], place) sessions through one
    key, each transaction as decider.at_rcpt makes it (SessionDecisions): the steps."""
    steps = []
    for at, messages, place in events:
        earlier: list = []
        for message in messages:
            attempt = Attempt(msg(message), place, earlier=tuple(earlier))
            s = step(record, T0 + at, rules, R1, client="192.0.2.9", attempt=attempt)
            steps.append(s)
            record = s.record
            if s.action is not Action.DEFER:
                break
            earlier.append(msg(message))
    return steps


def test_a_backlog_without_size_ten_a_session_is_never_counted() -> None:
    # OpenSMTPD: no SIZE, so 200 notices from one sender to one address share one
    # message key; ten a session, the next session five seconds after, then its first
    # retry at 400 s.
    flush = [(i * 5.0, ["notice"] * 10, "mx1") for i in range(20)]
    steps = sessions([*flush, (400.0, ["notice"] * 10, "mx1")])
    deferred = steps[:200]
    assert all(s.action is Action.DEFER for s in deferred)
    assert deferred[-1].record.early == 0 and deferred[-1].record.attempts == 20  # sessions
    assert {s.kind for s in deferred} == {
        AttemptKind.FIRST,
        AttemptKind.COPY,
        AttemptKind.LOOK_ALIKE,
    }
    assert all(s.reason is R1 and s.retry is None for s in deferred)
    assert "first contact from this host" in deferred[0].reply.text
    assert all("another copy of a deferred message" in s.reply.text for s in deferred[1:])
    assert steps[200].reason is Reason.PROMOTED  # the retry at 400 s


def test_a_bot_with_one_message_a_session_is_boxed_as_before() -> None:
    # One message, session after session, five seconds apart: never a copy to show.
    steps = sessions([(i * 5.0, ["spam"], "mx1") for i in range(60)])
    penalised = next(i for i, s in enumerate(steps) if s.action is Action.PENALTY)
    assert penalised * 5 <= 30
    # With a copy shown once, the sessions it pays for are not counted, and then the
    # count goes on: boxed a session later.
    once = sessions(
        [(0.0, ["spam", "spam"], "mx1"), *((i * 5.0, ["spam"], "mx1") for i in range(1, 60))]
    )
    boxed = next(i for i, s in enumerate(once) if s.action is Action.PENALTY)
    assert once[2].kind is AttemptKind.LOOK_ALIKE and boxed == penalised + 2


def test_a_bot_that_sends_its_message_twice_a_session_is_not_counted_but_waits() -> None:
    # What the rule cannot tell apart (README): it looks like a backlog of copies. It is
    # never boxed, and never passes before the delay either.
    steps = sessions([(i * 5.0, ["spam", "spam"], "mx1") for i in range(59)])
    assert all(s.action is Action.DEFER for s in steps) and steps[-1].record.early == 0


def test_a_backlog_down_cached_connections_is_never_counted() -> None:
    # Postfix's connection cache: five sessions at once, each then carrying more of the
    # backlog (three sizes, so look-alikes of the other sessions' messages) for a while.
    events = [(i * 0.1, [f"size{(i + k) % 3}" for k in range(4)], "mx1") for i in range(5)]
    events += [(7.0 + i, [f"size{(i + k) % 3}" for k in range(4)], "mx1") for i in range(5)]
    steps = sessions(events)
    assert all(s.action is Action.DEFER for s in steps) and steps[-1].record.early == 0
    assert steps[-1].record.attempts == 10  # sessions


def test_a_session_counts_once_and_is_one_attempt() -> None:
    first = sessions([(0.0, ["a", "b", "c"], "mx1")])
    assert [s.kind for s in first] == [
        AttemptKind.FIRST,
        AttemptKind.NEW_MESSAGE,
        AttemptKind.NEW_MESSAGE,
    ]
    assert first[-1].record.attempts == 1 and len(first[-1].record.remembered) == 3
    # Ten seconds later, all three again: one early retry, counted once for the session
    # (its later transactions are more of the queue down one connection).
    again = sessions([(10.0, ["a", "b", "c"], "mx1")], record=first[-1].record)
    assert [s.kind for s in again] == [
        AttemptKind.EARLY_RETRY,
        AttemptKind.LOOK_ALIKE,
        AttemptKind.LOOK_ALIKE,
    ]
    assert [s.early for s in again] == [1, 1, 1] and again[-1].record.attempts == 2


def test_the_penalty_box_keeps_the_pending_record() -> None:
    rules = DeferralRules(impatient_retries=2, penalty_ttl=3600)
    steps = attempts([(0, "m", "mx1"), (6, "m", "mx1"), (12, "m", "mx1")], rules)
    assert steps[-1].action is Action.PENALTY
    kept = steps[-1].record
    assert isinstance(kept, Pending) and kept.first_seen == T0 and kept.early == 2
    # Back after the penalty, properly: promoted, not sent round the cycle again.
    after = step(kept, T0 + 3600, rules, R1, attempt=Attempt(msg("m"), "mx1"))
    assert after.reason is Reason.PROMOTED
    # A penalty shorter than the delay: one more counted retry is the box again at once,
    # while a new message is only deferred.
    short = DeferralRules(impatient_retries=2, penalty_ttl=5)
    assert step(kept, T0 + 18, short, R1, attempt=Attempt(msg("m"), "mx1")).action is Action.PENALTY
    assert step(kept, T0 + 18, short, R1, attempt=Attempt(msg("n"), "mx1")).action is Action.DEFER


def test_a_record_from_before_per_message_judging_starts_its_count_afresh() -> None:
    legacy = Pending(T0, T0 + 50, 6, 4, "s25r_rule1", T0 + 86400)  # early meant "any attempt"
    s = step(legacy, T0 + 60, RULES, R1, attempt=Attempt(msg("m"), "mx1"))
    assert s.action is Action.DEFER and s.early == 0 and s.record.early == 0


def test_unknown_attempts_count_as_new_messages() -> None:
    steps = attempts([(i, "", "") for i in range(10)])
    assert all(s.action is Action.DEFER and s.early == 0 for s in steps)


def test_impatient_retries_zero_never_penalises() -> None:
    rules = DeferralRules(impatient_retries=0)
    steps = attempts([(i * 6, "m", "mx1") for i in range(50)], rules)
    assert all(s.action is Action.DEFER for s in steps)
    assert steps[-1].record.early == 49


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
    assert count_pass(None, T0, DeferralRules(auto_familiar_after=0)) is None
    assert isinstance(count_pass(first().record, T0, RULES), Tally)  # a mode switch: start counting


def test_foreign_record_kinds_count_as_absent() -> None:
    s = step(Tally(2, T0, T0 + 100), T0 + 1, RULES, Reason.GREYLIST)
    assert s.reason is Reason.GREYLIST and s.record.attempts == 1


def test_defer_text_and_help_url() -> None:
    rules = DeferralRules(
        wording=Wording("Greylisted ({reason})", "https://help.example.com/onajimi")
    )
    s = step(None, T0, rules, Reason.ICHIGEN)
    assert str(s.reply) == (
        "450 4.7.1 Greylisted (ichigen); retry in 5m00s at the earliest,"
        " see https://help.example.com/onajimi"
    )


# -- the tarpit ---------------------------------------------------------------------------
def test_hanging_up_in_the_tarpit_is_an_early_retry_and_can_box() -> None:
    record = first().record
    for n in range(1, RULES.impatient_retries):
        left = abandoned(record, T0 + 10 * n, RULES)
        assert left.action is Action.DEFER and left.reason is Reason.EARLY_RETRY
        assert left.early == n and left.record.first_seen == T0 and left.record.early == n
        record = left.record
    boxed = abandoned(record, T0 + 100, RULES)
    assert boxed.action is Action.PENALTY and boxed.penalty.expires == T0 + 100 + 3600
    assert abandoned(None, T0, RULES) is None  # nothing pending: nothing to count on
    familiar = Familiar(T0, T0, T0 + 100)
    assert abandoned(familiar, T0 + 1, RULES) is None


def test_parallel_sessions_hanging_up_together_count_once() -> None:
    """A first contact's sessions all held, all given up at once: one early retry."""
    record = first().record
    once = abandoned(record, T0 + 30, RULES)
    assert once.early == 1
    assert abandoned(once.record, T0 + 31, RULES) is None  # within burst_window (5 s)
    assert abandoned(once.record, T0 + 36, RULES).early == 2


def test_waiting_out_the_tarpit_is_a_promotion() -> None:
    assert promoted(T0, RULES) == Familiar(T0, T0, T0 + RULES.familiar_ttl)
