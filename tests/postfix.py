"""Private Postfix instances for end-to-end tests (Debian's postfix package).

Everything of an instance lives in one temporary directory: configuration, queue, data
and its log (`maillog_file`, so no syslog daemon is needed). It runs in the foreground
(`postfix start-fg`) so the test owns its lifetime. Postfix's master must start as
root; the daemons then run as the `postfix` user, which is why the directory is made
reachable for it.

* `PostfixInstance`: the backend. Listens on a loopback high port, trusts loopback for
  XCLIENT, and delivers every recipient of example.com into one Maildir.
* `SendingPostfix`: a real sending MTA with its own queue, default concurrency and retry
  behaviour (timers shortened), delivering example.com by MX lookup. Postfix has no
  resolver setting, so its SMTP client runs chrooted in the queue directory (as Debian
  runs it by default) where a resolv.conf of its own names the test's DNS server.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.sending import SendingMTA, wait_listening

MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


def free_port() -> int:
    """A loopback port nothing listens on now, for an instance's smtpd."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """None when a private Postfix can run here, else why not."""
    if shutil.which("postfix") is None or not MASTER_CF.exists():
        return "postfix is not installed (make test installs it from Debian)"
    if os.geteuid() != 0:
        return "Postfix's master must be started as root"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no postfix user"
    return None


class PrivatePostfix:
    """What every private instance shares; subclasses say what it is for."""

    hostname = "postfix.test"
    chroot_smtp = False  # run the SMTP client in the queue directory (a resolv.conf of its own)

    def __init__(self, port: int, extra: dict[str, str] | None = None) -> None:
        self.port = port  # its smtpd, on 127.0.0.1
        self.root = Path(tempfile.mkdtemp(prefix="onajimi-postfix-"))
        self.root.chmod(0o755)
        self.conf = self.root / "conf"
        self.queue = self.root / "queue"
        self.mail = self.root / "mail"
        self.log = self.root / "maillog"
        self.extra = extra or {}
        self.process: subprocess.Popen | None = None

    def settings(self) -> dict[str, str]:
        user = pwd.getpwnam("postfix")
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "myhostname": self.hostname,
            "mydomain": self.hostname,
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "alias_maps": "",
            "alias_database": "",
            "maillog_file": "/dev/stdout",
            "virtual_uid_maps": f"static:{user.pw_uid}",
            "virtual_gid_maps": f"static:{user.pw_gid}",
        }

    def prepare(self) -> None:
        """Files the instance needs before it starts (beyond main.cf and master.cf)."""

    def _postconf(self, *args: str) -> None:
        subprocess.run(["postconf", "-c", str(self.conf), *args], check=True, capture_output=True)

    def start(self) -> PrivatePostfix:
        user = pwd.getpwnam("postfix")
        for directory in (self.conf, self.mail, self.queue, self.root / "data"):
            directory.mkdir(parents=True)
        os.chown(self.mail, user.pw_uid, user.pw_gid)
        os.chown(self.root / "data", user.pw_uid, user.pw_gid)
        shutil.copy(MASTER_CF, self.conf / "master.cf")
        settings = {**self.settings(), **self.extra}
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self._postconf("-F", "*/*/chroot = n")
        if self.chroot_smtp:
            self._postconf("-F", "smtp/unix/chroot = y")
        self._postconf("-M#", "smtp/inet")
        with (self.conf / "master.cf").open("a") as master:
            master.write(f"127.0.0.1:{self.port} inet n - n - - smtpd\n")
        self.prepare()
        check = subprocess.run(
            ["postfix", "-c", str(self.conf), "check"], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stdout}{check.stderr}")
        self._log_file = self.log.open("w")
        self.process = subprocess.Popen(
            ["postfix", "-c", str(self.conf), "start-fg"],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()
        return self

    def _wait_listening(self) -> None:
        wait_listening("postfix", self.port, self.process, lambda: self.log.read_text())

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True)
        if self.process is not None:
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self._log_file.close()
        shutil.rmtree(self.root, ignore_errors=True)


