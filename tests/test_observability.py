"""Metrics, /healthz, decision logs, whitelist candidates, blocklist export, status."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import shutil
import subprocess
import sys
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import logs
from gateway.errors import StoreError
from gateway.policy.records import Penalty, Pending
from gateway.reports import (
    Blocked,
    blocklist,
    candidates,
    candidates_text,
    render_ipset,
    render_nft,
    render_plain,
)
from tests import logfmt
from tests.conftest import FakeClock
from tests.gatewayenv import start_env
from tests.waiting import eventually

METRICS = {"metrics": {"listen": "127.0.0.1:0"}}
RULE1 = [f"127.0.0.{i}" for i in (30, 31, 32)]


async def http_get(port: int, path: str) -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split()[1]), body


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def session(env, source: str, deliver: bool) -> int:
    client = await env.client(source)
    await client.ehlo()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    rcpt = await client.cmd("RCPT TO:<bob@example.com>")
    if deliver and rcpt.code == 250:
        await client.data(b"Subject: m\r\n\r\nx\r\n")
    await client.cmd("QUIT")
    await client.close()
    return rcpt.code


@pytest.fixture
async def metered():
    env = await start_env(METRICS)
    for address in RULE1:
        env.dns.add_host(f"p{address.rsplit('.', 1)[1]}-9.dyn.example.jp", address)
    yield env
    await env.close()


async def test_counters_move_exactly_as_the_decisions(metered) -> None:
    env = metered
    port = env.gateway.endpoint.port
    for address in RULE1:  # three first contacts from rule-1 pool names
        assert await session(env, address, deliver=False) == 450
    env.clock.advance(301)
    assert await session(env, RULE1[0], deliver=True) == 250  # one comes back: promoted
    assert await session(env, "127.0.0.2", deliver=True) == 250  # a clean host
    active = env.gateway.metrics.sessions_active
    await eventually(lambda: active._value.get(), lambda n: n == 0)  # the last one closed
    await env.gateway._count_records()
    status, body = await http_get(port, "/metrics")
    assert status == 200
    got = samples(body)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert value("onajimi_decisions_total", action="defer", reason="s25r_rule1") == 3
    assert value("onajimi_decisions_total", action="pass", reason="promoted") == 1
    assert value("onajimi_decisions_total", action="pass", reason="clean") == 1
    assert value("onajimi_decisions_total", action="reject", reason="denylist") == 0
    assert value("onajimi_retries_total", outcome="promoted") == 1
    assert value("onajimi_retries_total", outcome="early") == 0
    assert value("onajimi_relay_transactions_total", result="delivered") == 2
    assert value("onajimi_relay_seconds_count") == 2
    assert value("onajimi_connections_total") == 5
    assert value("onajimi_sessions_active") == 0
    assert value("onajimi_store_records", kind="pending") == 2
    assert value("onajimi_store_records", kind="familiar") == 1
    assert value("onajimi_dns_seconds_count") >= 8  # PTR + A for each new address
    # Labels never carry an address, a name or a sender.
    for (_, labels), _ in got.items():
        for _, label_value in labels:
            assert (
                "127.0.0" not in label_value
                and "@" not in label_value
                and ".example" not in label_value
            )


async def test_healthz(metered, monkeypatch) -> None:
    port = metered.gateway.endpoint.port
    assert await http_get(port, "/healthz") == (200, "ok\n")

    async def broken() -> int:
        raise StoreError("sqlite /var/lib/onajimi/state.db: disk I/O error")

    monkeypatch.setattr(metered.gateway.store, "generation", broken)
    status, body = await http_get(port, "/healthz")
    assert status == 503 and "disk I/O error" in body
    assert (await http_get(port, "/nope"))[0] == 404


@pytest.fixture
def log_lines():
    """The process's log output, through the real formatter, as a list of lines."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()

    def configure(style: str):
        logs.configure("info", style, stream=buffer)
        return lambda: buffer.getvalue().splitlines()

    yield configure
    logs.configure("info", "logfmt", stream=io.StringIO())
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])


# Control characters in a HELO are refused now (501), so what is left to forge a log line
# with: a quote, spaces, fields of its own, a backslash.
HOSTILE_HELO = 'evil" injected action=pass reason=trusted \\ x'


