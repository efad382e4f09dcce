"""The RCPT decision as one pure function (policy/rcpt.py): facts in, a ruling or the next
fact it needs out. No store, no DNS, no event loop: each test plays decider.py's part by
hand, which shows what is asked, in which order, and what is left to write."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.assembly import build_policy
from gateway.policy import rcpt
from gateway.policy.deferral import AttemptKind
from gateway.policy.facts import RDNS, SPF, RDNSStatus
from gateway.policy.net import client_address
from gateway.policy.records import Familiar, Pending, Pool, Trace
from gateway.policy.vocabulary import Action, Reason
from tests.conftest import make_settings

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

POLICY = build_policy(make_settings())
RULES = POLICY.rules
NOW = 1_800_000_000.0
DYNAMIC = RDNS(RDNSStatus.CONFIRMED, ("p1-2.dyn.example.net",), ("p1-2.dyn.example.net",))
NO_PTR = RDNS(RDNSStatus.UNCONFIRMED, detail="NXDOMAIN")
TEMPFAIL = RDNS(RDNSStatus.TEMPFAIL, detail="SERVFAIL")


def facts(ip="192.0.2.9", rdns=DYNAMIC, sender="a@pool.example", rcpt_to="bob@example.com", **kw):
    assessment = POLICY.assess(POLICY.screen(client_address(ip)), rdns)
    return rcpt.Facts(assessment, sender, rcpt_to, NOW, size=1000, spf=True, **kw)


def settle(f: rcpt.Facts, record=None, trace=None, pool=None, spf=None, client=None):
    """Answer every need as decider.py would, from the given records (no writes)."""
    asked = []
    for _ in range(8):
        out = rcpt.decide(POLICY, f)
        if isinstance(out, rcpt.Ruling):
            return out, asked
        asked.append(type(out).__name__)
        if isinstance(out, rcpt.ReadClient):
            f = replace(f, prepared=out.prepared, client=client)
        elif isinstance(out, rcpt.UpdateKey):
            f = replace(f, prepared=out.prepared, step=out.change(record))
            if out.proof is not None:  # claimed along (decider.py: at once)
                f = replace(f, trace=trace, pool=pool if out.proof.pool_key else None)
        elif isinstance(out, rcpt.ReadProof):
            f = replace(f, prepared=out.prepared, trace=trace, pool=pool if out.pool_key else None)
        else:
            f = replace(
                f, prepared=out.prepared, checked={**f.checked, out.address: spf[out.address]}
            )
    raise AssertionError("too many needs")


def test_a_relay_attempt_is_refused_before_anything_is_read() -> None:
    out = rcpt.decide(POLICY, facts(rcpt_to="victim@elsewhere.example"))
    assert isinstance(out, rcpt.Ruling) and out.decision.verdict.reason is Reason.RELAY_DENIED
    assert out.writes == ()


def test_an_exempt_recipient_passes_before_the_deferral() -> None:
    out = rcpt.decide(POLICY, facts(rcpt_to="postmaster@example.com"))
    assert isinstance(out, rcpt.Ruling) and out.decision.verdict.reason is Reason.EXEMPT


def test_a_first_contact_updates_its_key_then_claims_its_trace_and_is_deferred() -> None:
    ruling, asked = settle(facts())
    assert asked == ["UpdateKey", "ReadProof"]  # no SPF at first contact
    assert ruling.decision.verdict.action is Action.DEFER
    assert ruling.decision.step.kind is AttemptKind.FIRST and ruling.remember is ruling.decision


def test_when_the_read_ahead_found_nothing_the_trace_is_claimed_with_the_update() -> None:
    """The record read at connect is absent: a first deferral, certainly a new message,
    so its trace goes with the key's update (one batch, or one round trip less)."""
    ruling, asked = settle(facts(ahead=None))
    assert asked == ["UpdateKey"] and ruling.decision.step.kind is AttemptKind.FIRST
    first = Trace(NOW - 400, "192.0.2.1", "", NOW + 86000)
    narrow = SPF("pass", 24, "ip4:192.0.2.0/24")
    spf = {"192.0.2.9": narrow, "192.0.2.1": narrow}
    ruling, asked = settle(facts(ahead=None), trace=first, spf=spf)
    assert asked == ["UpdateKey", "AskSpf", "AskSpf"]
    assert ruling.decision.verdict.reason is Reason.POOL
    # A failure here spares the check at the first address (a botnet's retry).
    ruling, asked = settle(facts(ahead=None), trace=first, spf={"192.0.2.9": SPF("fail")})
    assert asked == ["UpdateKey", "AskSpf"] and ruling.decision.verdict.action is Action.DEFER


