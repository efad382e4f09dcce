"""docker/compose.yaml for real: images built, the stack up, mail from a client of its own.

No image registry is reachable, so every image is built from a Debian 12 base made here
(`.ci/docker-base-image`: debootstrap + docker import) through the compose file's own
BASE_IMAGE argument; Redis alone is replaced (tests/compose/override.yaml: Debian's
redis-server for the redis image). The gateway's pinned dependencies come from PyPI
through the host (its TLS is intercepted here; the containers do not trust that CA): they
are downloaded into .cache/compose-wheels and served to the build as a PyPI mirror, the
build argument an administrator's own mirror would use.

The client is a network namespace made by the test, with an address of its own
(10.231.0.2) behind a veth pair: to the host it is a remote sender, and its connection
reaches the published port by Docker's NAT, as a real one would. The host's own
connection to 127.0.0.1 goes through Docker's userland proxy and arrives as the bridge
address: that is what the gateway must notice and say.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import smtplib
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from tests.conftest import REPO

DOCKER = REPO / "docker"
T = TypeVar("T")
BASE_IMAGE = "onajimi-test-base:bookworm"
PROJECT = "onajimitest"
SMTP_PORT = 2625  # the host's port for the gateway (25 is the test suite's own)
NAMESPACE = "onajimi-client"
HOST_SIDE, CLIENT_SIDE = "10.231.0.1", "10.231.0.2"
WHEELS = REPO / ".cache" / "compose-wheels"
BUILD_TIMEOUT = 900

pytestmark = [pytest.mark.timeout(BUILD_TIMEOUT + 300)]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (dockerd, network namespaces)"
    for tool in ("docker", "docker-compose", "dockerd", "debootstrap", "ip"):
        if shutil.which(tool) is None:
            return (
                f"{tool} not installed (make test installs docker.io, docker-compose, debootstrap)"
            )
    return None


def run(*args: str, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {result.returncode}\n{result.stderr[-3000:]}")
    return result


@dataclass
class Stack:
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 120, check: bool = True):
        files = [
            "-f",
            str(DOCKER / "compose.yaml"),
            "-f",
            str(REPO / "tests/compose/override.yaml"),
        ]
        return run("docker-compose", "-p", PROJECT, *files, *args, timeout=timeout, check=check,
                   env=self.env)  # fmt: skip

    def logs(self, service: str = "gateway") -> str:
        return self.compose("logs", "--no-color", service).stdout

    def wait_for_log(self, text: str, timeout: float = 30) -> str:
        return until(self.logs, lambda logs: text in logs, timeout)


def until(probe: Callable[[], T], done: Callable[[T], object], timeout: float) -> T:
    """Call `probe` until `done` says its answer will do, or `timeout` seconds have
    passed; the last answer either way (the caller's assertion says what was wanted)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(1)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


def _download_wheels() -> None:
    """The image's pinned dependencies, by the host (which trusts the intercepting CA)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    run(sys.executable, "-m", "pip", "download", "--quiet", "--isolated", "--cert",
        "/etc/ssl/certs/ca-certificates.crt", "--require-hashes", "-r",
        str(DOCKER / "requirements.lock"), "-d", str(WHEELS), timeout=600)  # fmt: skip


def _bridge_gateway() -> str:
    """The host's address on Docker's default bridge, where builds reach the mirror."""
    shown = run("ip", "-4", "-o", "addr", "show", "dev", "docker0").stdout.split()
    return shown[shown.index("inet") + 1].split("/")[0]


def _build(stack: Stack) -> None:
    _download_wheels()
    handler = functools.partial(_Quiet, directory=str(WHEELS))
    mirror = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    threading.Thread(target=mirror.serve_forever, daemon=True).start()
    host = _bridge_gateway()
    try:
        stack.compose(
            "build", "--build-arg", f"PIP_FIND_LINKS=http://{host}:{mirror.server_port}/",
            "--build-arg", "PIP_NO_INDEX=1", "--build-arg", f"PIP_TRUSTED_HOST={host}",
            "gateway", "postfix", "redis", "prometheus", timeout=BUILD_TIMEOUT,
        )  # fmt: skip
    finally:
        mirror.shutdown()


def _client_namespace() -> None:
    """A host of its own: 10.231.0.2 in a namespace, behind a veth pair to the host."""
    run("ip", "netns", "delete", NAMESPACE, check=False)
    run("ip", "link", "delete", "onj-host", check=False)
    run("ip", "netns", "add", NAMESPACE)
    run("ip", "link", "add", "onj-host", "type", "veth", "peer", "name", "onj-client")
    run("ip", "link", "set", "onj-client", "netns", NAMESPACE)
    run("ip", "addr", "add", f"{HOST_SIDE}/30", "dev", "onj-host")
    run("ip", "link", "set", "onj-host", "up")
    inside = ("ip", "netns", "exec", NAMESPACE)
    run(*inside, "ip", "addr", "add", f"{CLIENT_SIDE}/30", "dev", "onj-client")
    run(*inside, "ip", "link", "set", "onj-client", "up")
    run(*inside, "ip", "link", "set", "lo", "up")
    run(*inside, "ip", "route", "add", "default", "via", HOST_SIDE)


def _remove_namespace() -> None:
    run("ip", "netns", "delete", NAMESPACE, check=False)
    run("ip", "link", "delete", "onj-host", check=False)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    why = _missing()
    if why is not None:
        pytest.skip(why)
    run(str(REPO / ".ci/docker-base-image"), BASE_IMAGE, timeout=600)
    env = {**os.environ, "ONAJIMI_BASE_IMAGE": BASE_IMAGE, "ONAJIMI_SMTP_PORT": str(SMTP_PORT)}
    stack = Stack(env)
    stack.compose("down", "-v", "--remove-orphans", check=False)
    _build(stack)
    _client_namespace()
    try:
        # depends_on waits for healthy postfix and redis before the gateway starts.
        stack.compose("up", "-d", "gateway", "prometheus", timeout=300)
        stack.wait_for_log("onajimi listening on", timeout=60)
        yield stack
    finally:
        if os.environ.get("ONAJIMI_KEEP_STACK") is None:
            stack.compose("down", "-v", "--remove-orphans", timeout=120, check=False)
        _remove_namespace()


SEND = """
import json, smtplib, sys
host, port, sender, rcpts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
replies = []
try:
    smtp = smtplib.SMTP(host, port, timeout=30)
except smtplib.SMTPConnectError as refused:  # 421 or 554 at the greeting
    print(json.dumps([[refused.smtp_code, refused.smtp_error.decode()]]))
    sys.exit(0)
with smtp:
    smtp.ehlo("client.sender.test")
    replies.append(smtp.docmd("MAIL", f"FROM:<{sender}>"))
    accepted = 0
    for rcpt in rcpts:
        replies.append(smtp.docmd("RCPT", f"TO:<{rcpt}>"))
        accepted += replies[-1][0] == 250
    if accepted:
        body = "Subject: compose test\\r\\n\\r\\n" + "A line of a real-sized message.\\r\\n" * 3000
        replies.append(smtp.data(body))
print(json.dumps([[code, text.decode()] for code, text in replies]))
"""


def send(*rcpts: str, sender: str = "alice@sender.test", namespace: bool = True,
         host: str = HOST_SIDE, check: bool = True) -> list[tuple[int, str]]:  # fmt: skip
    """One session: MAIL, each RCPT, DATA of ~100 KB when any was accepted; the replies.
    Run by the namespace's client (its own address) or by the host itself."""
    inside = ("ip", "netns", "exec", NAMESPACE) if namespace else ()
    result = run(*inside, sys.executable, "-c", SEND, host, str(SMTP_PORT), sender, *rcpts,
                 timeout=90, check=check)  # fmt: skip
    if result.returncode != 0:  # check=False: not listening (yet), say so with no replies
        return []
    return [(code, text) for code, text in json.loads(result.stdout)]


def delivered(stack: Stack, mailbox: str = "bob") -> int:
    maildir = f"/var/mail/vhosts/example.com/{mailbox}/new"
    listing = stack.compose("exec", "-T", "postfix", "sh", "-c", f"ls {maildir} 2>&- | wc -l")
    return int(listing.stdout.strip() or 0)


def test_a_remote_sender_is_seen_as_itself_and_deferred(stack: Stack) -> None:
    """Docker's NAT keeps the client's address: the gateway judges 10.231.0.2, not a bridge."""
    replies = send("bob@example.com")
    assert replies[0][0] == 250
    assert replies[1][0] == 450, replies  # no PTR name: a suspect, deferred on first contact
    logs = stack.wait_for_log(f"client={CLIENT_SIDE}")
    assert f"client={CLIENT_SIDE}" in logs
    assert delivered(stack) == 0


def test_relaying_is_refused_before_any_deferral(stack: Stack) -> None:
    replies = send("victim@elsewhere.example")
    assert replies[1][0] == 554 or 500 <= replies[1][0] < 600, replies


def test_an_allow_entry_made_with_docker_exec_reaches_the_running_gateway(stack: Stack) -> None:
    """`onajimi allow add` in the container reads ONAJIMI_CONFIG, so it writes to the Redis
    the gateway uses (not a SQLite file of its own); the entry lets the client's mail in,
    through to the real Postfix behind, which knows its users."""
    added = stack.compose("exec", "-T", "gateway", "onajimi", "allow", "add", CLIENT_SIDE)
    assert added.returncode == 0
    replies = until(lambda: send("bob@example.com", "nobody@example.com"),
                    lambda replies: replies[1][0] == 250, timeout=30)  # fmt: skip
    assert replies[1][0] == 250, replies
    assert replies[2][0] == 550 and "5.1.1" in replies[2][1], replies  # a real mailbox map
    assert replies[-1][0] == 250, replies  # DATA: the backend said 250
    assert until(lambda: delivered(stack), lambda count: count > 0, timeout=30) == 1


def test_the_gateway_runs_hardened(stack: Stack) -> None:
    container = stack.compose("ps", "-q", "gateway").stdout.strip()
    config = json.loads(run("docker", "inspect", container).stdout)[0]
    assert config["HostConfig"]["ReadonlyRootfs"] is True
    assert config["HostConfig"]["CapDrop"] == ["ALL"] or "ALL" in config["HostConfig"]["CapDrop"]
    assert "no-new-privileges:true" in config["HostConfig"]["SecurityOpt"]
    assert config["HostConfig"]["LogConfig"]["Config"] == {"max-file": "5", "max-size": "10m"}
    assert config["Config"]["User"] == "onajimi"
    mounts = {m["Destination"]: m for m in config["Mounts"]}
    assert mounts["/etc/onajimi"]["RW"] is False
    # Healthy: its /healthz answered (the store is up).
    health = until(lambda: json.loads(run("docker", "inspect", container).stdout)[0]["State"],
                   lambda state: state["Health"]["Status"] == "healthy", timeout=90)  # fmt: skip
    assert health["Health"]["Status"] == "healthy"


def test_sighup_reloads_the_mounted_configuration(stack: Stack) -> None:
    stack.compose("kill", "-s", "HUP", "gateway")
    logs = stack.wait_for_log("configuration reloaded from /etc/onajimi/gateway.toml")
    assert "configuration reloaded from /etc/onajimi/gateway.toml" in logs
    assert send("bob@example.com")[0][0] == 250  # still serving


def test_the_host_own_connections_arrive_as_the_bridge_and_are_called_out(stack: Stack) -> None:
    """127.0.0.1 of the host goes through Docker's userland proxy: the gateway sees the
    bridge address (172.28.0.1), and says so once it is most of what it sees. (Sessions
    without a transaction: sixty deferred retries would box the bridge as impatient.)"""
    for _ in range(60):  # the watch speaks at 50 of the last 200 (smtp/masquerade.py)
        with smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=30) as smtp:
            smtp.ehlo("host.itself.test")
    said = "connections came from 172.28.0.1, this host's default gateway"
    assert said in stack.wait_for_log(said, timeout=10)


