"""DNS against a real DNS server on a loopback port: every outcome of FCrDNS."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.policy.facts import RDNSStatus
from gateway.policy.net import client_address
from gateway.resolver.cache import TTLCache
from gateway.resolver.resolver import AnswerKind, Resolver


@pytest.fixture
async def resolver(dns_server):
    r = Resolver([("127.0.0.1", dns_server.port)], timeout=1.0)
    yield r
    r.close()


async def rdns(resolver: Resolver, ip: str):
    return await resolver.rdns(client_address(ip))


async def test_confirmed(dns_server, resolver) -> None:
    dns_server.add_host("Mail.Example.ORG", "192.0.2.25")
    result = await rdns(resolver, "192.0.2.25")
    assert result.status is RDNSStatus.CONFIRMED
    assert result.confirmed == ("mail.example.org",) and result.name == "mail.example.org"


async def test_confirmed_ipv6(dns_server, resolver) -> None:
    dns_server.add_host("v6.example.org", "2001:db8::25")
    result = await rdns(resolver, "2001:db8::25")
    assert result.status is RDNSStatus.CONFIRMED and result.name == "v6.example.org"


async def test_mismatch_is_unconfirmed(dns_server, resolver) -> None:
    dns_server.add_ptr("192.0.2.9", "mail.example.org")
    dns_server.add_host("mail.example.org", "192.0.2.200", ptr=False)
    result = await rdns(resolver, "192.0.2.9")
    assert result.status is RDNSStatus.UNCONFIRMED
    assert result.ptr_names == ("mail.example.org",) and result.confirmed == ()
    assert "no A record of mail.example.org contains 192.0.2.9" in result.detail


async def test_nxdomain_ptr_is_unconfirmed(resolver) -> None:
    result = await rdns(resolver, "192.0.2.10")
    assert result.status is RDNSStatus.UNCONFIRMED and result.ptr_names == ()
    assert "NXDOMAIN" in result.detail


async def test_no_data_forward_is_unconfirmed(dns_server, resolver) -> None:
    dns_server.add_ptr("192.0.2.11", "v6only.example.org")
    dns_server.add("v6only.example.org", "AAAA", "2001:db8::11")
    result = await rdns(resolver, "192.0.2.11")
    assert result.status is RDNSStatus.UNCONFIRMED


async def test_servfail_is_tempfail_and_not_cached(dns_server, resolver) -> None:
    reverse = dns_server.reverse_name("192.0.2.66")
    dns_server.servfail.add(reverse)
    result = await rdns(resolver, "192.0.2.66")
    assert result.status is RDNSStatus.TEMPFAIL and "SERVFAIL" in result.detail
    dns_server.servfail.clear()
    dns_server.add_host("back.example.org", "192.0.2.66")
    assert (await rdns(resolver, "192.0.2.66")).status is RDNSStatus.CONFIRMED


async def test_timeout_is_tempfail_within_the_configured_time(dns_server, resolver) -> None:
    dns_server.drop.add(dns_server.reverse_name("192.0.2.67"))
    started = time.monotonic()
    result = await rdns(resolver, "192.0.2.67")
    elapsed = time.monotonic() - started
    assert result.status is RDNSStatus.TEMPFAIL and "timeout" in result.detail
    assert 0.9 <= elapsed < 2.0  # dns.timeout = 1 s covers the whole lookup, retries included


async def test_forward_timeout_without_any_confirmation_is_tempfail(dns_server, resolver) -> None:
    dns_server.add_ptr("192.0.2.68", "slow.example.org")
    dns_server.drop.add("slow.example.org.")
    assert (await rdns(resolver, "192.0.2.68")).status is RDNSStatus.TEMPFAIL


async def test_several_ptr_names_any_confirmed_counts(dns_server, resolver) -> None:
    dns_server.add_ptr("192.0.2.70", "liar.example.net", "real.example.org")
    dns_server.add_host("liar.example.net", "198.51.100.1", ptr=False)
    dns_server.add_host("real.example.org", "192.0.2.70", ptr=False)
    result = await rdns(resolver, "192.0.2.70")
    assert result.status is RDNSStatus.CONFIRMED
    assert result.confirmed == ("real.example.org",)
    assert set(result.ptr_names) == {"liar.example.net", "real.example.org"}


async def test_classless_delegation_cname(dns_server, resolver) -> None:
    reverse = dns_server.reverse_name("192.0.2.130")
    dns_server.add(reverse, "CNAME", "130.128-25.2.0.192.in-addr.arpa.")
    dns_server.add("130.128-25.2.0.192.in-addr.arpa", "PTR", "mx.customer.example.")
    dns_server.add_host("mx.customer.example", "192.0.2.130", ptr=False)
    result = await rdns(resolver, "192.0.2.130")
    assert result.status is RDNSStatus.CONFIRMED and result.name == "mx.customer.example"


async def test_truncated_reply_falls_back_to_tcp(dns_server, resolver) -> None:
    dns_server.add_host("big.example.org", "192.0.2.80")
    dns_server.truncate.add(dns_server.reverse_name("192.0.2.80"))
    result = await rdns(resolver, "192.0.2.80")
    assert result.status is RDNSStatus.CONFIRMED and dns_server.tcp_queries == 1


async def test_cache_hit_sends_no_query_and_needs_no_await(dns_server, resolver) -> None:
    dns_server.add_host("mail.example.org", "192.0.2.25")
    address = client_address("192.0.2.25")
    assert resolver.cached_rdns(address) is None
    await resolver.rdns(address)
    sent = resolver.queries_sent
    assert resolver.cached_rdns(address).status is RDNSStatus.CONFIRMED
    await resolver.rdns(address)
    assert resolver.queries_sent == sent
    assert dns_server.query_count(dns_server.reverse_name("192.0.2.25"), "PTR") == 1


async def test_single_flight_for_identical_lookups(dns_server, resolver) -> None:
    dns_server.add_host("busy.example.org", "192.0.2.90")
    dns_server.delay[dns_server.reverse_name("192.0.2.90")] = 0.2
    results = await asyncio.gather(*(rdns(resolver, "192.0.2.90") for _ in range(50)))
    assert {r.status for r in results} == {RDNSStatus.CONFIRMED}
    assert dns_server.query_count(dns_server.reverse_name("192.0.2.90"), "PTR") == 1
    assert dns_server.query_count("busy.example.org", "A") == 1


async def test_cancelled_waiter_does_not_cancel_the_shared_lookup(dns_server, resolver) -> None:
    dns_server.add_host("shared.example.org", "192.0.2.91")
    dns_server.delay[dns_server.reverse_name("192.0.2.91")] = 0.2
    first = asyncio.ensure_future(rdns(resolver, "192.0.2.91"))
    second = asyncio.ensure_future(rdns(resolver, "192.0.2.91"))
    await asyncio.sleep(0.05)
    first.cancel()  # a client that hung up
    assert (await second).status is RDNSStatus.CONFIRMED


async def test_ttls_are_honoured(dns_server) -> None:
    now = [1000.0]
    r = Resolver([("127.0.0.1", dns_server.port)], timeout=1.0, clock=lambda: now[0])
    try:
        dns_server.add_host("ttl.example.org", "192.0.2.95")  # TTL 300 in the test zone
        address = client_address("192.0.2.95")
        await r.rdns(address)
        now[0] += 299
        assert r.cached_rdns(address) is not None
        now[0] += 1
        assert r.cached_rdns(address) is None
        lookup = await r.lookup("nothing.example.org", "A")
        assert lookup.kind is AnswerKind.NXDOMAIN and lookup.ttl == 30  # the SOA's negative TTL
    finally:
        r.close()


async def test_second_nameserver_used_when_first_is_silent(dns_server) -> None:
    import socket

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    dns_server.add_host("mail.example.org", "192.0.2.25")
    r = Resolver(
        [("127.0.0.1", silent.getsockname()[1]), ("127.0.0.1", dns_server.port)], timeout=3
    )
    try:
        assert (await r.rdns(client_address("192.0.2.25"))).status is RDNSStatus.CONFIRMED
    finally:
        r.close()
        silent.close()


def test_ttl_cache_is_bounded_lru() -> None:
    cache: TTLCache[int] = TTLCache(max_size=2)
    cache.put("a", 1, 10, now=0)
    cache.put("b", 2, 10, now=0)
    assert cache.get("a", now=1) == 1  # a is now the most recent
    cache.put("c", 3, 10, now=1)
    assert cache.get("b", now=1) is None and cache.get("a", now=1) == 1
    assert cache.get("a", now=10) is None  # expired
    cache.put("z", 9, 0, now=0)
    assert cache.get("z", now=0) is None  # TTL 0 is not cached
