"""DNS block and allow lists: postscreen's site syntax and scores (pure), then through a
whole gateway against a real DNS server on loopback serving the list zones."""

from __future__ import annotations

import json
import logging
import re

import pytest

from gateway.assembly import build_policy
from gateway.errors import ConfigError
from gateway.policy import dnsbl
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.net import client_address
from gateway.policy.records import Familiar, Space, store_key
from gateway.policy.vocabulary import Action, Reason
from tests.conftest import make_settings
from tests.test_cli import conf, run, with_dns  # noqa: F401 - conf is a fixture
from tests.test_smtp_policy import attempt

BL = "bl.test"  # a block list zone served by the test's DNS server
WL = "wl.test"  # an allow list zone
CLEAN = "127.0.0.2"  # mail.example.org
SUSPECT = "127.0.0.3"  # p1234-ip45.dyn.example.jp


def listing(address: str, zone: str) -> str:
    return dnsbl.query_name(client_address(address), zone)


# -- the site syntax and the score ---------------------------------------------------------
def test_sites_in_postscreen_syntax() -> None:
    zen = dnsbl.parse_site("zen.spamhaus.org=127.0.0.[2..11]*3")
    assert (zen.domain, zen.weight) == ("zen.spamhaus.org", 3)
    assert zen.fires(("127.0.0.4", "127.0.0.255")) == ("127.0.0.4",)
    assert zen.fires(("127.0.0.255",)) == ()
    dnswl = dnsbl.parse_site("list.dnswl.org=127.0.[0..255].[2..3]*-5")
    assert dnswl.weight == -5 and dnswl.fires(("127.0.9.3",)) == ("127.0.9.3",)
    listed = dnsbl.parse_site("bl.example.org=127.0.0.[2;4;10..11]")
    assert [listed.fires((f"127.0.0.{n}",)) != () for n in (2, 3, 4, 10, 11, 12)] == [
        True, False, True, True, True, False,
    ]  # fmt: skip
    anything = dnsbl.parse_site("any.example.org")
    assert anything.weight == 1 and anything.fires(("10.1.2.3",)) == ("10.1.2.3",)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("zen", "expected DOMAIN[=FILTER][*WEIGHT]"),
        ("x.org=127.0.0", "four parts"),
        ("x.org=127.0.0.[5..2]", "runs backwards"),
        ("x.org=127.0.0.300", "goes past 255"),
        ("x.org=127.0.0.[1;x]", "not a number"),
        ("x.org*0", "count for nothing"),
    ],
)
def test_bad_sites_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        dnsbl.parse_site(text)
    with pytest.raises(ConfigError, match=rf"dnsbl.sites: \[0\]: .*{re.escape(complaint)}"):
        make_settings({"dnsbl": {"sites": [text]}})


def test_weights_add_up_and_a_silent_list_counts_for_nothing() -> None:
    one = dnsbl.parse_site("a.test*2")
    two = dnsbl.parse_site("b.test=127.0.0.2")
    allow = dnsbl.parse_site("w.test*-5")
    score = dnsbl.score((one, two, allow), {"a.test": ("127.0.0.2",), "b.test": ("127.0.0.2",)})
    assert score.total == 3 and [f.site for f in score.fired] == [one, two]
    partial = dnsbl.score((one, two), {"a.test": ("127.0.0.2",), "b.test": None})
    assert partial.total == 2 and partial.failed == ("b.test",)
    assert "no answer from b.test" in partial.describe()
    rules = dnsbl.DnsblRules(sites=(one, two, allow), threshold=3, allowlist_threshold=-1)
    assert rules.listed(score) and not rules.listed(partial)
    allowed = dnsbl.score((one, allow), {"a.test": ("127.0.0.2",), "w.test": ("127.0.0.2",)})
    assert allowed.total == -3 and rules.allowlisted(allowed)
    assert not dnsbl.DnsblRules(sites=(allow,), allowlist_threshold=0).allowlisted(allowed)