async def test_logfmt_lines_quote_a_hostile_helo(env, log_lines) -> None:
    lines = log_lines("logfmt")
    client = await env.client("127.0.0.3")
    await client.send(f"EHLO {HOSTILE_HELO}\r\n".encode())
    await client.read_reply()
    await client.cmd("MAIL FROM:<alice@sender.example>")
    await client.cmd("RCPT TO:<bob@example.com>")
    await client.close()
    decisions = [line for line in lines() if " decision " in line]
    assert len(decisions) == 1
    _, fields = logfmt.parse(decisions[0])
    assert fields["helo"] == HOSTILE_HELO
    assert fields["action"] == "defer" and fields["reason"] == "s25r_rule1"
    assert fields["session"] and fields["ts"].endswith("Z")


@pytest.mark.gateway({"log": {"format": "json"}})
async def test_json_lines(env, log_lines) -> None:
    lines = log_lines("json")
    client = await env.client("127.0.0.2")
    await client.send(f"EHLO {HOSTILE_HELO}\r\n".encode())
    await client.read_reply()
    await client.send_mail("alice@sender.example", ["bob@example.com"], b"s\r\n")
    await client.close()
    records = [json.loads(line) for line in lines()]
    decision = next(r for r in records if r.get("event") == "decision")
    relay = next(r for r in records if r.get("event") == "relay")
    assert decision["helo"] == HOSTILE_HELO and decision["reason"] == "clean"
    assert relay["result"] == "delivered" and float(relay["seconds"]) >= 0
    assert relay["reply"].startswith("250 2.0.0 Ok")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def line_logger(stream: io.StringIO) -> logging.Logger:
    logger = logging.getLogger(f"test.lines.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers[:] = [logs.LineHandler(stream)]
    return logger


async def test_lines_of_one_loop_round_are_written_together() -> None:
    stream = CountingStream()
    logger = line_logger(stream)
    for n in range(3):
        logs.emit(logger, "decision", {"n": n})
    assert stream.getvalue() == ""  # still this round
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines() == ["decision n=0", "decision n=1", "decision n=2"]
    assert stream.writes == 1
    logs.emit(logger, "decision", {"n": 3})  # an idle loop: written at the next round
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines()[-1] == "decision n=3" and stream.writes == 2


def test_lines_without_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    logs.emit(line_logger(stream), "stopping", {"sessions": 0})
    assert stream.getvalue() == "stopping sessions=0\n"


# -- candidates and blocklist ----------------------------------------------------------------

NOW = 1_800_000_000.0


def pending(
    client: str, ptr: str, attempts: int, span: float, reason="s25r_rule1", early=0, idle=0.0
) -> Pending:
    """`attempts` over `span` seconds, the last one `idle` seconds ago."""
    last = NOW - idle
    return Pending(last - span, last, attempts, early, reason, NOW + 86400, client, ptr)


def test_candidates_rank_regular_retriers_first_and_group_by_domain() -> None:
    records = [
        ("defer:192.0.2.1", pending("192.0.2.1", "bot1.dyn.example.net", 9, 20)),  # hammers
        ("defer:198.51.100.1", pending("198.51.100.1", "mta-1.mail.partner.example", 3, 240)),
        ("defer:198.51.100.2", pending("198.51.100.2", "mta-2.mail.partner.example", 2, 120)),
        ("defer:203.0.113.5", pending("203.0.113.5", "", 2, 3000, reason="s25r_rule0", idle=7200)),
        ("defer:203.0.113.6", pending("203.0.113.6", "one.off.example", 1, 0)),  # never came back
    ]
    groups = candidates(records, NOW, min_attempts=2)
    assert [g.domain for g in groups] == [
        "mail.partner.example",
        "(no PTR name)",
        "dyn.example.net",
    ]
    assert groups[0].regular and not groups[-1].regular
    assert groups[0].suggestion() == "onajimi allow add mail.partner.example"
    assert groups[1].suggestion() == "onajimi allow add 203.0.113.5"
    assert [c.client for c in groups[0].candidates] == ["198.51.100.1", "198.51.100.2"]
    recent = candidates(records, NOW, min_attempts=2, since=3600)
    assert {c.key for g in recent for c in g.candidates} == {
        "192.0.2.1",
        "198.51.100.1",
        "198.51.100.2",
    }
    assert candidates(records, NOW, min_attempts=4) == [groups[2]]


def test_candidates_impatient_lists_the_penalty_box_and_near_misses() -> None:
    records = [
        ("penalty:192.0.2.9", Penalty(NOW - 10, NOW + 3590, 6, "192.0.2.9", "bot.dyn.example.net")),
        ("defer:192.0.2.10", pending("192.0.2.10", "bot2.dyn.example.net", 5, 8, early=4)),
        ("defer:198.51.100.1", pending("198.51.100.1", "mta.partner.example", 3, 600)),
    ]
    groups = candidates(records, NOW, impatient=True, impatient_retries=5)
    keys = {c.key for g in groups for c in g.candidates}
    assert keys == {"192.0.2.9", "192.0.2.10"}
    assert groups[0].suggestion(deny=True).startswith("onajimi deny add ")


def test_impatience_goes_by_counted_early_retries_not_attempts() -> None:
    records = [
        # A backlog of 40 messages in 40 sessions, no retry among them: not impatient.
        ("defer:198.51.100.1", pending("198.51.100.1", "mta.partner.example", 40, 3)),
        # A bot in the penalty box: its pending record is kept beside the penalty.
        ("defer:192.0.2.9", pending("192.0.2.9", "bot.dyn.example.net", 9, 4, early=5)),
        ("penalty:192.0.2.9", Penalty(NOW - 10, NOW + 3590, 9, "192.0.2.9", "bot.dyn.example.net")),
    ]
    impatient = candidates(records, NOW, impatient=True, impatient_retries=5)
    (only,) = [c for g in impatient for c in g.candidates]
    assert (only.key, only.early, only.penalised_until) == ("192.0.2.9", 5, NOW + 3590)
    assert "early 5" in candidates_text(impatient, impatient=True)
    # On the rescue list a boxed key comes last, marked: a real server can be boxed too.
    rescue = candidates(records, NOW, impatient_retries=5)
    assert [c.key for g in rescue for c in g.candidates] == ["198.51.100.1", "192.0.2.9"]
    assert rescue[-1].penalised and "penalty until" in candidates_text(rescue)


def test_a_triplet_key_meets_its_hosts_penalty() -> None:
    triplet = pending("192.0.2.9", "bot.dyn.example.net", 9, 4, early=5)
    records = [
        ("defer:192.0.2.9/win@lottery.example/bob@example.com", triplet),
        ("penalty:192.0.2.9", Penalty(NOW - 10, NOW + 3590, 9, "192.0.2.9", "bot.dyn.example.net")),
        ("penalty:198.51.100.0/24", Penalty(NOW - 5, NOW + 60, 7, "198.51.100.7", "")),
    ]
    groups = candidates(records, NOW, impatient=True, impatient_retries=5)
    listed = {c.key: c for g in groups for c in g.candidates}
    assert set(listed) == {"192.0.2.9/win@lottery.example/bob@example.com", "198.51.100.0/24"}
    assert listed["192.0.2.9/win@lottery.example/bob@example.com"].penalised_until == NOW + 3590
    assert listed["198.51.100.0/24"].early is None  # a penalty seen alone: count unknown
    assert "early -" in candidates_text(groups, impatient=True)


def _entries(now: float) -> list[Blocked]:
    penalties = [
        ("penalty:203.0.113.9", Penalty(now, now + 3600, 6)),
        ("penalty:198.51.100.7", Penalty(now, now + 60, 6)),
        ("penalty:2001:db8:1::/64", Penalty(now, now + 100, 6)),
        ("penalty:192.0.2.1", Penalty(now - 10, now - 1, 6)),  # expired
    ]
    denied = [(ipaddress.ip_network("198.51.100.0/24"), None, "deny file")]
    return blocklist(penalties, denied, now)


def test_blocklist_plain_folds_overlaps_and_drops_expired() -> None:
    assert render_plain(_entries(NOW), NOW) == "198.51.100.0/24\n203.0.113.9\n2001:db8:1::/64\n"


@pytest.mark.skipif(
    shutil.which("nft") is None, reason="nft not installed (make test installs nftables)"
)
def test_blocklist_nft_loads_with_nft_check(tmp_path) -> None:
    path = tmp_path / "blocklist.nft"
    path.write_text(render_nft(_entries(NOW), NOW, ports=[25, 2525]))
    result = subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "203.0.113.9 timeout 3600s" in path.read_text()


def test_blocklist_ipset_script_parses() -> None:
    script = render_ipset(_entries(NOW), NOW).splitlines()
    commands = [line.split() for line in script if line and not line.startswith("#")]
    assert {c[0] for c in commands} <= {"create", "flush", "add", "swap", "destroy"}
    sets = {c[1] for c in commands if c[0] == "create"}
    assert sets == {"onajimi4", "onajimi4-new", "onajimi6", "onajimi6-new"}
    assert all(len(name) <= 31 for name in sets)
    adds = [c for c in commands if c[0] == "add"]
    for _, name, network, *rest in adds:
        ipaddress.ip_network(network)  # a valid address or network
        assert name.endswith("-new") and (
            rest == [] or (rest[0] == "timeout" and rest[1].isdigit())
        )
    assert ["add", "onajimi4-new", "203.0.113.9", "timeout", "3600"] in adds
    assert ["add", "onajimi4-new", "198.51.100.0/24"] in adds
    assert ["swap", "onajimi4-new", "onajimi4"] in commands


# -- the CLI against a running gateway's store -------------------------------------------------


async def test_status_sees_a_running_gateway_and_cli_reports_work(tmp_path) -> None:
    store_url = f"sqlite://{tmp_path / 'state.db'}"
    # The CLI reads heartbeats with the wall clock: the gateway's clock must agree with it.
    env = await start_env({"store": {"url": store_url}}, clock=FakeClock(time.time()))
    config = tmp_path / "gateway.toml"
    from tests.conftest import CONF

    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        shutil.copy(CONF / name, tmp_path / name)
    (tmp_path / "deny.txt").write_text("198.51.100.0/24\n")
    config.write_text(f'[relay]\naccept_domains = ["example.com"]\n[store]\nurl = "{store_url}"\n')
    try:
        await env.gateway.store.put(
            "defer:198.51.100.1", pending("198.51.100.1", "mta-1.mail.partner.example", 3, 240)
        )
        await env.gateway.store.put("penalty:203.0.113.9", Penalty(NOW, 4_000_000_000.0, 6))

        def cli(*args: str) -> str:
            result = subprocess.run(
                [sys.executable, "-m", "gateway", *args, "-c", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        status = await asyncio.to_thread(cli, "status")
        assert "gateways" in status and "pid" in status and "listening on 127.0.0.1:" in status
        groups = json.loads(await asyncio.to_thread(cli, "candidates", "--json"))
        assert groups[0]["domain"] == "mail.partner.example"
        assert groups[0]["suggestion"] == "onajimi allow add mta-1.mail.partner.example"
        plain = await asyncio.to_thread(cli, "export-blocklist")
        assert plain.splitlines() == ["198.51.100.0/24", "203.0.113.9"]
    finally:
        await env.close()
    status = await asyncio.to_thread(
        lambda: (
            subprocess.run(
                [sys.executable, "-m", "gateway", "status", "-c", str(config)],
                capture_output=True,
                text=True,
            ).stdout
        )
    )
    assert "none running against this store" in status


def test_aiosmtpd_command_lines_stay_out_of_the_logs() -> None:
    """aiosmtpd logs every command line at INFO and masks only lines that begin with
    AUTH: a client pipelining its SASL answers after a refused AUTH would have them read
    (and logged) as commands. `onajimi run` keeps aiosmtpd's logger at ERROR."""
    import logging

    from gateway import logs

    root, aiosmtpd = logging.getLogger(), logging.getLogger("mail.log")
    saved = (list(root.handlers), root.level, aiosmtpd.level, logs._formatter.style)
    try:
        logs.configure("debug", "logfmt")
        assert aiosmtpd.getEffectiveLevel() == logging.ERROR
    finally:  # pytest's own handlers and levels, as they were
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        aiosmtpd.setLevel(saved[2])
        logs._formatter.style = saved[3]
