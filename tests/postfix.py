"""A private Postfix instance for end-to-end tests (Debian's postfix package).

Everything lives in one temporary directory: configuration, queue, data, the log
(`maillog_file`, so no syslog daemon is needed) and delivered mail (virtual delivery of
every recipient of example.com into one Maildir). It listens on a loopback high port,
trusts loopback for XCLIENT, and runs in the foreground (`postfix start-fg`) so the
test owns its lifetime. Postfix's master must start as root; the daemons then run as the
`postfix` user, which is why the directory is made reachable for it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

MASTER_CF = Path("/usr/share/postfix/master.cf.dist")


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


class PostfixInstance:
    def __init__(self, port: int, extra: dict[str, str] | None = None) -> None:
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="onajimi-postfix-"))
        self.root.chmod(0o755)
        self.conf = self.root / "conf"
        self.mail = self.root / "mail"
        self.log = self.root / "maillog"
        self.extra = extra or {}
        self.process: subprocess.Popen | None = None

    def _postconf(self, *args: str) -> None:
        subprocess.run(["postconf", "-c", str(self.conf), *args], check=True, capture_output=True)

    def start(self) -> PostfixInstance:
        user = pwd.getpwnam("postfix")
        for directory in (self.conf, self.mail, self.root / "queue", self.root / "data"):
            directory.mkdir(parents=True)
        os.chown(self.mail, user.pw_uid, user.pw_gid)
        os.chown(self.root / "data", user.pw_uid, user.pw_gid)
        shutil.copy(MASTER_CF, self.conf / "master.cf")
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.root / "queue"),
            "data_directory": str(self.root / "data"),
            "mail_owner": "postfix",
            "myhostname": "backend.test",
            "mydomain": "backend.test",
            "mydestination": "",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.1/32",
            "smtpd_authorized_xclient_hosts": "127.0.0.1/32",
            "virtual_mailbox_domains": "example.com",
            "virtual_mailbox_base": str(self.mail),
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": f"static:{user.pw_uid}",
            "virtual_gid_maps": f"static:{user.pw_gid}",
            "alias_maps": "",
            "alias_database": "",
            "maillog_file": "/dev/stdout",
            "smtpd_recipient_restrictions": (
                "check_recipient_access inline:{ { nobody@example.com = REJECT No such user } },"
                " permit_mynetworks, reject_unauth_destination"
            ),
            **self.extra,
        }
        (self.conf / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self._postconf("-F", "*/*/chroot = n")
        self._postconf("-M#", "smtp/inet")
        with (self.conf / "master.cf").open("a") as master:
            master.write(f"127.0.0.1:{self.port} inet n - n - - smtpd\n")
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

    def _wait_listening(self, timeout: float = 20.0) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postfix exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"220"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"postfix did not start listening: {self.log.read_text()}")

    def delivered(self, count: int = 1, timeout: float = 20.0) -> list[bytes]:
        """Delivered messages (Maildir files), waiting until `count` have arrived."""
        new = self.mail / "inbox" / "new"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = sorted(new.glob("*")) if new.exists() else []
            if len(files) >= count:
                return [f.read_bytes() for f in files]
            time.sleep(0.1)
        raise AssertionError(f"{count} message(s) not delivered; log:\n{self.log.read_text()}")

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