def test_replies_name_lists_as_reply_names_says() -> None:
    secret = dnsbl.parse_site("KEY123.zen.dq.example*3")
    rules = dnsbl.DnsblRules(sites=(secret,), reply_names=(("key123.zen.dq.example", "zen"),))
    score = dnsbl.score((secret,), {"key123.zen.dq.example": ("127.0.0.2",)})
    assert rules.shown(score) == "zen"


def test_query_names() -> None:
    assert listing("192.0.2.9", "bl.test") == "9.2.0.192.bl.test"
    six = listing("2001:db8::1", "bl.test")
    assert six.startswith("1.0.0.0.") and six.endswith(".8.b.d.0.1.0.0.2.bl.test")


# -- the policy: where the score comes in ---------------------------------------------------
def assessed(address: str, name: str, total: int, **lists):
    sites = lists.pop("sites", ["bl.test*1", "wl.test*-5"])
    settings = make_settings(
        {"dnsbl": {"sites": sites, **lists}, "policy": {"trusted_networks": []}}
    )
    policy = build_policy(settings)
    fired = tuple(
        dnsbl.Fired(site, ("127.0.0.2",))
        for site in policy.dnsbl_rules.sites
        if (site.weight > 0) == (total > 0) and total
    )
    score = dnsbl.Score(total, fired)
    rdns = RDNS(RDNSStatus.CONFIRMED, (name,), (name,))
    return policy.assess(policy.screen(client_address(address)), rdns, score)


def test_an_allow_listed_score_passes_a_suspect_before_s25r() -> None:
    assessment = assessed("192.0.2.9", "p1234-ip45.dyn.example.jp", -5)
    assert assessment.verdict.action is Action.PASS
    assert assessment.verdict.reason is Reason.DNSWL
    assert "wl.test*-5" in assessment.verdict.detail


def test_a_listed_client_is_deferred_as_a_suspect_under_its_usual_key() -> None:
    assessment = assessed("192.0.2.9", "mail.example.org", 1)
    assert assessment.verdict is None and assessment.defer_reason is Reason.DNSBL
    assert assessment.client_key == "example.org"  # lumped: a familiar domain still passes
    rejected = assessed("192.0.2.9", "mail.example.org", 1, action="reject")
    assert rejected.verdict.action is Action.REJECT
    assert str(rejected.verdict.reply) == (
        "554 5.7.1 Service unavailable; client [192.0.2.9] blocked using bl.test"
    )
    ignored = assessed("192.0.2.9", "mail.example.org", 1, action="ignore")
    assert ignored.verdict.reason is Reason.CLEAN and ignored.dnsbl.total == 1


def test_below_the_threshold_nothing_changes() -> None:
    assessment = assessed("192.0.2.9", "mail.example.org", 1, threshold=2)
    assert assessment.verdict.reason is Reason.CLEAN


# -- through the gateway, against a real DNS server -----------------------------------------
def lists(*sites: str, **more) -> dict:
    return {"dnsbl": {"sites": list(sites), **more}}