def test_metrics_reach_prometheus_with_the_alert_rules(stack: Stack) -> None:
    metrics = stack.compose("exec", "-T", "gateway", "python3", "-c",
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:9125/metrics', timeout=10).read().decode())")  # fmt: skip
    assert 'onajimi_decisions_total{action="defer"' in metrics.stdout
    assert "onajimi_store_up 1.0" in metrics.stdout
    up = until(lambda: prometheus("query", query='up{job="onajimi"}')["result"],
               lambda result: result and result[0]["value"][1] == "1", timeout=60)  # fmt: skip
    assert up and up[0]["value"][1] == "1", up
    deferred = prometheus("query", query='sum(onajimi_decisions_total{action="defer"})')
    assert float(deferred["result"][0]["value"][1]) >= 1
    rules = prometheus("rules")["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} >= {
        "OnajimiStoreDown", "OnajimiBackendErrors", "OnajimiPenaltySurge"}  # fmt: skip


def prometheus(path: str, **params: str) -> dict:
    """Prometheus's API on the host (127.0.0.1:9090, as compose publishes it)."""
    url = f"http://127.0.0.1:9090/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())["data"]


XCLIENT = """
import smtplib
with smtplib.SMTP("postfix", 10025, timeout=30) as smtp:
    smtp.ehlo("probe.test")
    code, text = smtp.docmd("XCLIENT", "ADDR=127.0.0.1 NAME=localhost")
    print(code, text.decode())
    if code == 220:
        smtp.ehlo("probe.test")
        smtp.docmd("MAIL", "FROM:<a@sender.test>")
        code, text = smtp.docmd("RCPT", "TO:<victim@elsewhere.example>")
        print(code, text.decode())
"""


def test_the_backend_cannot_be_made_to_relay_through_xclient(stack: Stack) -> None:
    """The gateway's fixed address may say XCLIENT, and even as 127.0.0.1 relays nothing;
    any other container on the network may not say it at all."""
    trusted = stack.compose("exec", "-T", "gateway", "python3", "-c", XCLIENT).stdout
    assert trusted.splitlines()[0].startswith("220")
    assert trusted.splitlines()[1].startswith("554") and "Relay access denied" in trusted
    other = run("docker", "run", "--rm", "--network", f"{PROJECT}_mail", "--entrypoint",
                "python3", "onajimi:latest", "-c", XCLIENT).stdout  # fmt: skip
    assert other.startswith("550") and "insufficient authorization" in other


def from_host() -> list[tuple[int, str]]:
    """A session from the host itself (seen as the bridge), [] while nothing listens."""
    return send("bob@example.com", namespace=False, host="127.0.0.1", check=False)


def test_without_redis_the_gateway_serves_451_and_recovers(stack: Stack) -> None:
    """Redis stopped: 451 per store.on_error. The gateway restarted while Redis is down
    still opens port 25 (and says so); Redis back, the normal answers come back."""
    stack.compose("stop", "redis")
    try:
        assert from_host()[1][0] == 451
        stack.compose("restart", "gateway", timeout=120)
        logs = stack.wait_for_log("starting without it", timeout=60)
        assert "starting without it" in logs
        # Listening again, still without its store.
        replies = until(from_host, lambda replies: len(replies) > 1, timeout=60)
        assert replies[1][0] == 451 and "4.3.0" in replies[1][1], replies
    finally:
        stack.compose("start", "redis")
    replies = until(from_host, lambda replies: len(replies) > 1 and replies[1][0] != 451, 90)
    assert replies[1][0] == 450, replies  # judged again: the bridge is deferred, not boxed
