"""Real sending MTAs through the gateway into a real backend Postfix: the scenarios'
machinery, shared by tests/test_real_senders.py and the long OpenSMTPD runs that go on
beside the rest of the suite (`python -m tests.realsenders OUT.json`, started by
conftest when those tests are selected).

A scenario: one sending MTA (Postfix, Exim or OpenSMTPD, from Debian's packages) with its
own queue and retry timers, at a 127.x source address whose PTR name the test's DNS
server gives; it finds the gateways by MX lookup in that DNS server, which listens on
port 53 of a loopback address (a resolver has no port setting). Each scenario's figures
become a row of the table conftest prints at the end of the run: sent, delivered,
duplicates, attempts and their `kind=`, delay, 421s.
"""

from __future__ import annotations

import asyncio
import email
import json
import logging
import re
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import settings_from_mapping
from gateway.runtime import Gateway
from tests.conftest import CONF, merge
from tests.dnsserver import DnsServer
from tests.mta import SendingExim, SendingOpenSMTPD
from tests.postfix import PostfixInstance, SendingPostfix, available
from tests.sending import SendingMTA

GATEWAYS = ("127.0.0.31", "127.0.0.32")  # gw1.mx.test, gw2.mx.test
SENDERS = {  # source address -> PTR name (forward-confirmed)
    "127.0.0.20": "mta1.sender.test",
    "127.0.0.22": "mta2.sender.test",
    "127.0.0.23": "mta3.sender.test",
    "127.0.0.24": "mta4.sender.test",
    "127.0.0.21": "p1234-ip45.dyn.sender.test",  # S25R rule 1: a real MTA misjudged
    "127.0.0.25": "mta5.sender.test",
    "127.0.0.26": "p5678-ip12.dyn.sender.test",  # rule 1 as well, for the tarpit
    "127.0.0.27": "exim1.sender.test",
    "127.0.0.28": "exim2.sender.test",
    "127.0.0.29": "p2468-ip13.dyn.sender.test",  # Exim misjudged by rule 1
    "127.0.0.30": "mta6.sender.test",
    "127.0.0.51": "smtpd1.sender.test",
    "127.0.0.52": "smtpd2.sender.test",
    "127.0.0.53": "p1357-ip14.dyn.sender.test",  # OpenSMTPD misjudged by rule 1
    "127.0.0.54": "notices.sender.test",
}
# The gateway's delay, shortened 30 times (300 s), where the sender's retry timer can be
# shortened to match (Postfix, Exim: 15 s). The first contact's burst (a fifth of the
# delay, 2 s) is what a backlog has to arrive in before look-alikes would count.
MIN_RETRY_DELAY = 10
MTAS: dict[str, type[SendingMTA]] = {
    "postfix": SendingPostfix,
    "exim": SendingExim,
    "opensmtpd": SendingOpenSMTPD,
}
RESULTS: list[dict] = []  # one row per scenario, printed by conftest at the end of the run


def unavailable(mta: str) -> str | None:
    """Why a scenario with this sending MTA cannot run here (None: it can)."""
    return available() or (None if mta == "postfix" else MTAS[mta].available())


@dataclass
class Scenario:
    name: str
    mta: str  # a key of MTAS
    source: str
    messages: int
    policy: dict
    gateways: int = 1
    sender_settings: dict[str, str] = field(default_factory=dict)
    tls: dict = field(default_factory=lambda: {"mode": "off"})
    sections: dict = field(default_factory=dict)  # more gateway settings, by section
    # Deferred attempts each message meets before it is delivered: Exim holds the rest of
    # a backlog to one recipient while its first message waits (not tried, not deferred).
    deferrals: tuple[int, int] = (1, 1)
    min_retry_delay: float = MIN_RETRY_DELAY
    # Each message's recipients: each is delivered once (postmaster@ is exempt: at once).
    recipients: tuple[str, ...] = ("bob@example.com",)


