"""Pools by proof (policy/proof.py): the pure rules, then each case over
real sockets, with client addresses from PROXY headers and a real DNS server serving
their PTR, A, AAAA and the sender domains' SPF (TXT) records."""

from __future__ import annotations

import pytest

from gateway.policy import proof
from gateway.policy.deferral import AttemptKind, DeferralRules
from gateway.policy.facts import RDNS, SPF, RDNSStatus
from gateway.policy.messages import envelope
from gateway.policy.records import Pool, Trace
from tests.smtpclient import proxy_v1, proxy_v2

RULES = DeferralRules()
T0 = 1_800_000_000.0


# -- the pure rules ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spf", "proves"),
    [
        (SPF("pass", 24, "ip4:192.0.2.0/24"), True),
        (SPF("pass", 12, "include:_spf.example"), True),
        (SPF("pass", 11, "ip4:192.0.0.0/11"), False),  # wider than a /12
        (SPF("pass", 32, "ip6:2001:db8::/32", ipv6=True), True),
        (SPF("pass", 31, "ip6:2001:da8::/31", ipv6=True), False),
        (SPF("pass", 24, "ip6:2000::/24", ipv6=True), False),  # /24 of IPv6 is huge
        (SPF("pass", None, "+all"), False),  # all, ptr, exists: no network
        (SPF("softfail", 24), False),
        (SPF("temperror"), False),
    ],
)
@pytest.mark.unit
def test_only_a_narrow_pass_proves(spf: SPF, proves: bool) -> None:
    assert proof.narrow_pass(spf) is proves


@pytest.mark.unit
def test_the_sender_domain() -> None:
    assert proof.sender_domain("<Bounce-1@Mail.Pool.Example.>") == "mail.pool.example"
    assert proof.sender_domain("<>") == ""
    assert proof.sender_domain("postmaster") == ""


@pytest.mark.unit
def test_only_a_new_message_from_a_sender_with_a_domain_leaves_a_trace() -> None:
    assert proof.traceable(AttemptKind.FIRST, "a@pool.example")
    assert proof.traceable(AttemptKind.NEW_MESSAGE, "a@pool.example")
    assert not proof.traceable(AttemptKind.FIRST, "<>")
    for kind in (
        AttemptKind.COPY,
        AttemptKind.EARLY_RETRY,
        AttemptKind.LOOK_ALIKE,
        AttemptKind.PATIENT_RETRY,
    ):
        assert not proof.traceable(kind, "a@pool.example")


@pytest.mark.unit
def test_a_trace_knows_one_recipient_of_the_message() -> None:
    first = envelope("a@pool.example", "bob@example.com", 1000)
    both = first.with_recipient(envelope("a@pool.example", "carol@example.com", 1000).recipients[0])
    assert proof.trace_key(both, "carol@example.com") != proof.trace_key(both, "bob@example.com")
    assert proof.trace_key(first, "bob@example.com") == proof.trace_key(both, "bob@example.com")
    unsized = envelope("a@pool.example", "bob@example.com", None)
    assert proof.trace_key(unsized, "bob@example.com") != proof.trace_key(first, "bob@example.com")


@pytest.mark.parametrize(
    ("after", "address", "counts"),
    [
        (RULES.min_retry_delay, "192.0.2.2", True),
        (RULES.min_retry_delay - 1, "192.0.2.2", False),  # before the delay: not a retry
        (RULES.retry_window, "192.0.2.2", True),
        (RULES.retry_window + 1, "192.0.2.2", False),
        (RULES.min_retry_delay, "192.0.2.1", False),  # the same address: its key decides
    ],
)
@pytest.mark.unit
def test_a_retry_elsewhere_is_timed_as_a_retry(after: float, address: str, counts: bool) -> None:
    trace = Trace(T0, "192.0.2.1", "", T0 + RULES.retry_window + 60)
    found = proof.retry_elsewhere(trace, T0 + after, address, RULES)
    assert (found is trace) is counts


@pytest.mark.unit
def test_one_confirmed_name_is_one_host() -> None:
    trace = Trace(T0, "192.0.2.1", "mx.home.example", T0 + 100)
    confirmed = RDNS(RDNSStatus.CONFIRMED, ("mx.home.example",), ("mx.home.example",))
    unconfirmed = RDNS(RDNSStatus.UNCONFIRMED, ("mx.home.example",), ())
    assert proof.same_host(trace, confirmed)
    assert not proof.same_host(trace, unconfirmed)
    assert not proof.same_host(Trace(T0, "192.0.2.1", "", T0 + 100), unconfirmed)


