"""The benchmark's DNS server: `python -m bench.dnsd PORT` serves until killed.

Every 127.x.y.z address has a forward-confirmed PTR name. Addresses 127.0.0.x are clean
mail servers (`mail-x.bench.example`); every other address looks like an end-user pool
(`p1-2-3.dyn.bench.example`, S25R rule 1), so each new one is a first-time suspect.

Replies are built straight from the query's bytes (no dnspython per query): the
benchmark measures the gateway, and a slow DNS server on the same two cores would
measure the DNS server instead. The answers are correct DNS all the same (the gateway
parses them with dnspython); tests/dnsserver.py is the general-purpose server.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys

TTL = 3600
_PTR, _A, _IN = 12, 1, 1


def name_for(address: str) -> str:
    a, b, c, d = address.split(".")
    if (a, b, c) == ("127", "0", "0"):
        return f"mail-{d}.bench.example"
    return f"p{b}-{c}-{d}.dyn.bench.example"


def address_for(name: str) -> str | None:
    label = name.split(".", 1)[0]
    if name.endswith(".dyn.bench.example") and label.startswith("p"):
        return "127." + label[1:].replace("-", ".")
    if name.endswith(".bench.example") and label.startswith("mail-"):
        return "127.0.0." + label[len("mail-") :]
    return None


def _wire_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def answer(query: bytes) -> bytes | None:
    """The reply to one query, or None for garbage."""
    if len(query) < 17:
        return None
    labels, i = [], 12
    while query[i]:
        length = query[i]
        labels.append(query[i + 1 : i + 1 + length].decode("ascii", "replace").lower())
        i += 1 + length
    question_end = i + 5
    qtype, _ = struct.unpack_from("!HH", query, i + 1)
    name = ".".join(labels)
    rdata = None
    if qtype == _PTR and name.endswith(".in-addr.arpa") and len(labels) == 6 and labels[3] == "127":
        rdata = _wire_name(name_for(".".join(reversed(labels[:4]))))
    elif qtype == _A:
        address = address_for(name)
        rdata = socket.inet_aton(address) if address else None
    flags = 0x8400 | (0 if rdata is not None else 3)  # response, authoritative, NXDOMAIN if none
    header = query[:2] + struct.pack("!HHHHH", flags, 1, 1 if rdata is not None else 0, 0, 0)
    reply = header + query[12:question_end]
    if rdata is not None:  # the answer's name points at the question (offset 12)
        reply += struct.pack("!HHHIH", 0xC00C, qtype, _IN, TTL, len(rdata)) + rdata
    return reply


class _Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            reply = answer(data)
        except (IndexError, struct.error):
            return
        if reply is not None:
            self.transport.sendto(reply, addr)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_Responder, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(serve(int(sys.argv[1])))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(int(sys.argv[1])))