def free_port(*hosts: str) -> int:
    """A TCP port free on every one of `hosts`."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        sockets = []
        try:
            for host in hosts:
                s = socket.socket()
                sockets.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no common free port")


def dns_on_port_53(*hosts: str) -> DnsServer | None:
    """The test's DNS server on port 53 of the first of `hosts` free, serving every
    sender's and gateway's name; None when none is free."""
    for host in hosts:
        try:
            server = DnsServer(host=host, port=53)
        except OSError:
            continue
        for address, name in SENDERS.items():
            server.add_host(name, address)
        return server.start()
    return None


async def start_gateways(
    scenario: Scenario, dns: DnsServer, backend, store: str, addresses, port: int
) -> list[Gateway]:
    gateways = []
    for address in addresses:
        raw = merge(
            {
                "listen": {"addresses": [f"{address}:{port}"], "hostname": "gw.mx.test"},
                "backend": {"host": "127.0.0.1", "port": backend.port},
                "relay": {"accept_domains": ["example.com"]},
                "policy": {"trusted_networks": [], "min_retry_delay": scenario.min_retry_delay},
                "dns": {"nameservers": [dns.address], "timeout": 2},
                "store": {"url": store},
                "metrics": {"listen": ""},
            },
            {"policy": scenario.policy, "tls": scenario.tls, **scenario.sections},
        )
        gateway = Gateway(settings_from_mapping(raw, "senders.toml", CONF))
        await gateway.start()
        gateways.append(gateway)
    return gateways


def message(tag: str, n: int, size: int) -> bytes:
    line = "The quick brown fox jumps over the lazy dog. The end.\r\n"
    body = (line * (size // len(line) + 1))[:size]
    return (
        f"From: sender@sender.test\r\nTo: bob@example.com\r\n"
        f"Subject: {tag} {n:03d}\r\nMessage-ID: <{tag}.{n:03d}@sender.test>\r\n\r\n{body}\r\n"
    ).encode()


def delivered_ids(backend: PostfixInstance, tag: str) -> list[str]:
    ids = []
    for raw in backend.messages():
        parsed = email.message_from_bytes(raw)
        message_id = parsed.get("Message-ID", "")
        if f"<{tag}." in message_id:
            ids.append(message_id)
    return ids


class DecisionLines(logging.Handler):
    """The gateway's decision lines about one client address, as they are logged (the
    logger is at INFO while any scenario listens: several run at once)."""

    listening = 0

    def __init__(self, source: str) -> None:
        super().__init__(logging.INFO)
        self.needle = f" client={source} "
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if self.needle in text:
            self.lines.append(text)

    def __enter__(self) -> DecisionLines:
        logger = logging.getLogger("onajimi.decision")
        if not DecisionLines.listening:
            DecisionLines.level = logger.level
            logger.setLevel(logging.INFO)
        DecisionLines.listening += 1
        logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logger = logging.getLogger("onajimi.decision")
        logger.removeHandler(self)
        DecisionLines.listening -= 1
        if not DecisionLines.listening:
            logger.setLevel(DecisionLines.level)


def new_sender(scenario: Scenario, nameserver: str, port: int) -> SendingMTA:
    cls = MTAS[scenario.mta]
    if cls is SendingPostfix:
        return SendingPostfix(
            free_port("127.0.0.1"),
            source=scenario.source,
            hostname=SENDERS[scenario.source],
            nameserver=nameserver,
            gateway_port=port,
            extra=scenario.sender_settings,
        )
    return cls(
        source=scenario.source,
        hostname=SENDERS[scenario.source],
        nameserver=nameserver,
        gateway_port=port,
        extra=scenario.sender_settings,
    )


def figures(scenario: Scenario, sender: SendingMTA, backend, tag: str, decisions, seconds) -> dict:
    """The scenario's row of the table."""
    deliveries = sender.deliveries()
    ids = delivered_ids(backend, tag)
    delays = sorted(d.delay for d in deliveries.values() if d.delay is not None)
    return {
        "scenario": scenario.name,
        "mta": scenario.mta,
        "sent": scenario.messages,
        "delivered": len(set(ids)),
        "duplicates": len(ids) - len(set(ids)) * len(scenario.recipients),
        "attempts": sum(len(d.deferred) + d.sent for d in deliveries.values()),
        "deferred": sorted({len(d.deferred) for d in deliveries.values()}),
        "all_sent": all(d.sent for d in deliveries.values()),
        "delay_max": delays[-1] if delays else None,
        "delay_median": delays[len(delays) // 2] if delays else None,
        "seconds": round(seconds, 1),
        "penalties": sum("action=penalty" in line for line in decisions),
        "refusals_421": sender.replies_seen().get("421", 0),
        "early_counted": max(
            (int(m[1]) for line in decisions if (m := re.search(r" early=(\d+)", line))),
            default=0,
        ),
        "early_retry_said": sum("reason=early_retry" in line for line in decisions),
        "kinds": dict(
            Counter(m[1] for line in decisions if (m := re.search(r" kind=(\w+)", line)))
        ),
        "decided": sorted(
            {
                f"{m[1]}/{m[2]}"
                for line in decisions
                if (m := re.search(r" action=(\w+) reason=(\w+)", line))
            }
        ),
        "named_client": backend.log_text().count(
            f"client={SENDERS[scenario.source]}[{scenario.source}]"
        ),
    }


def problems(scenario: Scenario, row: dict, emptied: bool, log: str) -> list[str]:
    """What the scenario got wrong: every message exactly once, after at most its
    deferrals, never a 421 or the penalty box, nothing counted as early."""
    found = []
    if not emptied:
        found.append(f"the sending queue did not empty:\n{log[-20000:]}")
    if row["refusals_421"] or row["penalties"]:
        found.append(f"421s {row['refusals_421']}, penalties {row['penalties']}")
    if row["delivered"] != scenario.messages or row["duplicates"]:
        found.append(
            f"delivered {row['delivered']} of {scenario.messages}, {row['duplicates']} twice"
        )
    low, high = scenario.deferrals
    if not row["all_sent"] or any(n < low or n > high for n in row["deferred"]):
        found.append(f"deferrals per message {row['deferred']}, expected {low}..{high}")
    if row["early_counted"] or row["early_retry_said"]:
        found.append(f"early retries counted: {row['early_counted']}")
    # The backend names the original client of every message (XCLIENT), never the gateway.
    if row["named_client"] < scenario.messages:
        found.append(f"the backend named the client {row['named_client']} times")
    return found


async def run_scenario(
    scenario: Scenario,
    dns: DnsServer,
    backend: PostfixInstance,
    store: str,
    *,
    addresses: tuple[str, ...] = GATEWAYS,
    port: int | None = None,
    wait: float = 60,
) -> tuple[dict, list[str]]:
    """Run one scenario; its row (also added to RESULTS) and what it got wrong."""
    addresses = addresses[: scenario.gateways]
    port = port or free_port(*addresses)
    names = [f"gw{n}.mx.test" for n in range(1, len(addresses) + 1)]
    for name, address in zip(names, addresses, strict=True):
        dns.replace(name, "A", address)
    # MX records of equal preference, one per gateway.
    dns.replace("example.com", "MX", *(f"10 {name}." for name in names))
    tag = f"{scenario.name.replace(' ', '-')}-{int(time.time() * 1000)}"
    with DecisionLines(scenario.source) as decisions:
        gateways = await start_gateways(scenario, dns, backend, store, addresses, port)
        sender = new_sender(scenario, dns.host, port)
        started = time.monotonic()
        try:
            await asyncio.to_thread(sender.start)
            # Ordinary mail: 1 KB, 5 KB and 100 KB messages, many of them look-alikes (the
            # same sender, recipient and size), as a template or a mailing list makes them.
            batch = [
                (
                    "sender@sender.test",
                    list(scenario.recipients),
                    message(tag, n, (1000, 5000, 100_000)[n % 3]),
                )
                for n in range(scenario.messages)
            ]
            await asyncio.to_thread(sender.submit, batch)
            emptied = await asyncio.to_thread(sender.wait_until_empty, wait)
            row = figures(
                scenario, sender, backend, tag, decisions.lines, time.monotonic() - started
            )
            log = sender.log_text()
        finally:
            await asyncio.to_thread(sender.stop)
            for gateway in gateways:
                await gateway.stop(grace=1)
    RESULTS.append(row)
    return row, problems(scenario, row, emptied, log)


# -- OpenSMTPD's scenarios, beside the rest of the suite --------------------------------
# Its retry schedule is compiled in (400 s, then 1600 s...), so they run in real time
# with the gateway's default timings (min_retry_delay 300 s): side by side, each with its
# gateway on port 25 of an address of its own (OpenSMTPD relays by MX to port 25 only)
# and its own DNS server, in a process of their own started when the suite starts.
OPENSMTPD_SCENARIOS = (
    Scenario(
        "OpenSMTPD backlog of 20, defer=all",
        "opensmtpd",
        "127.0.0.51",
        20,
        {"defer": "all"},
        min_retry_delay=300,
    ),
    Scenario(
        "OpenSMTPD backlog of 20, one connection, defer=all",
        "opensmtpd",
        "127.0.0.52",
        20,
        {"defer": "all"},
        sender_settings={"mta limit": "max-conn-per-route 1"},
        min_retry_delay=300,
    ),
    Scenario(
        "OpenSMTPD S25R suspect name, 10, defer=suspect",
        "opensmtpd",
        "127.0.0.53",
        10,
        {},
        min_retry_delay=300,
    ),
    Scenario(
        "OpenSMTPD backlog of 200 to one address, defaults",
        "opensmtpd",
        "127.0.0.54",
        200,
        {"defer": "all"},
        min_retry_delay=300,
    ),
)
# Its first retry comes 400 s after a message was queued; a backlog of 200 takes it 100 s
# to try once, and then as long to deliver.
OPENSMTPD_WAIT = 900


async def run_opensmtpd_scenarios() -> list[dict]:
    """Every OpenSMTPD scenario at once; a result per scenario (row, problems)."""
    backend = PostfixInstance(free_port("127.0.0.1")).start()
    servers = []
    try:

        async def one(n: int, scenario: Scenario) -> dict:
            dns = dns_on_port_53(f"127.0.53.{61 + n}")
            if dns is None:
                return {"scenario": scenario.name, "problems": ["no loopback port 53 free"]}
            servers.append(dns)
            address = f"127.0.0.{41 + n}"
            row, found = await run_scenario(
                scenario,
                dns,
                backend,
                "memory:",
                addresses=(address,),
                port=25,
                wait=OPENSMTPD_WAIT,
            )
            return {**row, "problems": found}

        return await asyncio.gather(*(one(n, s) for n, s in enumerate(OPENSMTPD_SCENARIOS)))
    finally:
        for server in servers:
            server.stop()
        backend.stop()


def main(out: str) -> int:
    """Run OpenSMTPD's scenarios; write their results as JSON to `out`."""
    why = unavailable("opensmtpd")
    if why is not None:
        results = [{"skipped": why}]
    else:
        try:
            results = asyncio.run(run_opensmtpd_scenarios())
        except Exception as exc:  # reported by the tests that wait for it
            results = [{"scenario": "OpenSMTPD", "problems": [f"{type(exc).__name__}: {exc}"]}]
    Path(out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
