"""Who the client is, from a trusted balancer's PROXY header (v1 or v2).

aiosmtpd parses the header; what it means is decided here:

* PROXY over TCP/IPv4 or IPv6: the header's source is the client, its destination the
  address the client reached (one of our MX addresses, behind the balancer).
* v2 LOCAL, v2 UNSPEC, v1 UNKNOWN: the balancer speaks for itself (a health check): the
  client is the balancer's own address.
* AF_UNIX sources, and v2 TLVs whose declared length runs past the header: no address
  anyone could judge a client by; the connection is refused.
"""

from __future__ import annotations

from typing import Any

from aiosmtpd.proxy_protocol import AF, V2_CMD, MalformedTLV, ProxyTLV

from gateway.policy.net import IPAddress, client_address
from gateway.policy.values import value


@value
class ProxiedClient:
    address: IPAddress | None  # None: refused, see `refusal`
    port: int | None = None
    destination: str = ""  # "IP:PORT" the client reached ("" when the header does not say)
    refusal: str = ""


def proxied_client(proxy_data: Any, balancer: IPAddress) -> ProxiedClient:
    """The client a trusted balancer's header names (see the module docstring)."""
    if proxy_data.version == 2:
        try:
            ProxyTLV.parse(proxy_data.rest or b"", partial_ok=False)
        except MalformedTLV:
            return ProxiedClient(None, refusal="a TLV runs past the end of the PROXY header")
        if proxy_data.command == V2_CMD.LOCAL:
            return ProxiedClient(balancer)
    if proxy_data.family == AF.UNIX:
        return ProxiedClient(None, refusal="the PROXY header names a UNIX socket, not a client")
    if proxy_data.family not in (AF.INET, AF.INET6) or proxy_data.src_addr is None:
        return ProxiedClient(balancer)  # UNSPEC / UNKNOWN
    return ProxiedClient(
        client_address(proxy_data.src_addr),
        proxy_data.src_port,
        f"{proxy_data.dst_addr}:{proxy_data.dst_port}",
    )
