"""SPF through the gateway's resolver (resolver/spf.py): the RFC 7208 test suite, with
every scenario's zone served by a real DNS server on loopback, then what the proof of a
pool needs to know: the width of the network a pass went through.

The suite is the OpenSPF project's (rfc7208-tests.yml), as pyspf ships it in its source
distribution; `make test` fetches it into .cache/spf (.ci/fetch-spf-suite).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.resolver.resolver import Resolver
from gateway.resolver.spf import SpfChecker
from tests.dnsserver import DnsServer

SUITE = Path(__file__).resolve().parent.parent / ".cache" / "spf" / "rfc7208-tests.yml"


def _scenarios() -> list[dict]:
    if not SUITE.exists():
        return []
    return list(yaml.safe_load_all(SUITE.read_text()))


def _quoted(text: str) -> str:
    """A character-string in zone-file text: control and non-ASCII bytes as \\DDD (the
    suite puts a line feed and a tab inside records on purpose)."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


def _record(rdtype: str, value) -> str:
    """A zone-data value of the suite as zone-file text."""
    if rdtype in ("TXT", "SPF"):
        strings = [value] if isinstance(value, str) else list(value)
        return " ".join(_quoted(s) for s in strings) or '""'  # a record of no strings
    if rdtype == "MX":
        preference, exchange = value
        return f"{preference} {exchange.rstrip('.')}."
    if rdtype in ("PTR", "CNAME"):
        return f"{value.rstrip('.')}."
    return str(value)


def serve(dns: DnsServer, zonedata: dict) -> None:
    """The scenario's zone, as pyspf's own harness reads it: SPF records stand for TXT
    at names that publish no TXT; TIMEOUT is silence (for a name, or one type)."""
    dns.records.clear()
    dns.drop.clear()
    dns.drop_types.clear()
    for name, entries in zonedata.items():
        key = DnsServer._key(name)
        if not all(key.rstrip(".").split(".")):
            continue  # no such name can be asked
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        served: set[str] = set()
        for entry in entries:
            if entry == "TIMEOUT":  # pyspf's harness: silence for types not listed before it
                if not served:
                    dns.drop.add(key)
                for rdtype in {"A", "AAAA", "MX", "PTR", "TXT", "SPF", "CNAME"} - served:
                    dns.drop_types.add((key, rdtype))
                continue
            served.update(
                "TXT" if t == "SPF" and not has_txt else t for t, v in entry.items() if v != "NONE"
            )
            for rdtype, value in entry.items():
                if rdtype == "SPF":
                    if has_txt or value == "NONE":
                        continue
                    rdtype = "TXT"
                if value == "TIMEOUT":
                    dns.drop_types.add((key, rdtype))
                    continue
                dns.records[(key, rdtype)].append(_record(rdtype, value))


CASES = [
    pytest.param(scenario, name, case, id=f"{name}")
    for scenario in _scenarios()
    for name, case in scenario["tests"].items()
]


@pytest.fixture(scope="module")
def dns():
    with DnsServer() as server:
        yield server


@pytest.mark.skipif(not SUITE.exists(), reason=f"{SUITE} missing (make test fetches it)")
@pytest.mark.parametrize(("scenario", "name", "case"), CASES)
async def test_rfc7208_suite(dns: DnsServer, scenario: dict, name: str, case: dict) -> None:
    serve(dns, scenario["zonedata"])
    resolver = Resolver([(dns.host, dns.port)], timeout=0.3)
    try:
        checker = SpfChecker(resolver, budget=5)
        evaluation = await checker.run(case["host"], case.get("mailfrom", ""), case["helo"])
    finally:
        resolver.close()
    expected = case["result"]
    allowed = [expected] if isinstance(expected, str) else list(expected)
    assert evaluation.spf.result in allowed, (case.get("description"), evaluation)
    if "explanation" in case and evaluation.spf.result == "fail":
        assert evaluation.explanation == case["explanation"]


