"""The benchmark's DNS server: `python -m bench.dnsd PORT` serves until killed.

Every 127.x.y.z address has a forward-confirmed PTR name. Addresses 127.0.0.x are
clean mail servers (`mail-x.bench.example`); every other address looks like an end-user
pool (`p1-2-3.dyn.bench.example`, S25R rule 1), so each new one is a first-time suspect.
"""

from __future__ import annotations

import sys
import time

from tests.dnsserver import DnsServer

SUFFIX = ".in-addr.arpa."


def name_for(address: str) -> str:
    a, b, c, d = address.split(".")
    if (a, b, c) == ("127", "0", "0"):
        return f"mail-{d}.bench.example."
    return f"p{b}-{c}-{d}.dyn.bench.example."


def address_for(name: str) -> str | None:
    label = name.split(".", 1)[0]
    if name.endswith(".dyn.bench.example.") and label.startswith("p"):
        return "127." + label[1:].replace("-", ".")
    if name.endswith(".bench.example.") and label.startswith("mail-"):
        return "127.0.0." + label[len("mail-") :]
    return None


def synthesize(name: str, rdtype: str) -> list[str] | None:
    if rdtype == "PTR" and name.endswith(SUFFIX):
        octets = name[: -len(SUFFIX)].split(".")
        if len(octets) == 4 and octets[3] == "127":
            return [name_for(".".join(reversed(octets)))]
    if rdtype == "A":
        address = address_for(name)
        return [address] if address else None
    return None


if __name__ == "__main__":
    server = DnsServer(ttl=3600, negative_ttl=3600, port=int(sys.argv[1]))
    server.synthesize = synthesize
    server.start()
    while True:
        time.sleep(3600)
