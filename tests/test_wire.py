"""The DNS wire codec against dnspython, the reference implementation."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from gateway.resolver.wire import (
    AAAA,
    CNAME,
    MX,
    PTR,
    TXT,
    A,
    WireError,
    answer_to,
    build_query,
    parse_reply,
    reverse_name,
)

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


@pytest.mark.parametrize(
    ("name", "qtype"),
    [("9.2.0.192.in-addr.arpa", PTR), ("Mail.Example.ORG.", A), ("v6.example.org", AAAA)],
)
def test_queries_read_back_by_dnspython(name: str, qtype: int) -> None:
    query = dns.message.from_wire(build_query(4711, name, qtype))
    assert query.id == 4711 and query.flags & dns.flags.RD and not query.flags & dns.flags.QR
    (question,) = query.question
    assert question.name == dns.name.from_text(name) and question.rdtype == qtype
    assert query.edns == 0 and query.payload == 1232


@pytest.mark.parametrize("address", ["192.0.2.9", "127.1.2.3", "2001:db8::25", "::1", "fe80::1:2"])
def test_reverse_names_match_dnspython(address: str) -> None:
    assert reverse_name(address) == dns.reversename.from_address(address).to_text(
        omit_final_dot=True
    )


def reply_to(
    name: str, rdtype: str, *rrsets, rcode=dns.rcode.NOERROR, authority=(), truncated=False
) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    for rrset in rrsets:
        response.answer.append(rrset)
    for rrset in authority:
        response.authority.append(rrset)
    if truncated:
        response.flags |= dns.flags.TC
    return response.to_wire()  # dnspython compresses names


def test_ptr_with_several_names_and_compression() -> None:
    wire = reply_to(
        "9.2.0.192.in-addr.arpa.",
        "PTR",
        dns.rrset.from_text_list(
            "9.2.0.192.in-addr.arpa.", 300, "IN", "PTR", ["Mail.Example.org.", "mx.example.org."]
        ),
    )
    reply = parse_reply(wire)
    assert (reply.rcode, reply.truncated, reply.qname, reply.qtype) == (
        0,
        False,
        "9.2.0.192.in-addr.arpa",
        PTR,
    )
    values, ttl = answer_to(reply, "9.2.0.192.in-addr.arpa", PTR)
    assert sorted(values) == ["mail.example.org", "mx.example.org"] and ttl == 300


def test_cname_chain_takes_the_smallest_ttl() -> None:
    wire = reply_to(
        "130.2.0.192.in-addr.arpa.",
        "PTR",
        dns.rrset.from_text(
            "130.2.0.192.in-addr.arpa.", 600, "IN", "CNAME", "130.128-25.2.0.192.in-addr.arpa."
        ),
        dns.rrset.from_text(
            "130.128-25.2.0.192.in-addr.arpa.", 120, "IN", "PTR", "mx.customer.example."
        ),
    )
    assert answer_to(parse_reply(wire), "130.2.0.192.in-addr.arpa", PTR) == (
        ["mx.customer.example"],
        120,
    )


@pytest.mark.parametrize(
    ("name", "rdtype", "qtype", "address"),
    [("mail.example.org", "A", A, "192.0.2.25"), ("v6.example.org", "AAAA", AAAA, "2001:db8::25")],
)
def test_address_answers(name: str, rdtype: str, qtype: int, address: str) -> None:
    rrset = dns.rrset.from_text(name + ".", 60, "IN", rdtype, address)
    reply = parse_reply(reply_to(name + ".", rdtype, rrset))
    assert answer_to(reply, name, qtype) == ([address], 60)


def test_txt_strings_are_joined_and_mx_reads_preference_and_name() -> None:
    """SPF's lookups: a TXT record of several strings is one text (RFC 7208 3.3), every
    octet kept; an MX is "preference exchange"."""
    spf = '"v=spf1 ip4:192.0.2.0/24 " "include:_spf.example.org -all"'
    odd = '"caf\\233 \\000x"'  # octets that are not ASCII text: kept one for one
    txt = dns.rrset.from_text_list("example.org.", 300, "IN", "TXT", [spf, odd])
    values, ttl = answer_to(parse_reply(reply_to("example.org.", "TXT", txt)), "example.org", TXT)
    assert ttl == 300
    assert sorted(values) == sorted(
        ["v=spf1 ip4:192.0.2.0/24 include:_spf.example.org -all", "caf\xe9 \x00x"]
    )
    mx = dns.rrset.from_text_list(
        "example.org.", 60, "IN", "MX", ["10 Mx1.Example.org.", "20 mx2.example.org."]
    )
    values, _ = answer_to(parse_reply(reply_to("example.org.", "MX", mx)), "example.org", MX)
    assert sorted(values) == ["10 mx1.example.org", "20 mx2.example.org"]


def test_negative_answers_carry_the_soa_ttl() -> None:
    soa = dns.rrset.from_text(
        "example.org.", 3600, "IN", "SOA", "ns.example.org. host.example.org. 1 2 3 4 45"
    )
    nx = parse_reply(
        reply_to("nothing.example.org.", "A", rcode=dns.rcode.NXDOMAIN, authority=[soa])
    )
    assert nx.rcode == 3 and nx.negative_ttl == 45
    nodata = parse_reply(reply_to("mail.example.org.", "AAAA", authority=[soa]))
    assert (
        nodata.rcode == 0
        and answer_to(nodata, "mail.example.org", AAAA) is None
        and nodata.negative_ttl == 45
    )


def test_truncated_flag() -> None:
    assert parse_reply(reply_to("x.example.", "A", truncated=True)).truncated


def test_cname_loop_is_an_error() -> None:
    wire = reply_to(
        "a.example.",
        "A",
        dns.rrset.from_text("a.example.", 60, "IN", "CNAME", "b.example."),
        dns.rrset.from_text("b.example.", 60, "IN", "CNAME", "a.example."),
    )
    with pytest.raises(WireError):
        answer_to(parse_reply(wire), "a.example", A)
    assert CNAME == 5


def test_garbage_is_a_wire_error_never_a_crash() -> None:
    rng = random.Random(5)
    good = reply_to(
        "9.2.0.192.in-addr.arpa.",
        "PTR",
        dns.rrset.from_text("9.2.0.192.in-addr.arpa.", 300, "IN", "PTR", "m.example."),
    )
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):  # flip bytes, cut, or extend
            choice = rng.random()
            if choice < 0.6 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif choice < 0.8 and data:
                del data[rng.randrange(len(data)) :]
            else:
                data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        try:
            reply = parse_reply(bytes(data))
            answer_to(reply, reply.qname, reply.qtype)
        except WireError:
            pass
