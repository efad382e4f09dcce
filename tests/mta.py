"""Real sending MTAs besides Postfix, for end-to-end tests: Exim 4.96 and OpenSMTPD 6.8
(Debian bookworm's packages).

Both conflict with Postfix as Debian packages, so they are never installed: `make test`
unpacks them (.ci/unpack-debian-packages) into .cache/debian/<package>. An instance runs
in namespaces of its own (unshare, as root): in its mount namespace /etc/passwd and
/etc/group (the host's, plus the users the MTA was built for), /etc/resolv.conf (naming
the test's DNS server), /etc/ld.so.cache (finding the unpacked libraries) and /var are
its own, where the MTA's compiled-in spool, chroot and socket paths lead; in its PID
namespace a shell is the first process, so killing that shell kills every process the
MTA started. Everything else of an instance lives in one temporary directory.

Like `SendingPostfix`, each delivers example.com by MX lookup from a given 127.x source
address under a given HELO name, and is fed through its own smtpd on 127.0.0.1:

    exim = SendingExim(source="127.0.0.27", hostname="mta7.sender.test",
                       nameserver=dns53.host).start()
    exim.submit([("sender@sender.test", ["bob@example.com"], raw)])
    exim.wait_until_empty(60); exim.deliveries(); exim.stop()
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.postfix import Delivery, free_port
from tests.sending import SendingMTA, wait_listening

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "debian"
_DURATION = re.compile(r"(\d+)([wdhms])")
_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def seconds(text: str) -> float:
    """'1m5s' (as Exim's QT= and OpenSMTPD's delay= say it) in seconds."""
    return float(sum(int(n) * _SECONDS[unit] for n, unit in _DURATION.findall(text)))


def _free_ids(count: int) -> list[int]:
    """System ids that no user and no group of the host has (the MTA's private users)."""
    taken = set()
    for table in ("/etc/passwd", "/etc/group"):
        for line in Path(table).read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                taken.add(int(fields[2]))
    return [n for n in range(999, 100, -1) if n not in taken][:count]


class NamespacedMTA(SendingMTA):
    """An MTA from unpacked packages, run in mount and PID namespaces of its own."""

    name = ""
    packages: tuple[str, ...] = ()  # under CACHE; the first holds the MTA itself
    users: tuple[str, ...] = ()  # the system users it was built for (user and group each)

    @classmethod
    def available(cls) -> str | None:
        """None when it can run here, else why not."""
        if os.geteuid() != 0:
            return f"{cls.name} runs in namespaces of its own: that needs root"
        if shutil.which("unshare") is None or shutil.which("ldconfig") is None:
            return "unshare and ldconfig are needed (util-linux, libc-bin)"
        missing = [p for p in cls.packages if not (CACHE / p / ".unpacked").exists()]
        if missing:
            return f"{' '.join(missing)} not unpacked (make test runs .ci/unpack-debian-packages)"
        return None

    def __init__(
        self,
        *,
        source: str,
        hostname: str,
        nameserver: str,
        gateway_port: int = 25,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.hostname = hostname
        self.nameserver = nameserver
        self.gateway_port = gateway_port
        self.extra = extra or {}
        self.port = free_port()  # its smtpd, on 127.0.0.1, where `submit` queues mail
        self.root = Path(tempfile.mkdtemp(prefix=f"onajimi-{self.name}-"))
        self.root.chmod(0o755)
        self.etc = self.root / "etc"
        self.var = self.root / "var"  # /var inside
        self.log = self.root / "log"
        self.process: subprocess.Popen | None = None
        self.ids: dict[str, int] = {}

    def program(self, path: str) -> str:
        return str(CACHE / self.packages[0] / path)

    # -- what each MTA says ---------------------------------------------------------------
    def prepare(self) -> None:
        """Its configuration, spool and log directories (users are in self.ids)."""
        raise NotImplementedError

    def command(self) -> list[str]:
        """The MTA in the foreground, as run inside the namespaces."""
        raise NotImplementedError

    # -- the namespaces -------------------------------------------------------------------
    def _private_files(self) -> None:
        for directory in (self.etc, self.var, self.log):
            directory.mkdir()
        self.ids = dict(zip(self.users, _free_ids(len(self.users)), strict=True))
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        for user, uid in self.ids.items():
            passwd += f"{user}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
            group += f"{user}:x:{uid}:\n"
        (self.etc / "passwd").write_text(passwd)
        (self.etc / "group").write_text(group)
        (self.etc / "resolv.conf").write_text(
            f"nameserver {self.nameserver}\noptions attempts:2 timeout:2\n"
        )
        # The unpacked libraries, found as installed ones are (LD_LIBRARY_PATH would not
        # survive a setuid program re-executing itself, as Exim does for its queue runs).
        libraries = sorted(
            {str(p.parent) for d in self.packages for p in (CACHE / d).rglob("*.so*")}
        )
        (self.etc / "ld.so.conf").write_text(
            "".join(f"{d}\n" for d in libraries) + "include /etc/ld.so.conf.d/*.conf\n"
        )
        subprocess.run(
            [
                "ldconfig",
                "-X",
                "-C",
                str(self.etc / "ld.so.cache"),
                "-f",
                str(self.etc / "ld.so.conf"),
            ],
            check=True,
            capture_output=True,
        )

    def inside(self, *command: str, pid_namespace: bool = False) -> list[str]:
        """`command` run in a mount namespace of the instance's (PID namespace: a shell is
        its first process, the command its child)."""
        mounts = [
            (self.etc / name, f"/etc/{name}")
            for name in ("passwd", "group", "resolv.conf", "ld.so.cache")
        ]
        mounts.append((self.var, "/var"))
        script = "set -e\n" + "".join(f"mount --bind '{src}' '{dst}'\n" for src, dst in mounts)
        script += '"$@" &\nwait\n' if pid_namespace else 'exec "$@"\n'
        namespaces = ["--mount", "--propagation", "private"]
        if pid_namespace:
            # If unshare itself is killed, the shell is too (and so the namespace).
            namespaces += ["--pid", "--fork", "--kill-child", "--mount-proc"]
        return ["unshare", *namespaces, "sh", "-c", script, "sh", *command]

    def start(self) -> NamespacedMTA:
        self._private_files()
        self.prepare()
        self._output = (self.log / "stdout").open("w")
        self.process = subprocess.Popen(
            self.inside(*self.command(), pid_namespace=True),
            stdout=self._output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_listening(self.name, self.port, self.process, self.log_text)
        return self

    def stop(self) -> None:
        """Kill the namespace's first process: the kernel kills all the others with it."""
        if self.process is not None:
            if self.process.poll() is None:
                children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
                try:
                    first = int(children.read_text().split()[0])
                except (OSError, IndexError, ValueError):
                    self.process.kill()  # --kill-child takes the shell along
                else:
                    os.kill(first, signal.SIGKILL)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self._output.close()
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        return "".join(
            f.read_text(errors="replace") for f in sorted(self.log.glob("*")) if f.is_file()
        )


class SendingExim(NamespacedMTA):
    """Exim 4.96 (exim4-daemon-light): a foreground daemon with a queue runner every
    `queue_interval`; mail submitted waits in the queue for it (queue_only, as `-odq`),
    so a backlog is in the queue at once.

    Its configuration sits where the binary looks by default (/var/lib/exim4/
    config.autogenerated, in the private /var): with `-C` Exim would drop root for its
    queue runs. Deliveries run as the Debian-exim user it was built for (never root).
    `extra`: main options; `transport.NAME` sets an option of the smtp transport (e.g.
    `transport.max_parallel`), `retry` replaces the retry rule (shortened: every 15 s).
    """

    name = "exim"
    packages = ("exim4-daemon-light", "libidn12")
    users = ("Debian-exim",)
    queue_interval = "1s"

    def settings(self) -> dict[str, str]:
        return {
            "primary_hostname": self.hostname,
            "exim_path": self.program("usr/sbin/exim4"),
            "spool_directory": "/var/spool/exim4",
            "log_file_path": f"{self.log}/%slog",
            "pid_file_path": f"{self.root}/exim.pid",
            # Else an abstract socket, one per network namespace: two instances would clash.
            "notifier_socket": f"{self.root}/notifier",
            "daemon_smtp_ports": str(self.port),
            "local_interfaces": "127.0.0.1",
            "never_users": "root",
            "keep_environment": "",
            "queue_only": "true",
            "acl_smtp_rcpt": "submission",
            "tls_advertise_hosts": "",
            "host_lookup": "",
            "rfc1413_hosts": "",
            "log_selector": (
                "+queue_time +deliver_time +outgoing_interface +outgoing_port +pipelining"
                " +received_recipients -queue_run"
            ),
        }

    def configuration(self) -> str:
        main = {**self.settings(), **{k: v for k, v in self.extra.items() if "." not in k}}
        main.pop("retry", None)
        transport = {
            "driver": "smtp",
            "port": str(self.gateway_port),
            "interface": self.source,
            "helo_data": self.hostname,
            "hosts_avoid_tls": "*",  # the gateway runs without TLS in these tests
            **{k.split(".", 1)[1]: v for k, v in self.extra.items() if k.startswith("transport.")},
        }
        lines = [f"{k} = {v}" for k, v in main.items()]
        lines += ["", "begin acl", "submission:", "  accept hosts = 127.0.0.1", "  deny"]
        lines += ["", "begin routers", "gateways:", "  driver = dnslookup"]
        lines += ["  domains = example.com", "  transport = remote_smtp", "  no_more"]
        # Anything else (bounces to the test's senders) is dropped: nothing waits on it.
        lines += ["discard:", "  driver = redirect", "  data = :blackhole:"]
        lines += ["", "begin transports", "remote_smtp:"]
        lines += [f"  {k} = {v}" for k, v in transport.items()]
        lines += ["", "begin retry", f"*  *  {self.extra.get('retry', 'F,1h,15s')}", ""]
        return "\n".join(lines)

    def prepare(self) -> None:
        uid = self.ids["Debian-exim"]
        config = self.var / "lib" / "exim4" / "config.autogenerated"
        config.parent.mkdir(parents=True)
        config.write_text(self.configuration())
        spool = self.var / "spool" / "exim4"
        spool.mkdir(parents=True)
        for directory in (spool, self.log):
            os.chown(directory, uid, uid)

    def command(self) -> list[str]:
        return [self.program("usr/sbin/exim4"), "-bdf", f"-q{self.queue_interval}"]

    def queued(self) -> int:
        return sum(1 for _ in (self.var / "spool" / "exim4" / "input").rglob("*-H"))

    _LINE = re.compile(r"(?P<id>\w{6}-\w{6,11}-\w{2,4}) (?P<flag>=>|==|\*\*) (?P<rest>.*)$")
    _REPLY = re.compile(r"SMTP error from remote mail server after .*?: (?P<reply>\d{3}[ -].*)$")
    _ERROR = re.compile(r" DT=\w+: (?P<error>.*)$")

    def deliveries(self) -> dict[str, Delivery]:
        """Per message id: the reply of each deferred attempt (the last MX's, as Postfix
        logs it; not the queue runs that pass it over before its retry time), and whether
        (and how long after it was queued: QT=) it was sent."""
        found: dict[str, Delivery] = {}
        for line in self.log_text().splitlines():
            match = self._LINE.search(line)
            if match is None or re.search(r"retry time not (yet )?reached| R=discard", line):
                continue  # a queue run passing it over; a bounce dropped
            entry = found.setdefault(match["id"], Delivery(match["id"], [], False, None))
            if match["flag"] == "=>":
                queued_for = re.search(r" QT=(\S+)", line)
                entry.sent, entry.delay = True, seconds(queued_for[1]) if queued_for else None
            else:
                reply = self._REPLY.search(line) or self._ERROR.search(line)
                text = reply[1] if reply else match["rest"]
                entry.deferred.append(re.sub(r" DT=\w+$", "", text))  # where a ** line has it
        return found


class SendingOpenSMTPD(NamespacedMTA):
    """OpenSMTPD 6.8 (smtpd -d: foreground, its log on stderr). Its paths are compiled in
    (spool /var/spool/smtpd, chroot /var/lib/opensmtpd/empty, /var/run/smtpd.sock), hence
    the private /var; it runs as the users opensmtpd and opensmtpq.

    Its schedule cannot be shortened: an envelope deferred is tried again 400 s after it
    was queued, then 1600 s... (`retry_now` asks for a retry at once, as `smtpctl schedule
    all` does). It relays by MX on port 25 only. `extra`: more smtpd.conf lines, each as
    {directive: arguments} (e.g. {"mta limit": "max-conn-per-route 1"}); the key `relay`
    adds options to the relay action.
    """

    name = "opensmtpd"
    packages = ("opensmtpd",)
    users = ("opensmtpd", "opensmtpq")

    def configuration(self) -> str:
        relay = f"relay src {self.source} helo {self.hostname} {self.extra.get('relay', '')}"
        lines = [f"{k} {v}" for k, v in self.extra.items() if k != "relay"]
        lines += [
            f"listen on 127.0.0.1 port {self.port}",
            f'action "gateways" {relay.strip()}',
            'match from local for domain "example.com" action "gateways"',
        ]
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        if self.gateway_port != 25:
            raise ValueError("OpenSMTPD relays by MX to port 25 only")
        (self.var / "lib" / "opensmtpd" / "empty").mkdir(parents=True)
        (self.var / "spool").mkdir()
        (self.var / "run").mkdir()
        (self.root / "smtpd.conf").write_text(self.configuration())
        check = subprocess.run(
            self.inside(self.program("usr/sbin/smtpd"), "-n", "-f", str(self.root / "smtpd.conf")),
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            raise RuntimeError(f"smtpd.conf: {check.stderr}")

    def command(self) -> list[str]:
        return [self.program("usr/sbin/smtpd"), "-d", "-f", str(self.root / "smtpd.conf")]

    def queued(self) -> int:
        queue = self.var / "spool" / "smtpd" / "queue"
        return sum(1 for _ in queue.glob("*/*")) if queue.exists() else 0

    def retry_now(self) -> None:
        """Every envelope waiting is scheduled at once (smtpctl schedule all). Envelopes
        held while a session to the same MX is busy are left out: call it when the MTA is
        idle, or again. smtpctl insists on running as group opensmtpq (Debian installs it
        setgid; dpkg -x does not)."""
        group = str(self.ids["opensmtpq"])
        smtpctl = self.program("usr/sbin/smtpctl")
        subprocess.run(
            self.inside("setpriv", "--egid", group, "--keep-groups", smtpctl, "schedule", "all"),
            check=True,
            capture_output=True,
        )

    _DELIVERY = re.compile(
        r"mta delivery evpid=(?P<evpid>[0-9a-f]{16}) .*? delay=(?P<delay>\S+) "
        r'result="(?P<result>\w+)" stat="(?P<stat>.*)"$'
    )

    def deliveries(self) -> dict[str, Delivery]:
        """Per message id (an envelope id's first half): the reply of each deferred
        attempt, and whether (and how long after it was queued) it was sent."""
        found: dict[str, Delivery] = {}
        for line in self.log_text().splitlines():
            match = self._DELIVERY.search(line)
            if match is None:
                continue
            msgid = match["evpid"][:8]
            entry = found.setdefault(msgid, Delivery(msgid, [], False, None))
            if match["result"] == "Ok":
                entry.sent, entry.delay = True, seconds(match["delay"])
            else:
                entry.deferred.append(match["stat"])
        return found