@pytest.mark.unit
def test_a_pool_is_proven_at_both_addresses_and_a_domain_while_its_spf_passes() -> None:
    narrow, wide = SPF("pass", 24, "ip4:192.0.2.0/24"), SPF("pass", None, "+all")
    assert proof.pool_proof("pool.example", narrow, narrow, "192.0.2.1") is not None
    assert proof.pool_proof("pool.example", narrow, wide, "192.0.2.1") is None
    assert proof.pool_proof("pool.example", SPF("fail"), narrow, "192.0.2.1") is None
    pool = proof.proven(T0, RULES)
    assert proof.domain_proof("pool.example", pool, narrow, T0 + 60).kind is AttemptKind.SPF_DOMAIN
    assert proof.domain_proof("pool.example", pool, SPF("fail"), T0 + 60) is None
    assert proof.domain_proof("pool.example", None, narrow, T0) is None
    expired = Pool(T0, T0, T0 + 10)
    assert proof.domain_proof("pool.example", expired, narrow, T0 + 10) is None
    assert proof.proven(T0 + 5, RULES, pool).since == T0  # a use keeps the first proof's time


# -- over real sockets --------------------------------------------------------------------
PROXIED = {"listen": {"proxy_protocol": True, "proxy_trusted": ["127.0.0.0/8"]}}

POOL = "pool.example"
POOL_SPF = '"v=spf1 ip4:198.51.100.0/24 ip6:2001:db8:5::/48 -all"'
MESSAGE = b"Subject: pool\r\n\r\nHello.\r\n"


async def rcpt(env, address: str, sender: str, recipients=("bob@example.com",), size=None):
    """One session from `address` (a PROXY header) up to RCPT: the RCPT replies; a
    transaction whose every recipient passed is delivered."""
    header = proxy_v2(address, "2001:db8::1") if ":" in address else proxy_v1(address)
    client = await env.client("127.0.0.2", proxy=header)
    await client.ehlo()
    declared = f" SIZE={size}" if size is not None else ""
    await client.cmd(f"MAIL FROM:<{sender}>{declared}")
    replies = [await client.cmd(f"RCPT TO:<{r}>") for r in recipients]
    if all(r.code == 250 for r in replies):
        assert (await client.data(MESSAGE)).code == 250
    await client.cmd("QUIT")
    await client.close()
    return [r.code for r in replies]


@pytest.fixture
def pool_dns(env):
    env.dns.add(POOL, "TXT", POOL_SPF)
    env.dns.add("plusall.example", "TXT", '"v=spf1 +all"')
    env.dns.add("wide.example", "TXT", '"v=spf1 ip4:198.0.0.0/8 -all"')
    env.dns.add_host("p1235-ip46.dyn.example.jp", "203.0.113.10")  # rule 1, as 203.0.113.9
    env.dns.add_host("p77-ip1.dyn.home.example", "198.51.100.77")  # rule 1, dual stack
    env.dns.add_host("p77-ip1.dyn.home.example", "2001:db8:7::77")
    return env.dns


@pytest.mark.gateway(PROXIED)
async def test_a_pool_proven_by_spf_passes_from_its_second_address_only_for_its_domain(
    env, pool_dns
) -> None:
    # 198.51.100.x have no PTR (rule 0): deferred at first contact, each on its own key.
    assert await rcpt(env, "198.51.100.10", f"bounce@{POOL}") == [450]
    assert pool_dns.query_count(POOL, "TXT") == 0  # the first contact asks no SPF
    env.clock.advance(RULES.min_retry_delay + 60)
    assert await rcpt(env, "198.51.100.20", f"bounce@{POOL}") == [250]  # proven
    assert len(env.backend.messages) == 1
    # The address gained nothing: another sender from it is a stranger still.
    assert await rcpt(env, "198.51.100.20", "alice@sender.example") == [450]
    # The domain passes from any address its SPF passes, a new message at once...
    assert await rcpt(env, "198.51.100.30", f"news@{POOL}", ("carol@example.com",)) == [250]
    assert await rcpt(env, "2001:db8:5::9", f"news@{POOL}") == [250]
    # ... and not from one it does not.
    assert await rcpt(env, "203.0.113.9", f"news@{POOL}") == [450]
    assert len(env.backend.messages) == 3


@pytest.mark.gateway(PROXIED)
async def test_a_retry_elsewhere_before_the_delay_proves_nothing(env, pool_dns) -> None:
    assert await rcpt(env, "198.51.100.10", f"bounce@{POOL}") == [450]
    env.clock.advance(60)
    assert await rcpt(env, "198.51.100.20", f"bounce@{POOL}") == [450]
    assert pool_dns.query_count(POOL, "TXT") == 0


@pytest.mark.gateway(PROXIED)
async def test_a_retry_with_only_the_pending_recipient_finds_its_trace(env, pool_dns) -> None:
    two = ("bob@example.com", "carol@example.com")
    assert await rcpt(env, "198.51.100.10", f"bounce@{POOL}", two, size=1234) == [450, 450]
    env.clock.advance(RULES.min_retry_delay)
    assert await rcpt(env, "198.51.100.20", f"bounce@{POOL}", ("carol@example.com",), 1234) == [250]


