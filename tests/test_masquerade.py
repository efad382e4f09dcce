"""The host's default gateway as everyone's address (gateway/smtp/masquerade.py): when
the watch warns, reading the default routes, and a real gateway saying it once."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from gateway.runtime import read_default_gateways
from gateway.smtp.masquerade import QUIET, THRESHOLD, WINDOW, MasqueradeWatch, default_gateways
from tests.conftest import FakeClock
from tests.gatewayenv import start_env
from tests.smtpclient import Client, proxy_v1

BRIDGE = ipaddress.ip_address("172.28.0.1")  # a compose network's gateway: 172.28.0.0/16
REMOTE = [ipaddress.ip_address(f"198.51.100.{n}") for n in range(1, 101)]
GMAIL = ipaddress.ip_address("209.85.220.41")  # a busy real MTA

WARNING = "this host's default gateway"


def watch(*gateways, clock: FakeClock | None = None, **kwargs) -> MasqueradeWatch:
    return MasqueradeWatch(
        [ipaddress.ip_address(g) for g in gateways] or [BRIDGE], clock or FakeClock(), **kwargs
    )


def feed(w: MasqueradeWatch, addresses) -> list:
    return [m for m in map(w.seen, addresses) if m is not None]


# -- when it warns ---------------------------------------------------------------------------


@pytest.mark.unit
def test_thresholds_are_a_quarter_of_a_window_of_two_hundred_once_an_hour() -> None:
    assert (WINDOW, THRESHOLD, QUIET) == (200, 50, 3600.0)


@pytest.mark.unit
def test_everyone_through_the_bridge_warns_at_the_threshold() -> None:
    w = watch()
    assert feed(w, [BRIDGE] * (THRESHOLD - 1)) == []
    (warning,) = feed(w, [BRIDGE])
    assert (warning.address, warning.count, warning.window) == (BRIDGE, THRESHOLD, THRESHOLD)


@pytest.mark.unit
def test_a_quarter_through_the_bridge_warns_with_the_whole_window() -> None:
    """IPv6 clients through Docker's proxy, IPv4 ones with their own addresses."""
    w = watch()
    assert feed(w, REMOTE * 2) == []  # a window's worth before
    mixed = [BRIDGE if n % 4 == 0 else REMOTE[n % 100] for n in range(WINDOW * 3)]
    warnings = feed(w, mixed)
    assert len(warnings) == 1
    assert (warnings[0].address, warnings[0].window) == (BRIDGE, WINDOW)
    assert warnings[0].count == THRESHOLD


@pytest.mark.unit
def test_a_fifth_through_the_bridge_is_below_the_threshold() -> None:
    w = watch()
    assert feed(w, [BRIDGE if n % 5 == 0 else REMOTE[n % 100] for n in range(WINDOW * 10)]) == []


@pytest.mark.unit
def test_the_window_forgets_old_connections() -> None:
    """49 from the bridge long ago, then 200 others: the next 49 do not add up to 98."""
    w = watch()
    assert feed(w, [BRIDGE] * (THRESHOLD - 1) + REMOTE * 2 + [BRIDGE] * (THRESHOLD - 1)) == []


@pytest.mark.unit
def test_at_most_once_per_quiet_period() -> None:
    clock = FakeClock()
    w = watch(clock=clock)
    assert len(feed(w, [BRIDGE] * 1000)) == 1
    clock.advance(QUIET - 1)
    assert feed(w, [BRIDGE] * 100) == []
    clock.advance(1)
    (again,) = feed(w, [BRIDGE])
    assert again.count == WINDOW  # still every connection
    assert feed(w, [BRIDGE] * 100) == []


@pytest.mark.unit
def test_a_busy_real_mta_is_never_flagged() -> None:
    """Most connections from one remote address: not the host's gateway, not counted."""
    w = watch()
    assert feed(w, [GMAIL if n % 10 else REMOTE[n % 100] for n in range(WINDOW * 10)]) == []


@pytest.mark.unit
def test_only_gateways_in_private_ranges_are_watched() -> None:
    """A global next hop is a router on the internet side, never a masquerading bridge."""
    w = watch("9.9.9.9", "8.8.8.8", "172.17.0.1", "fd00::1", "fe80::1", "100.64.0.1")
    assert [str(a) for a in w.gateways] == ["172.17.0.1", "fd00::1", "fe80::1", "100.64.0.1"]
    assert feed(w, [ipaddress.ip_address("8.8.8.8")] * WINDOW) == []
    assert watch("8.8.8.8").gateways == ()


@pytest.mark.unit
def test_each_gateway_is_counted_apart() -> None:
    w = watch("172.17.0.1", "fd00::1")
    docker0, v6 = w.gateways
    half = [docker0, v6] * (THRESHOLD - 1)
    assert feed(w, half) == []
    (warning,) = feed(w, [v6])
    assert warning.address == v6 and warning.count == THRESHOLD


@pytest.mark.unit
def test_a_threshold_beyond_the_window_is_refused() -> None:
    with pytest.raises(ValueError):
        watch(window=10, threshold=11)