@pytest.mark.gateway(lists("bl.test=127.0.0.[2..11]*2"))
async def test_a_listed_clean_host_is_deferred_and_the_reason_logged(env, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi.decision")
    env.dns.add(listing(CLEAN, BL), "A", "127.0.0.4")
    assert (await attempt(env, CLEAN)).code == 450
    (line,) = [r.getMessage() for r in caplog.records if "action=defer" in r.getMessage()]
    assert "reason=dnsbl" in line and 'dnsbl="score 2: bl.test=127.0.0.[2..11]*2' in line


@pytest.mark.gateway(lists("bl.test=127.0.0.[2..11]*2"))
async def test_a_reply_outside_the_filter_does_not_list(env) -> None:
    env.dns.add(listing(CLEAN, BL), "A", "127.0.0.255")  # e.g. "query refused"
    assert (await attempt(env, CLEAN)).code == 250


@pytest.mark.gateway(lists("bl.test*1", "bl2.test*1", threshold=2))
async def test_weights_add_up_to_the_threshold(env) -> None:
    env.dns.add(listing(CLEAN, BL), "A", "127.0.0.2")
    assert (await attempt(env, CLEAN)).code == 250  # one list: 1 < 2
    env.dns.add(listing("127.0.0.14", BL), "A", "127.0.0.2")
    env.dns.add(listing("127.0.0.14", "bl2.test"), "A", "127.0.0.2")
    assert (await attempt(env, "127.0.0.14")).code == 450  # both: 2


@pytest.mark.gateway(lists("bl.test*1", "wl.test=127.0.[0..255].[2..3]*-5"))
async def test_an_allow_listed_suspect_passes_without_any_deferral(env, caplog) -> None:
    caplog.set_level(logging.INFO, logger="onajimi.decision")
    env.dns.add(listing(SUSPECT, WL), "A", "127.0.10.2")
    assert (await attempt(env, SUSPECT)).code == 250  # S25R rule 1, and no 450
    assert any("reason=dnswl" in r.getMessage() for r in caplog.records)


@pytest.mark.gateway({**lists("bl.test*1", action="reject", reply_names={"bl.test": "our list"})})
async def test_reject_names_the_list_as_reply_names_says(env) -> None:
    env.dns.add(listing(CLEAN, BL), "A", "127.0.0.2")
    refused = await attempt(env, CLEAN)
    assert refused.code == 554 and "blocked using our list" in refused.text
    assert "bl.test" not in refused.text
    # The relay check still comes first, and exempt recipients still get through.
    assert (await attempt(env, CLEAN, rcpt="postmaster@example.com")).code == 250


@pytest.mark.gateway(lists("bl.test*1"))
async def test_a_list_that_does_not_answer_is_no_verdict(env) -> None:
    env.dns.drop.add(listing(CLEAN, BL) + ".")  # every query lost: dns.timeout (1 s)
    assert (await attempt(env, CLEAN)).code == 250
    assert env.dns.query_count(listing(CLEAN, BL), "A") >= 1


@pytest.mark.gateway(lists("bl.test*1"))
async def test_a_returning_client_is_not_asked_again(env) -> None:
    env.dns.add(listing(SUSPECT, BL), "A", "127.0.0.2")
    assert (await attempt(env, SUSPECT)).code == 450
    assert (await attempt(env, SUSPECT)).code == 450
    assert env.dns.query_count(listing(SUSPECT, BL), "A") == 1


@pytest.mark.gateway(lists("bl.test*1"))
async def test_a_familiar_client_is_not_asked_at_all(env) -> None:
    now = env.clock()
    familiar = Familiar(now - 10, now - 10, now + 86400)
    await env.gateway.store.put(store_key(Space.DEFER, SUSPECT), familiar)
    env.dns.add(listing(SUSPECT, BL), "A", "127.0.0.2")
    assert (await attempt(env, SUSPECT)).code == 250
    assert env.dns.query_count(listing(SUSPECT, BL), "A") == 0


def test_explain_shows_the_score_and_the_sites_that_fired(conf, dns_server) -> None:  # noqa: F811
    dns_server.add_host("mail.example.org", "192.0.2.9")
    dns_server.add(listing("192.0.2.9", BL), "A", "127.0.0.4")
    config = with_dns(conf, dns_server.address)
    text = config.read_text().replace("sites = []", 'sites = ["bl.test=127.0.0.[2..11]*2"]')
    config.write_text(text)
    typed = json.loads(run("explain", "192.0.2.9", "--json", "-c", str(config)).stdout)
    assert typed["dnsbl"]["score"] == 2 and typed["dnsbl"]["listed"] is True
    assert typed["dnsbl"]["fired"][0]["replies"] == ["127.0.0.4"]
    assert typed["decision"]["reason"] == "dnsbl"
    plain = run("explain", "192.0.2.9", "--name", "mail.example.org", "-c", str(config))
    assert "score 2: bl.test=127.0.0.[2..11]*2 (127.0.0.4)" in plain.stdout
