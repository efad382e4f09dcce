"""Synthetic but realistic inputs: big list files and a population of clients.

List entries live outside the client range (clients come from 198.18.0.0/15, the
benchmarking range of RFC 2544), so decisions run the whole pipeline instead of
stopping at a list hit, which would flatter the figures.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from pathlib import Path

CLIENT_NET = ipaddress.ip_network("198.18.0.0/15")

# The regex mix of real S25R/access-table files: mostly "ends with this provider's pool
# domain", some anchored prefixes, a few anchored classes, very few unanchored words.
REGEX_MIX = {"suffix": 0.85, "prefix": 0.10, "anchored": 0.04, "unanchored": 0.01}


def write_cidrs(path: Path, count: int, rng: random.Random) -> None:
    lines = []
    while len(lines) < count:
        prefix = rng.choice([20, 22, 24, 24, 24, 26, 28, 29, 30, 32, 32])
        net = ipaddress.ip_network((rng.randrange(1 << 24, 100 << 24), prefix), strict=False)
        lines.append(f"{net}\n")
    for i in range(count // 20):  # some IPv6 too
        lines.append(f"2001:db8:{i:x}::/48\n")
    path.write_text("# generated CIDR list\n" + "".join(lines))


def write_regexes(path: Path, count: int, rng: random.Random) -> dict[str, int]:
    lines = []
    made = dict.fromkeys(REGEX_MIX, 0)
    for i in range(count):
        roll = rng.random()
        if roll < REGEX_MIX["suffix"]:
            kind, line = "suffix", rf"/\.(dyn|pool|dsl){i}\.isp{i % 997}\.net$/"
        elif roll < REGEX_MIX["suffix"] + REGEX_MIX["prefix"]:
            kind, line = "prefix", rf"/^cpe{i}-[0-9]+\./"
        elif roll < 1 - REGEX_MIX["unanchored"]:
            kind, line = "anchored", rf"/^[0-9a-f]{{8}}\.c{i}\./"
        else:
            kind, line = "unanchored", rf"/dialup{i}[a-z]*\./"
        made[kind] += 1
        lines.append(f"{line}   450 S25R check\n")
    path.write_text("# generated blacklist\n" + "".join(lines))
    return made


@dataclass(frozen=True, slots=True)
class Client:
    address: str
    name: str | None  # forward-confirmed PTR name, or None for "no PTR"


def clients(count: int, rng: random.Random) -> list[Client]:
    """A mix of clean servers, S25R suspects, blacklisted pools and hosts without PTR."""
    base = int(CLIENT_NET.network_address)
    out = []
    for i in range(count):
        address = str(ipaddress.IPv4Address(base + 1 + i))
        roll = rng.random()
        if roll < 0.35:
            name = f"mail.company{i}.example"
        elif roll < 0.65:
            name = f"p{i}-ip{i % 250}.dyn.access{i % 50}.example.jp"
        elif roll < 0.85:
            j = rng.randrange(5000)
            name = f"host.dyn{j}.isp{j % 997}.net"
        else:
            name = None
        out.append(Client(address, name))
    return out
