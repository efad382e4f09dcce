"""The DNS wire format for exactly what the gateway asks: PTR, A and AAAA (and TXT and
MX, which SPF asks when a pool's proof is wanted: resolver/spf.py).

dnspython builds a query in ~125 us and parses a reply in ~130 us here; a new client
costs two of each, more than the whole per-session budget of the gateway. This module
does the same for our three query types in a few microseconds: queries are bytes
assembled from a template, replies are walked once (names decompressed, CNAME chains
followed, the SOA read for the negative TTL). dnspython remains the reference: the
tests check every encoding and decoding here against it, and it still reads
/etc/resolv.conf.

Anything this parser does not understand raises WireError, which the transport treats
like a garbled packet (ignored; the query times out or is answered again).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

A, CNAME, SOA, PTR, MX, TXT, AAAA, OPT = 1, 5, 6, 12, 15, 16, 28, 41
TYPES = {"A": A, "AAAA": AAAA, "PTR": PTR, "MX": MX, "TXT": TXT}
IN = 1
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
_EDNS_PAYLOAD = 1232
# EDNS0 OPT record: root name, type OPT, UDP payload size, no extended rcode/flags.
_OPT = b"\x00" + struct.pack("!HHIH", OPT, _EDNS_PAYLOAD, 0, 0)
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")


class WireError(ValueError):
    """Not a reply we can use."""


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not raw or len(raw) > 63:
            raise WireError(f"bad label in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise WireError(f"name too long: {name!r}")
    return bytes(out)


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursive query with EDNS0 (payload 1232), as dnspython's make_query(use_edns=0)."""
    return (
        _HEADER.pack(qid, 0x0100, 1, 0, 0, 1)
        + encode_name(name)
        + struct.pack("!HH", qtype, IN)
        + _OPT
    )


def reverse_name(address: str) -> str:
    """`192.0.2.9` -> `9.2.0.192.in-addr.arpa`; IPv6 as nibbles under ip6.arpa."""
    if ":" not in address:
        return ".".join(reversed(address.split("."))) + ".in-addr.arpa"
    packed = socket.inet_pton(socket.AF_INET6, address)
    nibbles = packed.hex()
    return ".".join(reversed(nibbles)) + ".ip6.arpa"


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The (lower-case) name at `offset`, and the offset just after it in the message."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if offset >= len(data):
            raise WireError("name runs past the message")
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length & 0xC0 == 0xC0:  # a compression pointer
            if offset + 1 >= len(data):
                raise WireError("truncated pointer")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            jumps += 1
            if jumps > 64:
                raise WireError("compression loop")
            continue
        if length & 0xC0:
            raise WireError("unknown label type")
        labels.append(data[offset + 1 : offset + 1 + length].decode("ascii", "replace").lower())
        offset += 1 + length
    return ".".join(labels), end if end >= 0 else offset


@dataclass(slots=True)
class Reply:
    qid: int
    rcode: int
    truncated: bool
    qname: str
    qtype: int
    answers: list[tuple[str, int, int, object]]  # (owner, type, ttl, rdata)
    negative_ttl: int | None  # from the authority SOA: min(TTL, MINIMUM)


def parse_reply(data: bytes) -> Reply:
    """Raises WireError for anything that is not a well-formed reply."""
    try:
        return _parse_reply(data)
    except (struct.error, IndexError, UnicodeError) as exc:
        raise WireError(f"malformed reply: {exc}") from None


def _parse_reply(data: bytes) -> Reply:
    if len(data) < 12:
        raise WireError("short message")
    qid, flags, qdcount, ancount, nscount, _ = _HEADER.unpack_from(data)
    if not flags & 0x8000:
        raise WireError("not a response")
    if qdcount != 1:
        raise WireError("expected one question")
    qname, offset = _read_name(data, 12)
    qtype, _ = struct.unpack_from("!HH", data, offset)
    offset += 4
    answers: list[tuple[str, int, int, object]] = []
    negative_ttl = None
    for section, count in ((0, ancount), (1, nscount)):
        for _ in range(count):
            owner, offset = _read_name(data, offset)
            if offset + 10 > len(data):
                raise WireError("truncated record")
            rtype, rclass, ttl, rdlength = _RR.unpack_from(data, offset)
            offset += 10
            start, offset = offset, offset + rdlength
            if offset > len(data):
                raise WireError("truncated rdata")
            if rclass != IN:
                continue
            if section == 0:
                if rtype in (CNAME, PTR):
                    rdata: object = _read_name(data, start)[0]
                elif rtype == A and rdlength == 4:
                    rdata = socket.inet_ntop(socket.AF_INET, data[start:offset])
                elif rtype == AAAA and rdlength == 16:
                    rdata = socket.inet_ntop(socket.AF_INET6, data[start:offset])
                elif rtype == MX and rdlength >= 3:  # "preference exchange"
                    preference = struct.unpack_from("!H", data, start)[0]
                    rdata = f"{preference} {_read_name(data, start + 2)[0]}"
                elif rtype == TXT:
                    rdata = _character_strings(data[start:offset])
                else:
                    continue
                answers.append((owner, rtype, ttl, rdata))
            elif rtype == SOA and rdlength >= 22:
                minimum = struct.unpack_from("!I", data, offset - 4)[0]
                negative_ttl = min(ttl, minimum)
    return Reply(qid, flags & 0x0F, bool(flags & 0x0200), qname, qtype, answers, negative_ttl)


def _character_strings(rdata: bytes) -> str:
    """A TXT record's strings, joined (as SPF reads them: RFC 7208 section 3.3), as text
    whose every character is one octet (latin-1: nothing lost, nothing guessed)."""
    out = bytearray()
    offset = 0
    while offset < len(rdata):
        length = rdata[offset]
        if offset + 1 + length > len(rdata):
            raise WireError("truncated TXT string")
        out += rdata[offset + 1 : offset + 1 + length]
        offset += 1 + length
    return out.decode("latin-1")


def answer_to(reply: Reply, qname: str, qtype: int) -> tuple[list[object], int] | None:
    """Follow CNAMEs from `qname`: the values of type `qtype` at the end and the smallest
    TTL on the way; None when the chain ends without such records."""
    name = qname.lower().rstrip(".")
    ttl = None
    for _ in range(16):
        values = [
            (t, r) for owner, rtype, t, r in reply.answers if owner == name and rtype == qtype
        ]
        if values:
            smallest = min(t for t, _ in values)
            return [r for _, r in values], smallest if ttl is None else min(ttl, smallest)
        alias = next(
            ((t, r) for owner, rtype, t, r in reply.answers if owner == name and rtype == CNAME),
            None,
        )
        if alias is None:
            return None
        ttl = alias[0] if ttl is None else min(ttl, alias[0])
        name = str(alias[1])
    raise WireError("CNAME chain too long")