class PostfixInstance(PrivatePostfix):
    """The backend: trusts loopback for XCLIENT, delivers example.com to one Maildir."""

    hostname = "backend.test"

    def settings(self) -> dict[str, str]:
        return {
            **super().settings(),
            "mynetworks": "127.0.0.1/32",
            "smtpd_authorized_xclient_hosts": "127.0.0.1/32",
            "smtpd_authorized_xforward_hosts": "127.0.0.1/32",
            # Postfix 3.9's default: a client that pipelines where RFC 2920 forbids it
            # (after EHLO, DATA...) is cut off, so a gateway mistake fails the tests.
            "smtpd_forbid_unauth_pipelining": "yes",
            "virtual_mailbox_domains": "example.com",
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": "static:inbox/",
            "smtpd_recipient_restrictions": (
                "check_recipient_access inline:{ { nobody@example.com = REJECT No such user } },"
                " permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"
            ),
            # Mail for elsewhere.test is "outside": accepted only for the authenticated
            # (or mynetworks), then discarded, so nothing waits on DNS.
            "transport_maps": "inline:{ elsewhere.test=discard: }",
        }

    def messages(self) -> list[bytes]:
        new = self.mail / "inbox" / "new"
        return [f.read_bytes() for f in sorted(new.glob("*"))] if new.exists() else []

    def delivered(self, count: int = 1, timeout: float = 20.0) -> list[bytes]:
        """Delivered messages (Maildir files), waiting until `count` have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = self.messages()
            if len(files) >= count:
                return files
            time.sleep(0.1)
        raise AssertionError(f"{count} message(s) not delivered; log:\n{self.log.read_text()}")


class SaslPostfix(PostfixInstance):
    """The backend with SMTP AUTH (Cyrus SASL, a sasldb of its own): `users` may log in
    with PLAIN or LOGIN on its plain port, as a backend on a private network would."""

    realm = "backend.test"

    def __init__(self, port: int, users: dict[str, str], extra: dict[str, str] | None = None):
        super().__init__(port, extra)
        self.users = users
        # Debian's Postfix reads `<config_directory>/sasl/smtpd.conf` (it ignores
        # cyrus_sasl_config_path); the sasldb lives beside it.
        self.sasl = self.conf / "sasl"

    def settings(self) -> dict[str, str]:
        return {
            **super().settings(),
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "smtpd_sasl_local_domain": self.realm,
            "smtpd_sasl_security_options": "noanonymous",
        }

    def prepare(self) -> None:
        self.sasl.mkdir()
        database = self.root / "sasldb2"  # postfix's to read; nothing under conf may be
        (self.sasl / "smtpd.conf").write_text(
            "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
            f"mech_list: PLAIN LOGIN\nsasldb_path: {database}\n"
        )
        for user, password in self.users.items():
            subprocess.run(
                ["saslpasswd2", "-f", str(database), "-c", "-p", "-u", self.realm, user],
                input=password.encode(),
                check=True,
                capture_output=True,
            )
        postfix = pwd.getpwnam("postfix")
        os.chown(database, postfix.pw_uid, postfix.pw_gid)


@dataclass
class Delivery:
    """What a sending Postfix's log says about one queued message."""

    queue_id: str
    deferred: list[str]  # the reply of each deferred attempt (one line per MX tried)
    sent: bool
    delay: float | None  # seconds from queueing to delivery, as Postfix counts (delay=)


_STATUS = re.compile(
    r"postfix/smtp\[\d+\]: (?P<qid>[0-9A-F]+): to=<[^>]*>, relay=(?P<relay>\S+), .*?"
    r"delay=(?P<delay>[\d.]+), .*?status=(?P<status>\w+) \((?P<text>.*)\)$"
)


class SendingPostfix(PrivatePostfix, SendingMTA):
    """A real sending MTA: queue, parallel sessions, MX fallback, retries on its own timer.

    `source` is the 127.x address its SMTP client binds (its PTR name is the test's);
    mail for example.com goes by MX lookup to `gateway_port` on each MX host.
    """

    chroot_smtp = True

    def __init__(
        self,
        port: int,
        *,
        source: str,
        hostname: str,
        nameserver: str,
        gateway_port: int,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(port, extra)
        self.source = source
        self.hostname = hostname
        self.nameserver = nameserver
        self.gateway_port = gateway_port

    def settings(self) -> dict[str, str]:
        return {
            **super().settings(),
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relay_domains": "",
            "smtp_bind_address": self.source,
            "smtp_tls_security_level": "none",
            # smtp:DOMAIN:PORT is an MX lookup of DOMAIN, each MX host on PORT.
            "transport_maps": f"inline:{{ example.com=smtp:example.com:{self.gateway_port} }}",
            # Postfix's retry behaviour, on a test's time scale (defaults: 300s, 4000s, 300s).
            "minimal_backoff_time": "15s",
            "maximal_backoff_time": "30s",
            "queue_run_delay": "1s",
            "smtp_connect_timeout": "5s",
            "bounce_queue_lifetime": "0",
        }

    def prepare(self) -> None:
        etc = self.queue / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text(f"nameserver {self.nameserver}\noptions attempts:2\n")
        for name in ("hosts", "services", "nsswitch.conf", "localtime"):
            with contextlib.suppress(OSError):
                shutil.copy(Path("/etc") / name, etc / name)

    def deliveries(self) -> dict[str, Delivery]:
        """Per queue id: each deferral, and whether (and after how long) it was sent."""
        found: dict[str, Delivery] = {}
        for line in self.log_text().splitlines():
            match = _STATUS.search(line)
            if match is None:
                continue
            entry = found.setdefault(match["qid"], Delivery(match["qid"], [], False, None))
            if match["status"] == "sent":
                entry.sent, entry.delay = True, float(match["delay"])
            else:
                entry.deferred.append(match["text"])
        return found

    def queued(self) -> int:
        """Messages still in its queue."""
        out = subprocess.run(
            ["postqueue", "-c", str(self.conf), "-j"], capture_output=True, text=True
        ).stdout
        return sum(1 for line in out.splitlines() if line.strip())