# -- the default routes ----------------------------------------------------------------------

ROUTE = """\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t01001CAC\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t00001CAC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth1\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth2\t00000000\t01001CAC\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth3\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0
eth4\t00000000\tGARBAGE!\t0003\t0\t0\t0\t00000000\t0\t0\t0
"""

IPV6_ROUTE = """\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 \
00000000000000000000000000000000 00000000 00000004 00000000 80200001       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
00000000000000000000000000000000 00 00000000000000000000000000000000 00 \
fe800000000000000000000000000001 00000400 00000003 00000000 00000003     eth1
"""


@pytest.mark.unit
def test_default_routes_next_hops_from_proc_net_route() -> None:
    """Little-endian IPv4 (01001CAC is 172.28.0.1), once each; a route that is not up,
    a network route and a line that does not parse give nothing."""
    assert [str(a) for a in default_gateways(ROUTE)] == ["172.28.0.1", "192.0.2.1"]


@pytest.mark.unit
def test_default_routes_next_hops_from_proc_net_ipv6_route() -> None:
    """::/0 through a next hop; not the kernel's unreachable default on lo."""
    assert [str(a) for a in default_gateways("", IPV6_ROUTE)] == ["fd00::1", "fe80::1"]
    assert [str(a) for a in default_gateways(ROUTE, IPV6_ROUTE)] == [
        "172.28.0.1",
        "192.0.2.1",
        "fd00::1",
        "fe80::1",
    ]


@pytest.mark.unit
def test_no_route_files_no_gateways(tmp_path) -> None:
    """Off Linux: nothing to watch, and nothing fails."""
    assert default_gateways() == []
    assert read_default_gateways([str(tmp_path / "route"), str(tmp_path / "ipv6_route")]) == []
    (tmp_path / "route").write_text(ROUTE)
    assert read_default_gateways([str(tmp_path / "route"), str(tmp_path / "missing")]) == [
        BRIDGE,
        ipaddress.ip_address("192.0.2.1"),
    ]


# -- a real gateway --------------------------------------------------------------------------

GATEWAY = "127.0.0.9"  # this test's "default gateway" of the host


async def connect_and_quit(port: int, source: str, proxy: bytes | None = None) -> None:
    client = await Client.connect(port, source=source, proxy=proxy)
    assert client.greeting.code == 220
    assert (await client.cmd("QUIT")).code == 221
    await client.close()


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


async def test_a_gateway_warns_once_when_every_client_comes_from_the_default_gateway(
    caplog,
) -> None:
    caplog.set_level(logging.WARNING, logger="onajimi")
    env = await start_env(default_gateways=[ipaddress.ip_address(GATEWAY)])
    try:
        for _ in range(THRESHOLD + 20):
            await connect_and_quit(env.port, GATEWAY)
    finally:
        await env.close()
    (line,) = warnings(caplog)
    assert line.startswith(f"{THRESHOLD} of the last {THRESHOLD} connections came from {GATEWAY}")
    for words in (
        "(a Docker bridge or NAT)",
        "every client then looks like one",
        "publish the port on IPv4 only (0.0.0.0:25:2525)",
        "PROXY-protocol balancer in front (listen.proxy_protocol)",
        "see README 'Docker'",
    ):
        assert words in line
    (record,) = [r for r in caplog.records if WARNING in r.getMessage()]
    assert (record.name, record.levelno) == ("onajimi", logging.WARNING)


async def test_varied_clients_and_trusted_ones_do_not_warn(caplog) -> None:
    """Twelve loopback clients, the default gateway among them (1 in 12), and as many
    connections from the gateway again while it is trusted: no warning."""
    caplog.set_level(logging.WARNING, logger="onajimi")
    env = await start_env(default_gateways=[ipaddress.ip_address(GATEWAY)])
    try:
        sources = [f"127.0.0.{n}" for n in range(2, 14)]
        for n in range(WINDOW):
            await connect_and_quit(env.port, sources[n % len(sources)])
    finally:
        await env.close()
    trusted = await start_env(
        {"policy": {"trusted_networks": [f"{GATEWAY}/32"]}},
        default_gateways=[ipaddress.ip_address(GATEWAY)],
    )
    try:
        for _ in range(THRESHOLD + 5):
            await connect_and_quit(trusted.port, GATEWAY)
    finally:
        await trusted.close()
    assert warnings(caplog) == []


async def test_behind_a_proxy_balancer_the_proxied_clients_count(caplog) -> None:
    """The balancer is the default gateway, but every PROXY header names another client:
    the real addresses are counted, and nothing is said."""
    caplog.set_level(logging.WARNING, logger="onajimi")
    env = await start_env(
        {"listen": {"proxy_protocol": True, "proxy_trusted": ["127.0.0.0/8"]}},
        default_gateways=[ipaddress.ip_address(GATEWAY)],
    )
    try:
        for n in range(THRESHOLD + 5):
            await connect_and_quit(env.port, GATEWAY, proxy_v1(f"198.51.100.{n % 50 + 1}"))
    finally:
        await env.close()
    assert warnings(caplog) == []