def test_the_later_rounds_start_from_what_the_first_prepared() -> None:
    out = rcpt.decide(POLICY, facts())
    assert isinstance(out, rcpt.UpdateKey) and out.prepared is not None
    assert out.prepared.key == "192.0.2.9" and out.prepared.attempt.envelope is not None


def test_the_null_sender_leaves_no_trace() -> None:
    ruling, asked = settle(facts(sender="<>"))
    assert asked == ["UpdateKey"] and ruling.decision.verdict.action is Action.DEFER


def test_a_dns_failure_passes_a_familiar_client_and_defers_the_rest() -> None:
    familiar = Familiar(NOW - 10, NOW - 10, NOW + 100)
    ruling, asked = settle(facts(rdns=TEMPFAIL), client=familiar)
    assert asked == ["ReadClient"] and ruling.decision.verdict.reason is Reason.FAMILIAR
    ruling, _ = settle(facts(rdns=TEMPFAIL), client=None)
    assert ruling.decision.verdict.reason is Reason.DNS_TEMPFAIL


def test_a_pools_retry_elsewhere_is_proven_by_spf_at_both_addresses() -> None:
    first = Trace(NOW - 400, "192.0.2.1", "", NOW + 86000)
    narrow = SPF("pass", 24, "ip4:192.0.2.0/24")
    spf = {"192.0.2.9": narrow, "192.0.2.1": narrow}
    ruling, asked = settle(facts(), trace=first, spf=spf)
    assert asked == ["UpdateKey", "ReadProof", "AskSpf", "AskSpf"]  # here, then there
    assert ruling.decision.verdict.reason is Reason.POOL
    assert ruling.decision.step.kind is AttemptKind.SPF_POOL
    ((write,),) = [ruling.writes]
    assert write.key == "pool:pool.example" and isinstance(write.record, Pool)
    # The same retry without a narrow pass at the first address proves nothing.
    spf["192.0.2.1"] = SPF("pass", None, "+all")
    ruling, _ = settle(facts(), trace=first, spf=spf)
    assert ruling.decision.verdict.action is Action.DEFER and ruling.writes == ()


def test_a_proven_domain_passes_where_its_spf_passes_narrowly() -> None:
    pool = Pool(NOW - 600, NOW - 600, NOW + 86400)
    spf = {"192.0.2.9": SPF("pass", 24, "ip4:192.0.2.0/24")}
    ruling, asked = settle(facts(), trace=None, pool=pool, spf=spf)
    assert asked == ["UpdateKey", "ReadProof", "AskSpf"]
    assert ruling.decision.step.kind is AttemptKind.SPF_DOMAIN
    assert ruling.writes == ()  # the pool record is written again at most hourly
    ruling, _ = settle(facts(), trace=None, pool=pool, spf={"192.0.2.9": SPF("fail")})
    assert ruling.decision.verdict.action is Action.DEFER


def test_one_confirmed_name_at_both_addresses_promotes_the_key() -> None:
    name = "p77-ip1.dyn.home.example"  # S25R rule 1: deferred, keyed by address
    host = RDNS(RDNSStatus.CONFIRMED, (name,), (name,))
    first = Trace(NOW - 400, "192.0.2.1", name, NOW + 86000)
    ruling, asked = settle(facts(ip="2001:db8::9", rdns=host), trace=first)
    assert asked == ["UpdateKey", "ReadProof"]  # no SPF needed
    assert ruling.decision.verdict.reason is Reason.PROMOTED
    ((write,),) = [ruling.writes]
    assert write.key.startswith("defer:") and isinstance(write.record, Familiar)


def test_a_retry_of_a_remembered_message_promotes_and_a_new_message_does_not() -> None:
    f = facts()
    deferred, _ = settle(f)
    pending = deferred.decision.step.record
    assert isinstance(pending, Pending)
    later = replace(f, now=NOW + RULES.min_retry_delay)
    ruling, asked = settle(later, record=pending)
    assert asked == ["UpdateKey"] and ruling.decision.verdict.reason is Reason.PROMOTED
    other = replace(facts(rcpt_to="carol@example.com", sender="z@other.example"), now=later.now)
    ruling, _ = settle(other, record=pending)
    assert ruling.decision.step.kind is AttemptKind.NEW_MESSAGE