def test_the_suite_is_there_when_make_test_ran() -> None:
    """The suite must not go missing quietly: `make test` fetches it."""
    if not (Path(__file__).resolve().parent.parent / ".cache" / "spf").exists():
        pytest.skip("not fetched: run .ci/fetch-spf-suite .venv/bin/python")
    assert len(CASES) >= 200


# -- what the proof of a pool reads: the width of the network a pass went through ------
WIDTHS = {
    "narrow.test": ['"v=spf1 ip4:192.0.2.0/24 -all"'],
    "wide.test": ['"v=spf1 ip4:192.0.0.0/8 -all"'],
    "plusall.test": ['"v=spf1 +all"'],
    "provider.test": ['"v=spf1 include:_spf.provider.test ~all"'],
    # two character-strings, joined without a space (RFC 7208 section 3.3)
    "_spf.provider.test": [
        '"v=spf1 ip4:198.51.100.0/22 ip6:2001:db8::/32 " "a:mx.provider.test/20 -all"'
    ],
    "mx.provider.test": [],
    "byptr.test": ['"v=spf1 ptr -all"'],
    "byexists.test": ['"v=spf1 exists:%{i}.ok.test -all"'],
    "slow.test": [],
}


@pytest.fixture
def widths():
    with DnsServer() as server:
        for name, records in WIDTHS.items():
            for record in records:
                server.add(name, "TXT", record)
        server.add("mx.provider.test", "A", "203.0.113.7")
        server.add("192.0.2.9.ok.test", "A", "127.0.0.2")
        server.add_ptr("192.0.2.9", "mail.byptr.test")
        server.add("mail.byptr.test", "A", "192.0.2.9")
        server.drop.add("slow.test.")
        yield server


@pytest.mark.parametrize(
    ("domain", "address", "result", "prefix"),
    [
        ("narrow.test", "192.0.2.9", "pass", 24),
        ("narrow.test", "198.51.100.1", "fail", None),
        ("wide.test", "192.0.2.9", "pass", 8),
        ("plusall.test", "192.0.2.9", "pass", None),
        ("provider.test", "198.51.100.7", "pass", 22),
        ("provider.test", "203.0.113.200", "pass", 20),
        ("provider.test", "2001:db8::25", "pass", 32),
        ("provider.test", "192.0.2.9", "softfail", None),
        ("byptr.test", "192.0.2.9", "pass", None),
        ("byexists.test", "192.0.2.9", "pass", None),
        ("slow.test", "192.0.2.9", "temperror", None),
        ("nothing.test", "192.0.2.9", "none", None),
    ],
)
async def test_the_width_of_the_network_that_passed(
    widths: DnsServer, domain: str, address: str, result: str, prefix: int | None
) -> None:
    resolver = Resolver([(widths.host, widths.port)], timeout=0.3)
    try:
        spf = await SpfChecker(resolver, budget=2).check(domain, address)
    finally:
        resolver.close()
    assert (spf.result, spf.prefix) == (result, prefix), spf


async def test_a_result_is_reused_and_a_dns_failure_is_not(widths: DnsServer) -> None:
    resolver = Resolver([(widths.host, widths.port)], timeout=0.3)
    try:
        checker = SpfChecker(resolver, budget=2)
        for _ in range(3):
            assert (await checker.check("narrow.test", "192.0.2.9")).result == "pass"
            assert (await checker.check("slow.test", "192.0.2.9")).result == "temperror"
    finally:
        resolver.close()
    assert checker.checks == 1 + 3  # the pass once; each temperror asked again
    # A domain without SPF is "none" at every address: one evaluation for all of them.
    resolver = Resolver([(widths.host, widths.port)], timeout=0.3)
    try:
        checker = SpfChecker(resolver, budget=2)
        for n in range(1, 6):
            assert (await checker.check("nothing.test", f"192.0.2.{n}")).result == "none"
    finally:
        resolver.close()
    assert checker.checks == 1
