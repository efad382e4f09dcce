"""The simulator against hand-computed cases, the real classifier, and itself (a seed).

Each small case is one sender defined as a `--senders` file would define it, run through
the real session core and Decider on the shipped configuration (memory store); the
expected figures are worked out in the test from the configuration's numbers.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from gateway.assembly import build_policy
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.records import Pending, Space, store_key
from gateway.policy.vocabulary import Reason
from gateway.simulation import stats
from gateway.simulation.engine import simulate
from gateway.simulation.gate import HUNG_UP, Client, Envelope, Gate, SimClock
from gateway.simulation.loader import apply
from gateway.simulation.population import build_world
from gateway.simulation.senders import Naming, builtin_classes
from gateway.simulation.stats import RunResult
from tests.conftest import make_settings

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

ONE_MESSAGE = {"at": [0], "backlog": [1, 1], "recipients": [1, 1], "callback": 0.0}


def run(
    classes: list[dict[str, Any]],
    overrides: dict[str, Any] | None = None,
    days: float = 1,
    seed: int = 1,
) -> RunResult:
    settings = make_settings(overrides)
    population = apply({"builtins": False, "class": classes}, builtin_classes(), "t.toml").classes
    return simulate(
        settings,
        lambda: build_world(population, days, seed, "example.com"),
        days,
        seed,
        "test",
    )


def only(result: RunResult):
    (figures,) = result.classes
    return figures


def test_a_clean_postfix_is_not_delayed_at_all() -> None:
    result = run([{"name": "mta", "like": "postfix/clean", "senders": 1, **ONE_MESSAGE}])
    mta = only(result)
    assert (mta.messages, mta.delivered, mta.lost, mta.attempts) == (1, 1, 0, 1)
    assert mta.delays == [0.0]
    assert result.decisions == {"pass/clean": 1}


POSTFIX_TIMER = {"kind": "postfix", "queue_run": 0}  # retries exactly when due


def test_a_misjudged_postfix_passes_at_its_first_retry_after_min_retry_delay() -> None:
    """t=0 primary MX: deferred (S25R rule 1, first contact); t=1 backup MX: deferred
    (MX fallback, not a retry); Postfix waits max(age, minimal_backoff_time 300) from
    there: t=301, 301 s after the first contact >= min_retry_delay 300: promoted. A second
    message an hour later finds a familiar host."""
    mta = {"name": "mta", "like": "postfix/s25r", "senders": 1, **ONE_MESSAGE}
    result = run([{**mta, "at": [0, 3600], "retry": POSTFIX_TIMER}])
    figures = only(result)
    assert sorted(figures.delays) == [0.0, 301.0]
    assert (figures.attempts, figures.accepted, figures.late, figures.penalised) == (4, 2, 0, 0)
    assert result.decisions["pass/promoted"] == 1
    assert result.decisions["pass/familiar"] == 1
    # The backup MX is a fallback, not counted: logged with the key's reason, never
    # early_retry.
    assert result.decisions["defer/s25r_rule1"] == 2
    assert "defer/early_retry" not in result.decisions
    assert result.store == {"familiar": 1}


def test_a_longer_min_retry_delay_costs_postfix_one_more_round() -> None:
    """min_retry_delay 600: t=0 and t=1 deferred as above; t=301 too early (a patient
    retry, not counted) and t=302 its backup MX; Postfix then waits its age, 302 s: t=604,
    past 600: promoted. Nothing counts towards the penalty box."""
    mta = {"name": "mta", "like": "postfix/s25r", "senders": 1, **ONE_MESSAGE}
    result = run([{**mta, "retry": POSTFIX_TIMER}], {"policy": {"min_retry_delay": 600}})
    figures = only(result)
    assert figures.delays == [604.0]
    assert (figures.attempts, figures.late, figures.penalised) == (5, 0, 0)
    assert result.decisions["defer/s25r_rule1"] == 4  # retries before the delay, uncounted
    assert "defer/early_retry" not in result.decisions
    assert "penalty/impatient" not in result.decisions


POOL = {
    "name": "pool",
    "like": "gmail/s25r",
    "senders": 1,
    **ONE_MESSAGE,
    "mx_fallback": False,
    "pool": {"addresses": 2, "networks": 1, "shared": False, "rotate": "sequential"},
    "retry": {"kind": "interval", "low": 350, "high": 350, "factor": 1.0},
}


def test_a_shared_rdns_domain_proves_nothing() -> None:
    """Two addresses of one rDNS domain (S25R-looking names), used in turn, and no SPF
    to prove they send for one sender: t=0 from one address (deferred), t=350 from the
    other (new there: refused although the message has waited 350 s, a late refusal),
    t=700 from the first again, its own retry: promoted. Bots of one ISP's dynamic pool
    share a domain too."""
    figures = only(run([{**POOL, "spf": "none"}]))
    assert figures.delays == [700.0]
    assert (figures.attempts, figures.late) == (3, 1)


def test_a_pool_whose_domain_publishes_its_networks_passes_at_its_retry_elsewhere() -> None:
    """The same, its sender domain's SPF listing the pool's /24: the retry from the
    other address at t=350 proves the pool."""
    figures = only(run([{**POOL, "spf": "networks"}]))
    assert figures.delays == [350.0]
    assert (figures.attempts, figures.late) == (2, 0)


def test_plus_all_proves_no_pool() -> None:
    figures = only(run([{**POOL, "spf": "plus_all", "bot": True}]))
    assert figures.delays == [700.0]


def test_a_bot_retrying_once_after_ten_minutes_gets_half_its_attempts_in() -> None:
    """Two messages at t=0 and t=1, each retried once 600 s later: the first retry
    promotes the host (600 >= 300), the second finds it familiar: 2 of 4 attempts."""
    bot = {
        "name": "bot",
        "like": "bot-retry/s25r",
        "senders": 1,
        "at": [0],
        "backlog": [2, 2],
        "parallel": 1,
        "spacing": 1.0,
        "recipients": [1, 1],
        "pregreet": 0.0,
        "retry": {"kind": "interval", "low": 600, "high": 600, "tries": 1},
    }
    figures = only(run([bot]))
    assert (figures.attempts, figures.accepted) == (4, 2)
    assert figures.accepted_share == 0.5
    assert figures.delays == [600.0, 600.0]


def test_a_bot_that_never_retries_gets_nothing_in() -> None:
    bot = {"name": "bot", "like": "bot-once/s25r", "senders": 3, "at": [0], "backlog": [4, 4]}
    figures = only(run([bot]))
    assert (figures.messages, figures.attempts, figures.accepted, figures.lost) == (12, 12, 0, 12)
    assert figures.accepted_share == 0.0


def test_a_hammering_bot_meets_the_penalty_box() -> None:
    """One message retried every 2 s, 40 times (t=0..80). Round 0 lasts first_burst =
    min_retry_delay/5 = 60 s: the retries before t=60 are look-alikes. From t=60 each one
    is an early retry (2 s < patience 30 s), the fifth (t=68) puts the host in the penalty
    box: that session ends with 421, and so do the six after it (t=70..80) at once."""
    bot = {
        "name": "bot",
        "like": "bot-burst/s25r",
        "senders": 1,
        **ONE_MESSAGE,
        "pregreet": 0.0,
        "retry": {"kind": "interval", "low": 2, "high": 2, "tries": 40},
    }
    result = run([bot])
    figures = only(result)
    assert (figures.attempts, figures.accepted, figures.lost) == (41, 0, 1)
    assert figures.penalised == 7
    assert result.decisions["penalty/impatient"] == 7
    assert result.decisions["defer/early_retry"] == 4
    assert result.store == {"pending": 1}  # the penalty (3600 s) is over by the day's end


def test_a_callback_probe_passes_and_leaves_nothing_behind() -> None:
    mta = {"name": "mta", "like": "exim/s25r", "senders": 1, **ONE_MESSAGE, "callback": 1.0}
    figures = only(run([mta]))
    assert (figures.probes, figures.probes_refused) == (1, 0)
    # The probe a second before the message did not make its first attempt a retry.
    assert figures.delivered == 1 and figures.delays[0] >= 900


@pytest.mark.parametrize("cls", builtin_classes(), ids=lambda c: c.name)
def test_builtin_names_are_what_their_variant_says(cls) -> None:
    """Every built-in PTR template, through the shipped lists and the real classifier."""
    policy = build_policy(make_settings())
    world = build_world([cls], 1, 1, "example.com")
    for sender in world.senders[:3]:
        for address in sender.addresses[:3]:
            assessment = policy.assess(policy.screen(address), world.rdns[address])
            verdict = assessment.verdict
            if cls.naming is Naming.CLEAN:
                assert verdict is not None and verdict.reason is Reason.CLEAN, assessment
            elif cls.naming is Naming.REAL:
                assert verdict is not None and verdict.reason is Reason.ALLOWLIST, assessment
            elif cls.naming is Naming.NONE:
                assert assessment.defer_reason is Reason.S25R_RULE0
            else:
                assert assessment.defer_reason is not None, assessment
                assert assessment.defer_reason.value.startswith("s25r_rule")
                assert assessment.defer_reason is not Reason.S25R_RULE0


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    classes = [
        {"name": "pool", "like": "gmail/s25r", "senders": 5, "bursts_per_day": 4.0},
        {"name": "bots", "like": "bot-retry/s25r", "senders": 5},
    ]
    first = json.dumps(stats.as_json([run(classes, seed=7)]))
    again = json.dumps(stats.as_json([run(classes, seed=7)]))
    other = json.dumps(stats.as_json([run(classes, seed=8)]))
    assert first == again
    assert first != other


@pytest.mark.slow  # a simulated week (~20 s): make test only
def test_shipped_config_single_hosts_meet_the_targets() -> None:
    """What the README claims for conf/gateway.toml: clean hosts pass at once; a real
    MTA misjudged by S25R (or without a PTR) is accepted at its first retry after
    min_retry_delay, and nothing is lost; bots that never retry get nothing in."""
    result = simulate(
        make_settings(),
        lambda: build_world(builtin_classes(), 2, 1, "example.com"),
        2,
        1,
        "shipped",
    )
    figures = {c.name: c for c in result.classes}
    for family in ("postfix", "exim", "exchange"):
        assert figures[f"{family}/clean"].delayed == 0
        for naming in ("s25r", "none"):
            misjudged = figures[f"{family}/{naming}"]
            assert misjudged.delayed > 0, "the case is not exercised"
            assert (misjudged.late, misjudged.lost, misjudged.penalised) == (0, 0, 0)
    for name in ("gmail/real", "exchange-online/real", "ses/real", "sendgrid/real"):
        assert figures[name].delayed == 0
    # Nothing lost but by the one class built to lose: its only retry, at 270 s, comes
    # before min_retry_delay (300 s), and a new message never promotes.
    assert result.totals()[0].lost == figures["mta-270s/s25r"].messages
    assert figures["bot-once/s25r"].accepted == 0
    assert figures["bot-once/none"].accepted == 0
    # Pools: proven by SPF, with a PTR or without, at their retry from another address.
    for provider in ("gmail", "exchange-online", "ses", "sendgrid"):
        for naming in ("s25r", "none"):
            pool = figures[f"{provider}/{naming}"]
            assert pool.lost == 0 and (pool.quantile(0.9) or 0) <= 1800, pool.name
    # Bots whose retries come from other hosts, or only new spam: by messages.
    for name in ("bot-return/s25r", "bot-return/none", "botnet-one-isp/s25r"):
        bots = figures[name]
        assert bots.delivered <= 0.01 * bots.messages, name


def test_neighbours_share_a_24_and_a_24_key_lets_the_bot_next_door_in() -> None:
    """neighbours = 2 packs the misjudged MTA and the bot into one /24. The MTA is
    promoted at t=301; the bot's burst at t=3600 then finds its /24 familiar when the
    client key is the /24, and nothing when it is the address."""
    classes = [
        {
            "name": "mta",
            "like": "postfix/s25r",
            "senders": 1,
            **ONE_MESSAGE,
            "retry": POSTFIX_TIMER,
        },
        {"name": "bot", "like": "bot-once/s25r", "senders": 1, "at": [3600], "backlog": [3, 3]},
    ]
    population = apply(
        {"builtins": False, "neighbours": 2, "class": classes}, builtin_classes(), "t.toml"
    )
    world = build_world(population.classes, 1, 1, "example.com", population.neighbours)
    (mta_address,), (bot_address,) = (s.addresses for s in world.senders)
    assert mta_address.packed[:3] == bot_address.packed[:3]  # one /24

    def bot_accepted(overrides):
        result = simulate(
            make_settings(overrides),
            lambda: build_world(population.classes, 1, 1, "example.com", 2),
            1,
            1,
            "test",
        )
        figures = {c.name: c for c in result.classes}
        assert figures["mta"].delays == [301.0]
        return figures["bot"].accepted

    assert bot_accepted(None) == 0
    assert bot_accepted({"policy": {"ipv4_prefix": 24}}) == 3


def test_with_the_pregreet_test_on_a_bot_talking_early_is_dropped_and_remembered() -> None:
    """pregreet.greet_wait > 0, action drop: the first session talks early and is dropped;
    the address is remembered for pregreet.ttl, so its next sessions meet the action at
    once, and nothing reaches RCPT: no deferral record."""
    bot = {"name": "bot", "like": "bot-return/s25r", "senders": 1, "at": [0, 7200]}
    bot |= {"backlog": [2, 2], "parallel": 1, "pregreet": 1.0}
    result = run([bot], {"pregreet": {"greet_wait": 6}}, days=0.5)
    figures = only(result)
    assert (figures.attempts, figures.accepted) == (4, 0)
    assert result.decisions == {"reject/pregreet": 4}
    assert result.store == {"pregreet": 1}  # written at t=0, for pregreet.ttl (a day)


def test_with_the_tarpit_on_a_real_mta_waits_and_passes_and_a_bot_hangs_up() -> None:
    """policy.suspect_action = "tarpit": the misjudged Postfix's first RCPT is held
    tarpit.delay (65 s), it waits and is promoted at once: delivered at its first
    attempt, 65 s late, with no retry. The bot hangs up during the hold: nothing gets in,
    and its pending record stays (its decision line: the deferral it would have had)."""
    mta = {"name": "mta", "like": "postfix/s25r", "senders": 1, **ONE_MESSAGE}
    bot = {"name": "bot", "like": "bot-once/s25r", "senders": 1, **ONE_MESSAGE, "pregreet": 0.0}
    result = run([mta, bot], {"policy": {"suspect_action": "tarpit"}}, days=0.5)
    figures = {c.name: c for c in result.classes}
    assert figures["mta"].delays == [65.0]
    assert (figures["mta"].attempts, figures["mta"].late) == (1, 0)
    assert (figures["bot"].attempts, figures["bot"].accepted, figures["bot"].lost) == (1, 0, 1)
    assert result.decisions == {"pass/tarpit": 1, "defer/s25r_rule1": 1}
    # The pending record is the bot's.
    # (and each first deferral left its message's trace: policy/proof.py)
    assert result.store == {"familiar": 1, "pending": 1, "trace": 2}


async def test_a_hang_up_in_the_tarpit_counts_as_an_early_retry() -> None:
    """The gate calls the Decider's tarpit_abandoned, as the SMTP server does when the
    client goes during the hold: the pending record's early count goes up."""
    settings = make_settings({"policy": {"suspect_action": "tarpit"}})
    clock = SimClock(1_800_000_000.0)
    gate = Gate(build_policy(settings), settings, clock)
    address = ipaddress.IPv4Address("10.1.2.3")
    name = "p1234-ip45.dyn.example.jp"  # S25R rule 1
    bot = Client(address, RDNS(RDNSStatus.CONFIRMED, (name,), (name,)), waits=False)
    visit = await gate.session(bot, [Envelope("x@spam.example", ["user1@example.com"])])
    assert visit.codes == [[HUNG_UP]] and visit.held == 0.0
    record = await gate.store.get(store_key(Space.DEFER, "10.1.2.3"))
    assert isinstance(record, Pending) and (record.attempts, record.early) == (1, 1)
