"""A whole gateway on loopback for end-to-end tests: real sockets, a real DNS server,
a fault-injecting backend, and the gateway's clock in the test's hands."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import settings_from_mapping
from gateway.runtime import Gateway
from gateway.store import open_store
from tests.backend import FakeBackend
from tests.conftest import CONF, FakeClock, merge
from tests.dnsserver import DnsServer
from tests.smtpclient import Client

# Client addresses on loopback, and what their reverse DNS says.
HOSTS = {
    "127.0.0.2": "mail.example.org",  # clean, confirmed
    "127.0.0.3": "p1234-ip45.dyn.example.jp",  # S25R rule 1
    "127.0.0.4": "host12345.example.net",  # rule 2
    "127.0.0.5": "mail.12345.example.co.jp",  # rule 3
    "127.0.0.6": "ip1.10-20-30.example.net",  # rule 4
    "127.0.0.7": "host1.pool2.dyn.example.net",  # rule 5
    "127.0.0.8": "dhcp5.example.com",  # rule 6
    "127.0.0.11": "pool-ab.dyn.optonline.net",  # shipped blacklist
    "127.0.0.12": "mail-ot1-f41.google.com",  # shipped allow list (and rule 1)
    "127.0.0.14": "mx1.example.org",  # clean, same domain as 127.0.0.2
    "192.0.2.25": "mx.sender.example",  # clean, reached through PROXY headers
    "2001:db8::25": "mx6.sender.example",
    "203.0.113.9": "p1234-ip45.dyn.example.jp",  # rule 1, through PROXY
}
NO_PTR = "127.0.0.9"
UNCONFIRMED = "127.0.0.10"  # PTR points to a name that does not resolve back
SERVFAIL = "127.0.0.13"


def populate(dns: DnsServer) -> None:
    for address, name in HOSTS.items():
        dns.add_host(name, address)
    dns.add_ptr(UNCONFIRMED, "mail.unconfirmed.example")
    dns.add_host("mail.unconfirmed.example", "198.51.100.200", ptr=False)
    dns.servfail.add(dns.reverse_name(SERVFAIL))


def write_gateway_config(
    path: Path,
    *,
    port: int,
    backend: int,
    dns: str,
    store: str,
    lists: Path,
    extra: str = "",
    policy: str = "",
    backend_extra: str = "",
    relay: str = "",
    metrics: str = "",
    listen: str = "",
    tls: str = 'mode = "off"',
) -> Path:
    """A gateway.toml for `onajimi run` in a test or the benchmark. `listen`, `policy`,
    `backend_extra` and `relay` add lines to those tables, `metrics` is metrics.listen
    (empty: off), `tls` fills the [tls] table (STARTTLS off unless a test wants it),
    `extra` adds whole tables."""
    path.write_text(
        f"""
[listen]
addresses = ["127.0.0.1:{port}"]
hostname = "gw.test"
{listen}
[backend]
port = {backend}
{backend_extra}
[relay]
accept_domains = ["example.com"]
{relay}
[policy]
trusted_networks = []
{policy}
[s25r]
blacklist_files = ["{lists / "s25r-blacklist.txt"}"]
[lists]
allow_files = ["{lists / "allow.txt"}"]
deny_files = ["{lists / "deny.txt"}"]
[dns]
nameservers = ["{dns}"]
timeout = 1
[store]
url = "{store}"
[metrics]
listen = "{metrics}"
[tls]
{tls}
{extra}
"""
    )
    return path


@dataclass
class Env:
    gateway: Gateway
    dns: DnsServer
    backend: FakeBackend
    clock: FakeClock
    port: int

    async def client(self, source: str = "127.0.0.2", **kwargs: Any) -> Client:
        return await Client.connect(self.port, source=source, **kwargs)

    async def stop(self) -> None:
        await self.gateway.stop(grace=1.0)

    async def close(self) -> None:
        """The gateway, then the backend and DNS server it was started with."""
        await self.stop()
        await self.backend.stop()
        self.dns.stop()


def env_settings(
    dns: DnsServer, backend: FakeBackend, overrides: dict | None = None, base_dir: Path = CONF
):
    raw = merge(
        {
            "listen": {"addresses": ["127.0.0.1:0"], "hostname": "gw.test"},
            "backend": {
                "host": "127.0.0.1",
                "port": backend.port,
                "connect_timeout": 2,
                "command_timeout": 3,
            },
            "relay": {"accept_domains": ["example.com"]},
            "policy": {"trusted_networks": []},
            "dns": {"nameservers": [dns.address], "timeout": 1},
            "store": {"url": "memory:"},
            "metrics": {"listen": ""},
        },
        overrides or {},
    )
    raw.setdefault("tls", {"mode": "off"})  # tests that want STARTTLS say so
    return settings_from_mapping(raw, "e2e.toml", base_dir)


async def start_env(
    overrides: dict | None = None,
    *,
    dns: DnsServer | None = None,
    backend: FakeBackend | None = None,
    clock: FakeClock | None = None,
    default_gateways: list | None = None,
) -> Env:
    """`default_gateways`: the host's, as the gateway should take them (None: this
    machine's, from /proc/net/route)."""
    if dns is None:
        dns = DnsServer().start()
        populate(dns)
    if backend is None:
        backend = await FakeBackend().start()
    clock = clock or FakeClock()
    settings = env_settings(dns, backend, overrides)
    store = open_store(settings.store.url, clock=clock, timeout=settings.store.timeout)
    gateway = Gateway(settings, clock=clock, store=store, default_gateways=default_gateways)
    await gateway.start()
    port = int(gateway.bound[0].rsplit(":", 1)[1])
    return Env(gateway, dns, backend, clock, port)
