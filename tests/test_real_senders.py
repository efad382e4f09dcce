"""Real senders are real MTAs: a real sending Postfix, Exim and OpenSMTPD through the
gateway into a real backend Postfix, in real time (issues 9 and 22).

Each sender has its own queue, concurrency and retry timer, finds the gateways by MX
lookup in the test's DNS server and falls back to the next MX as it does. Postfix's and
Exim's timers are shortened (15 s), with the gateway's `min_retry_delay` to match (10 s);
OpenSMTPD's cannot be (400 s), so its scenarios run with the gateway's defaults, in a
process of their own that starts with the suite (tests/realsenders.py) and is waited for
here. Every scenario must deliver every message exactly once, after at most one deferral
each, and never see a 421, a penalty or an early retry counted; the figures go into the
table printed at the end of the run (tests/realsenders.py has the machinery).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from gateway.config import settings_from_mapping
from gateway.simulation.engine import simulate
from gateway.simulation.loader import apply
from gateway.simulation.population import build_world
from gateway.simulation.senders import builtin_classes
from tests.conftest import CONF, merge
from tests.postfix import PostfixInstance
from tests.realsenders import (
    MIN_RETRY_DELAY,
    OPENSMTPD_SCENARIOS,
    OPENSMTPD_WAIT,
    RESULTS,
    Scenario,
    dns_on_port_53,
    free_port,
    unavailable,
)
from tests.realsenders import run_scenario as run
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(
    unavailable("postfix") is not None, reason=str(unavailable("postfix"))
)


@pytest.fixture(scope="module")
def dns53():
    """The test's DNS server on port 53 (where a sending MTA's resolver looks)."""
    server = dns_on_port_53("127.0.53.53", "127.0.53.54", "127.0.53.55")
    if server is None:
        pytest.skip("cannot serve DNS on a loopback port 53")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backend():
    instance = PostfixInstance(free_port("127.0.0.1")).start()
    yield instance
    instance.stop()


async def run_scenario(scenario: Scenario, dns53, backend, store: str) -> dict:
    """One scenario, which must do everything right (tests/realsenders.problems)."""
    if unavailable(scenario.mta) is not None:
        pytest.skip(unavailable(scenario.mta))
    row, problems = await run(scenario, dns53, backend, store)
    assert not problems, problems
    return row


async def test_a_backlog_at_default_concurrency(dns53, backend) -> None:
    scenario = Scenario("backlog of 20, defer=all", "postfix", "127.0.0.20", 20, {"defer": "all"})
    await run_scenario(scenario, dns53, backend, "memory:")


async def test_a_backlog_one_session_at_a_time(dns53, backend) -> None:
    scenario = Scenario(
        "backlog of 20, concurrency 1, defer=all",
        "postfix",
        "127.0.0.22",
        20,
        {"defer": "all"},
        sender_settings={"smtp_destination_concurrency_limit": "1"},
    )
    await run_scenario(scenario, dns53, backend, "memory:")


async def test_a_retry_carrying_only_the_recipient_still_pending(dns53, backend) -> None:
    """postmaster@ is accepted at the first attempt (exempt), bob@ is deferred; Postfix's
    retry carries bob alone, matches the message remembered, and is promoted: each
    recipient gets the message exactly once."""
    scenario = Scenario(
        "postmaster@ at once, bob@ at the retry, defer=all",
        "postfix",
        "127.0.0.30",
        5,
        {"defer": "all"},
        recipients=("postmaster@example.com", "bob@example.com"),
    )
    row = await run_scenario(scenario, dns53, backend, "memory:")
    assert row["kinds"].get("retry") == 1 and "pass/exempt" in row["decided"]


async def test_a_backlog_through_kept_backend_connections(dns53, backend) -> None:
    """backend.reuse with XFORWARD: the backlog's sessions, several at once, share kept
    connections to the backend Postfix; every message is delivered once and still names
    its client there (orig_client=)."""
    scenario = Scenario(
        "backlog of 20, defer=all, backend.reuse",
        "postfix",
        "127.0.0.25",
        20,
        {"defer": "all"},
        sections={"backend": {"forward_client": "xforward", "reuse": True}},
    )
    await run_scenario(scenario, dns53, backend, "memory:")

    def kept() -> list[str]:
        return [
            line
            for line in backend.log_text().splitlines()
            if "disconnect from localhost[127.0.0.1]" in line and " xforward=" in line
        ]

    # The kept connections close when the gateway stops; Postfix logs each a moment later.
    await eventually(kept, lambda lines: any(_many_mails(line) for line in lines))


def _many_mails(disconnect: str) -> bool:
    """A backend connection that carried several transactions (Postfix's mail=N)."""
    return re.search(r" mail=(\d\d|[2-9])\b", disconnect) is not None


async def test_a_real_server_misjudged_by_s25r(dns53, backend, tmp_path) -> None:
    # With the pregreet test on: a real MTA waits for the whole greeting.
    scenario = Scenario(
        "S25R suspect name, 10, defer=suspect, pregreet",
        "postfix",
        "127.0.0.21",
        10,
        {},
        sections={"pregreet": {"greet_wait": 1, "action": "drop"}},
    )
    row = await run_scenario(scenario, dns53, backend, f"sqlite://{tmp_path}/state.db")
    assert row["delivered"] == 10
    # The simulator's cross-check (issue 14): the same sender, as `onajimi simulate`
    # models a Postfix, through the same settings, must meet the same decisions.
    simulated = await asyncio.to_thread(simulated_postfix, scenario, 10)  # its own loop
    (figures,) = simulated.classes
    # Message by message: deferred once, accepted at its retry; nothing lost, nobody boxed.
    assert (figures.delivered, figures.lost, figures.attempts) == (10, 0, row["attempts"])
    assert (
        figures.late == 0
        and row["penalties"] == 0
        and "penalty/impatient" not in simulated.decisions
    )
    # The same verdicts: the S25R deferral, then the promotion and the familiar passes
    # (attempts judged before the delay but not counted, a patient retry or a fallback,
    # keep reason=s25r_rule1: nothing says early_retry).
    assert set(simulated.decisions) == set(row["decided"])
    assert {"defer/s25r_rule1", "pass/promoted"} <= set(row["decided"])


def simulated_postfix(scenario: Scenario, messages: int):
    """`onajimi simulate` of the scenario's sender: a Postfix with the test's timers
    (SendingPostfix: backoff 15 to 30 s, a queue run every second), its backlog queued at
    once, an S25R-looking forward-confirmed name, on the scenario's gateway settings."""
    settings = settings_from_mapping(
        merge(
            {
                "relay": {"accept_domains": ["example.com"]},
                "policy": {"trusted_networks": [], "min_retry_delay": MIN_RETRY_DELAY},
                "store": {"url": "memory:"},
                "metrics": {"listen": ""},
                "tls": {"mode": "off"},
            },
            {"policy": scenario.policy, **scenario.sections},
        ),
        "senders.toml",
        CONF,
    )
    sender = {
        "name": "postfix",
        "like": "postfix/s25r",
        "senders": 1,
        "at": [0],
        "backlog": [messages, messages],
        "recipients": [1, 1],
        "callback": 0.0,
        "mx_fallback": False,
        "pregreet": 0.0,
        "retry": {"kind": "postfix", "min_backoff": 15, "max_backoff": 30, "queue_run": 1},
    }
    population = apply({"builtins": False, "class": [sender]}, builtin_classes(), "t.toml")
    return simulate(
        settings,
        lambda: build_world(population.classes, 1, 1, "example.com"),
        1,
        1,
        "cross-check",
    )


async def test_a_misjudged_real_server_waits_out_the_tarpit(dns53, backend) -> None:
    """policy.suspect_action = "tarpit" (taRgrey): the first RCPT of each of its parallel
    sessions is held back; Postfix waits (smtp_rcpt_timeout, 5 minutes), so every message
    goes through at the first attempt, and no session hung up (early_counted 0)."""
    scenario = Scenario(
        "S25R suspect name, 10, tarpit 2 s",
        "postfix",
        "127.0.0.26",
        10,
        {"suspect_action": "tarpit"},
        sections={"tarpit": {"delay": 2}},
        deferrals=(0, 0),
    )
    row = await run_scenario(scenario, dns53, backend, "memory:")
    assert row["delay_max"] >= 2  # held, and waited


async def test_a_sender_that_requires_tls(dns53, backend, tmp_path) -> None:
    """`smtp_tls_security_level = encrypt`: no STARTTLS, no delivery. With no certificate
    configured the gateway offers its self-signed one, which such a sender accepts."""
    scenario = Scenario(
        "sender requires TLS, self-signed, defer=all",
        "postfix",
        "127.0.0.24",
        5,
        {"defer": "all"},
        sender_settings={"smtp_tls_security_level": "encrypt"},
        tls={"self_signed_dir": str(tmp_path / "tls")},
    )
    await run_scenario(scenario, dns53, backend, "memory:")
    received = [raw for raw in backend.messages() if b"sender-requires-TLS" in raw]
    assert received and all(b"with ESMTPS id" in raw for raw in received)


async def test_two_mx_hosts_sharing_one_redis(dns53, backend, redis_url) -> None:
    scenario = Scenario(
        "two MX (equal preference), Redis, defer=all",
        "postfix",
        "127.0.0.23",
        20,
        {"defer": "all"},
        gateways=2,
    )
    await run_scenario(scenario, dns53, backend, redis_url)


# -- Exim 4.96: its retry rule shortened (F,1h,15s), a queue runner every second --------
# Exim holds a backlog to one recipient while its first message waits for its retry
# time, so most of a backlog is never tried before the first retry passes: at most one
# deferral each.


async def test_exim_a_backlog_delivered_at_once_ten_in_parallel(dns53, backend) -> None:
    """Exim's default: mail is delivered as it arrives, the first ten messages of the
    submitting session each in its own session at once, the rest queued."""
    scenario = Scenario(
        "Exim backlog of 20, immediate, defer=all",
        "exim",
        "127.0.0.27",
        20,
        {"defer": "all"},
        sender_settings={"queue_only": "false"},
        deferrals=(0, 1),
    )
    row = await run_scenario(scenario, dns53, backend, "memory:")
    assert row["kinds"].get("first") == 1 and row["attempts"] > 20  # some were deferred


async def test_exim_a_backlog_one_connection_at_a_time(dns53, backend) -> None:
    scenario = Scenario(
        "Exim backlog of 20, one connection, defer=all",
        "exim",
        "127.0.0.28",
        20,
        {"defer": "all"},
        sender_settings={"queue_run_max": "1", "transport.max_parallel": "1"},
        deferrals=(0, 1),
    )
    await run_scenario(scenario, dns53, backend, "memory:")


async def test_exim_misjudged_by_s25r(dns53, backend) -> None:
    scenario = Scenario(
        "Exim S25R suspect name, 10, defer=suspect",
        "exim",
        "127.0.0.29",
        10,
        {},
        deferrals=(0, 1),
    )
    row = await run_scenario(scenario, dns53, backend, "memory:")
    assert {"defer/s25r_rule1", "pass/promoted"} <= set(row["decided"])


# -- OpenSMTPD 6.8: no SIZE, ten messages a session, its first retry at 400 s -----------
# Its scenarios run with the gateway's defaults in a process of their own, started when
# the suite starts (conftest), beside the rest of it; here they are waited for.


@pytest.fixture(scope="module")
def opensmtpd_results(request) -> list[dict]:
    runner = getattr(request.config, "opensmtpd_runner", None)
    if runner is None:
        pytest.skip("the OpenSMTPD scenarios were not started (conftest starts them)")
    process, out = runner
    process.wait(timeout=OPENSMTPD_WAIT + 300)
    results = json.loads(Path(out).read_text())
    if results and "skipped" in results[0]:
        pytest.skip(results[0]["skipped"])
    RESULTS.extend(r for r in results if "sent" in r)
    return results


@pytest.mark.timeout(OPENSMTPD_WAIT + 360)
@pytest.mark.parametrize("scenario", OPENSMTPD_SCENARIOS, ids=lambda s: s.name)
def test_opensmtpd(opensmtpd_results, scenario: Scenario) -> None:
    (result,) = [r for r in opensmtpd_results if r["scenario"] == scenario.name]
    assert not result["problems"], result["problems"]
    assert result["kinds"].get("early_retry", 0) == 0
    if scenario.messages >= 20:  # ten a session: copies of one envelope, not retries
        assert result["kinds"].get("copy", 0) > 0
