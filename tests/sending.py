"""What every real sending MTA of the tests offers, whichever it is (Postfix, Exim,
OpenSMTPD): a backlog queued through its own smtpd, and waiting for its queue to empty;
and waiting for a private instance's smtpd to greet.

A subclass has `port` (its smtpd on 127.0.0.1) and says how many messages it still holds
(`queued`) and what its log says of each (`deliveries`).
"""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.postfix import Delivery

# A deferral's reply code: at the start of the remote reply, or after Postfix's "said:".
_REPLY_CODE = re.compile(r"(?:^|said: )([2-5]\d\d)\b")


def wait_listening(
    name: str, port: int, process: subprocess.Popen, log: Callable[[], str], timeout: float = 20
) -> None:
    """Until the smtpd of `process` (`name`) greets on 127.0.0.1:`port`; else its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited: {log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not start listening: {log()}")


class SendingMTA:
    port: int

    def deliveries(self) -> dict[str, Delivery]:
        raise NotImplementedError

    def queued(self) -> int:
        raise NotImplementedError

    def submit(self, messages: list[tuple[str, list[str], bytes]]) -> None:
        """Queue messages through its own smtpd: a backlog at once. A session takes 100
        at most (OpenSMTPD's limit; Exim's is 1000)."""
        for first in range(0, len(messages), 100):
            with smtplib.SMTP("127.0.0.1", self.port, timeout=20) as smtp:
                for sender, recipients, body in messages[first : first + 100]:
                    smtp.sendmail(sender, recipients, body)

    def wait_until_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.queued() == 0:
                return True
            time.sleep(0.25)
        return False

    def replies_seen(self) -> Counter[str]:
        """How often each reply code appears in its deferrals (e.g. '421')."""
        codes: Counter[str] = Counter()
        for delivery in self.deliveries().values():
            for text in delivery.deferred:
                match = _REPLY_CODE.search(text)
                codes[match[1] if match else "other"] += 1
        return codes