@pytest.mark.gateway(PROXIED)
async def test_a_different_size_is_another_message(env, pool_dns) -> None:
    assert await rcpt(env, "198.51.100.10", "alice@sender.example", size=1000) == [450]
    env.clock.advance(RULES.min_retry_delay)
    assert await rcpt(env, "198.51.100.20", "alice@sender.example", size=2000) == [450]


@pytest.mark.gateway(PROXIED)
@pytest.mark.parametrize("domain", ["plusall.example", "wide.example", "nothing.example"])
async def test_plus_all_wide_or_no_spf_proves_nothing(env, pool_dns, domain: str) -> None:
    assert await rcpt(env, "198.51.100.10", f"bounce@{domain}") == [450]
    env.clock.advance(RULES.min_retry_delay + 60)
    assert await rcpt(env, "198.51.100.20", f"bounce@{domain}") == [450]
    assert pool_dns.query_count(domain, "TXT") >= 1  # asked, and it proved nothing


@pytest.mark.gateway(PROXIED)
async def test_two_dynamic_hosts_of_one_domain_stay_deferred(env, pool_dns) -> None:
    # The siblings rule let this in: one rDNS domain (dyn.example.jp), one envelope.
    assert await rcpt(env, "203.0.113.9", "alice@sender.example") == [450]
    env.clock.advance(120)
    assert await rcpt(env, "203.0.113.10", "alice@sender.example") == [450]
    env.clock.advance(RULES.min_retry_delay)
    assert await rcpt(env, "203.0.113.10", "alice@sender.example") == [250]  # its own retry
    assert await rcpt(env, "203.0.113.9", "other@sender.example") == [450]  # not the first's


@pytest.mark.gateway(PROXIED)
async def test_a_forged_pool_sender_from_dynamic_hosts_stays_out(env, pool_dns) -> None:
    assert await rcpt(env, "203.0.113.9", f"bounce@{POOL}") == [450]
    env.clock.advance(RULES.min_retry_delay + 60)
    assert await rcpt(env, "203.0.113.10", f"bounce@{POOL}") == [450]  # SPF fails at both
    assert len(env.backend.messages) == 0


@pytest.mark.gateway(PROXIED)
async def test_an_spf_timeout_defers_and_proves_nothing(env, pool_dns) -> None:
    pool_dns.drop.add(f"{POOL}.")
    assert await rcpt(env, "198.51.100.10", f"bounce@{POOL}") == [450]
    env.clock.advance(RULES.min_retry_delay + 60)
    assert await rcpt(env, "198.51.100.20", f"bounce@{POOL}") == [450]  # never a 5xx
    pool_dns.drop.clear()  # the DNS answers again: a timeout was not cached as a verdict
    assert await rcpt(env, "198.51.100.30", f"bounce@{POOL}") == [250]


@pytest.mark.gateway(PROXIED)
async def test_an_ipv4_then_ipv6_retry_under_one_confirmed_name_is_promoted(env, pool_dns) -> None:
    assert await rcpt(env, "198.51.100.77", "alice@home.example") == [450]  # rule 1
    env.clock.advance(RULES.min_retry_delay + 60)
    assert await rcpt(env, "2001:db8:7::77", "alice@home.example") == [250]
    # The IPv6 key is promoted (one host): another sender from it passes too.
    assert await rcpt(env, "2001:db8:7::77", "bob@home.example") == [250]
    # A dynamic neighbour with another name proves nothing.
    assert await rcpt(env, "203.0.113.9", "alice@home.example") == [450]


@pytest.mark.gateway(PROXIED)
async def test_over_sockets_a_new_message_waits_its_own_delay_and_a_new_batv_tag_matches(
    env, pool_dns
) -> None:
    """The retry rule (deferral.py) through the wire: a host that comes back after the
    delay with another message is deferred, that message waits its own delay, and the
    first message's retry under a new BATV tag is the retry that promotes."""
    first = "prvs=1111aaaa=alice@sender.example"
    assert await rcpt(env, "203.0.113.9", first, size=500) == [450]
    env.clock.advance(RULES.min_retry_delay + 60)
    news = ("news@sender.example", ("carol@example.com",))
    assert await rcpt(env, "203.0.113.9", news[0], news[1], 700) == [450]  # a new message
    env.clock.advance(40)
    assert await rcpt(env, "203.0.113.9", news[0], news[1], 700) == [450]  # its own delay
    assert await rcpt(env, "203.0.113.9", "prvs=2222bbbb=alice@sender.example", size=500) == [250]
    assert len(env.backend.messages) == 1
