"""A small authoritative DNS server on a loopback port, for tests and the benchmark.

It speaks real DNS over real UDP and TCP sockets (dnspython builds the messages), runs in
a background thread so synchronous CLI tests can use it too, and can misbehave on
purpose per name: SERVFAIL, silence (timeouts), delays, truncation (forcing TCP).

    with DnsServer() as dns:
        dns.add_host("mail.example.org", "192.0.2.25")   # A + PTR
        dns.add_ptr("192.0.2.9", "p1234.dyn.example.net")  # PTR only
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import socket
import struct
import threading
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset


class DnsServer:
    def __init__(
        self, host: str = "127.0.0.1", ttl: int = 300, negative_ttl: int = 30, port: int = 0
    ) -> None:
        self.host = host
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.records: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        self.servfail: set[str] = set()
        self.drop: set[str] = set()
        self.drop_types: set[tuple[str, str]] = set()  # (name with final dot, type): silence
        self.truncate: set[str] = set()
        self.delay: dict[str, float] = {}
        self.queries: collections.Counter[tuple[str, str]] = collections.Counter()
        self.tcp_queries = 0
        # Optional: answers computed from the question, for zones too big to list
        # (the benchmark's thousands of client addresses). (name, type) -> values or None.
        self.synthesize = None
        self._lock = threading.Lock()
        self._udp, self._tcp = self._bind(host, port)
        self.port = self._udp.getsockname()[1]
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    @staticmethod
    def _bind(host: str, port: int) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP on one port; a random UDP port may be taken for TCP: try another."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((host, port))
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((host, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                if port:
                    raise
                continue
            tcp.listen(16)
            return udp, tcp
        raise OSError("no port free for both UDP and TCP")

    # -- zone data ------------------------------------------------------------------------
    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".") + "."

    def add(self, name: str, rdtype: str, value: str) -> None:
        with self._lock:
            self.records[(self._key(name), rdtype)].append(value)

    def replace(self, name: str, rdtype: str, *values: str) -> None:
        """The records of one name and type, instead of those it had."""
        with self._lock:
            self.records[(self._key(name), rdtype)] = list(values)

    def add_ptr(self, address: str, *names: str) -> None:
        reverse = dns.reversename.from_address(address).to_text()
        for name in names:
            self.add(reverse, "PTR", self._key(name))

    def add_host(self, name: str, *addresses: str, ptr: bool = True) -> None:
        """A/AAAA records for `name`, and (by default) PTR records pointing back."""
        for address in addresses:
            version = ipaddress.ip_address(address).version
            self.add(name, "A" if version == 4 else "AAAA", address)
            if ptr:
                self.add_ptr(address, name)

    def reverse_name(self, address: str) -> str:
        return dns.reversename.from_address(address).to_text().lower()

    def query_count(self, name: str, rdtype: str) -> int:
        with self._lock:
            return self.queries[(self._key(name), rdtype)]

    # -- serving --------------------------------------------------------------------------
    def _answer(self, wire: bytes, over_tcp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        question = query.question[0]
        owner = question.name
        # The labels' own bytes, not to_text()'s escapes: an SPF macro may expand to a name
        # with spaces or percents in it, and the records are keyed by the plain text.
        name = ".".join(label.decode("latin-1") for label in owner.labels if label).lower() + "."
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries[(name, rdtype)] += 1
            if over_tcp:
                self.tcp_queries += 1
            drop = name in self.drop or (name, rdtype) in self.drop_types
            servfail = name in self.servfail
            truncate = name in self.truncate and not over_tcp
            delay = self.delay.get(name, 0.0)
            values = list(self.records.get((name, rdtype), ()))
            if not values and self.synthesize is not None:
                values = list(self.synthesize(name, rdtype) or ())
            cname = self.records.get((name, "CNAME"), [None])[0] if rdtype != "CNAME" else None
            target_values = list(self.records.get((cname, rdtype), ())) if cname else []
            exists = bool(values) or any(n == name for n, _ in self.records)
        if drop:
            return None
        if delay:
            time.sleep(delay)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif truncate:
            response.flags |= dns.flags.TC
        elif values:
            rrset = dns.rrset.from_text_list(owner, self.ttl, "IN", rdtype, values)
            response.answer.append(rrset)
        elif cname:  # e.g. RFC 2317 classless reverse delegation
            response.answer.append(dns.rrset.from_text(owner, self.ttl, "IN", "CNAME", cname))
            if target_values:
                response.answer.append(
                    dns.rrset.from_text_list(cname, self.ttl, "IN", rdtype, target_values)
                )
        else:
            if not exists:
                response.set_rcode(dns.rcode.NXDOMAIN)
            soa = dns.rrset.from_text(
                owner,
                self.negative_ttl,
                "IN",
                "SOA",
                f"ns.test. hostmaster.test. 1 3600 600 86400 {self.negative_ttl}",
            )
            response.authority.append(soa)
        return response.to_wire()

    def _serve_udp(self) -> None:
        while not self._stopping:
            try:
                wire, peer = self._udp.recvfrom(4096)
            except OSError:
                return
            reply = self._answer(wire, over_tcp=False)
            if reply is not None:
                with contextlib.suppress(OSError):
                    self._udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            with conn:
                try:
                    (length,) = struct.unpack("!H", conn.recv(2))
                    wire = b""
                    while len(wire) < length:
                        chunk = conn.recv(length - len(wire))
                        if not chunk:
                            break
                        wire += chunk
                    reply = self._answer(wire, over_tcp=True)
                    if reply is not None:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                except (OSError, struct.error):
                    continue

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> DnsServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        for sock in (self._udp, self._tcp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """The nameserver as a `dns.nameservers` entry: "IP:PORT"."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
