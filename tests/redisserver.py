"""A private redis-server on a loopback port (Debian's redis-server package), and a
private Redis Cluster of three of them.

No persistence, no daemonising: the test owns the processes, and can SIGSTOP one to
simulate a hung Redis or kill it to simulate a dead one.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(
        self,
        port: int | None = None,
        *extra: str,
        config: Path | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """`tls`: (certificate, key) to serve TLS only, on `port`; the certificate is
        the CA too (self-signed), and clients need none of their own."""
        self.port = port or free_port()
        self.extra = extra
        self.config = config  # first on the command line: Sentinel needs a writable file
        self.tls = tls
        self.process: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def _ports(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        cert, key = self.tls
        files = ["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert]
        return ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no", *files]

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server",
                *([str(self.config)] if self.config else []),
                *self._ports(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING", timeout=0.5).startswith(b"+PONG"):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    @contextlib.contextmanager
    def _connection(self, timeout: float) -> Iterator[socket.socket]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            if self.tls is None:
                yield s
                return
            context = ssl.create_default_context(cafile=self.tls[0])
            context.check_hostname = False  # the certificate names localhost
            with context.wrap_socket(s) as wrapped:
                yield wrapped

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str, timeout: float = 2) -> bytes:
        with self._connection(timeout) as s:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            s.sendall(payload.encode())
            return s.recv(65536)

    def keys(self, pattern: str) -> list[str]:
        import redis

        with redis.Redis(port=self.port, decode_responses=True) as client:
            return list(client.scan_iter(match=pattern))

    def flush(self) -> None:
        self.command("FLUSHALL")

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(10)
            self.process = None


HASH_SLOTS = 16384


class RedisCluster:
    """Three masters with `cluster-enabled yes`, no replicas, slots split in three.

    Built by hand (CLUSTER ADDSLOTS, CLUSTER MEET) rather than with `redis-cli --cluster
    create`, which sleeps a second per check: the start is then bound by the masters'
    own two-second wait before a (re)started master calls the cluster state ok.
    Each node's cluster bus gets a port of its own: the default, port + 10000, is not
    free (or not even a port) for every port the kernel hands out. A node keeps its
    nodes.conf in a private directory, so a killed node restarts with its identity and
    its slots, as after a reboot.
    """

    def __init__(self, size: int = 3, *extra: str, tls: bool = False) -> None:
        """`tls`: clients and the cluster bus speak TLS only, with a self-signed
        certificate (`certificate`) made here."""
        self.directory = Path(tempfile.mkdtemp(prefix="onajimi-cluster-"))
        self.nodes: list[RedisServer] = []
        self.buses: list[int] = []
        self.extra = (*extra, "--tls-cluster", "yes") if tls else extra
        self.certificate = ""
        pair = None
        if tls:
            from tests.tls import make_certificate

            pair = make_certificate(self.directory, "localhost")
            self.certificate = pair[0]
        for n in range(size):
            bus = free_port()
            (self.directory / str(n)).mkdir()
            self.buses.append(bus)
            self.nodes.append(RedisServer(None, *self._options(n, bus), tls=pair))

    def _options(self, n: int, bus: int) -> tuple[str, ...]:
        return (
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(bus),
            "--cluster-config-file",
            "nodes.conf",
            "--dir",
            str(self.directory / str(n)),
            "--cluster-node-timeout",
            "1000",
            *self.extra,
        )

    def start(self, timeout: float = 20) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            share = HASH_SLOTS // len(self.nodes)
            for n, node in enumerate(self.nodes):
                last = HASH_SLOTS if n == len(self.nodes) - 1 else (n + 1) * share
                node.command("CLUSTER", "ADDSLOTS", *map(str, range(n * share, last)))
            first = self.nodes[0]
            for node in self.nodes[1:]:
                node.command("CLUSTER", "MEET", "127.0.0.1", str(first.port), str(self.buses[0]))
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 20) -> None:
        """Until every running node says the cluster is ok (all slots served)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [node for node in self.nodes if node.process is not None]
            if all(b"cluster_state:ok" in node.command("CLUSTER", "INFO") for node in running):
                return
            time.sleep(0.02)
        raise RuntimeError(f"the Redis Cluster on {self.seeds} did not come up")

    @property
    def seeds(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def url(self) -> str:
        if not self.certificate:
            return f"redis+cluster://{self.seeds}/"
        # The certificate is checked against itself as the CA; it names localhost, and
        # the cluster gives its nodes' addresses: no host name to check.
        return (
            f"rediss+cluster://{self.seeds}/?ssl_ca_certs={self.certificate}"
            "&ssl_check_hostname=false"
        )

    def restart(self, n: int) -> None:
        """Stop node `n` and start it again on the same ports, with its nodes.conf."""
        node = self.nodes[n]
        node.stop()
        node.start()

    def flush(self) -> None:
        for node in self.nodes:
            node.command("FLUSHALL")

    def node_of(self, key: str) -> int:
        """The index of the node that serves `key` (the slots as `start` split them)."""
        from redis.crc import key_slot

        share = HASH_SLOTS // len(self.nodes)
        return min(key_slot(key.encode()) // share, len(self.nodes) - 1)

    def calls(self, command: str) -> int:
        """How many times the nodes ran `command` since the last `reset_stats`."""
        total = 0
        for node in self.nodes:
            for line in node.command("INFO", "commandstats").decode().splitlines():
                if line.startswith(f"cmdstat_{command.lower()}:calls="):
                    total += int(line.split("calls=", 1)[1].split(",", 1)[0])
        return total

    def errors(self) -> dict[str, int]:
        """Error replies every node has sent since the last `reset_stats`, by error code
        (`INFO errorstats`: CROSSSLOT, MOVED, NOSCRIPT, ...), added up."""
        counts: dict[str, int] = {}
        for node in self.nodes:
            for line in node.command("INFO", "errorstats").decode().splitlines():
                if line.startswith("errorstat_"):
                    name, _, rest = line[len("errorstat_") :].partition(":count=")
                    counts[name] = counts.get(name, 0) + int(rest)
        return counts

    def reset_stats(self) -> None:
        for node in self.nodes:
            node.command("CONFIG", "RESETSTAT")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
