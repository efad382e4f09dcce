"""Everything one SMTP session knows, in one place.

It hangs on the protocol object (one per connection), not on aiosmtpd's Session, which
STARTTLS replaces, nor on the handler, which every connection shares.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from gateway.decider import RcptDecision
from gateway.errors import StoreError
from gateway.policy.decision import Assessment, Screening
from gateway.policy.net import IPAddress
from gateway.relay.backend import BackendReply, BackendSession
from gateway.store.base import Snapshot


@dataclass(slots=True)
class Transaction:
    """MAIL to end of DATA (or RSET)."""

    id: str  # "<session>.<n>": in the Received header and the logs
    sender: str = ""  # as the client gave it; "<>" for the null sender
    size: int | None = None  # the SIZE it declared at MAIL, if any
    decide_at_data: list[str] = field(default_factory=list)  # null sender: decided at DATA
    data_refusal: str | None = None  # what DATA was refused with (said again if repeated)
    backend_failed: bool = False  # the backend failed during this transaction
    mail_sent: bool = False  # MAIL FROM went to the backend
    sender_refused: BackendReply | None = None  # the backend refused MAIL: repeated per RCPT
    keys: set[str] = field(default_factory=set)  # deferral keys that passed (refreshed on 250)
    recipients: int = 0  # accepted by the backend


@dataclass(slots=True)
class SessionState:
    id: str  # short hex id: every log line of the session carries it
    peer_port: int | None  # the TCP peer's port (the load balancer's, behind PROXY)
    place: str = ""  # which of our listening addresses it reached (keys.place_key)
    address: IPAddress | None = None  # the client: the PROXY source or the TCP peer
    address_text: str = ""
    counted: bool = False  # admitted by the connection limits (so it must be released)
    screening: Screening | None = None
    assessment: Assessment | None = None
    assessment_task: asyncio.Task[Assessment] | None = None  # PTR lookup started at connect
    snapshot_task: asyncio.Task[Snapshot | None] | None = None  # deferral record, read ahead
    snapshot: Snapshot | None = None  # the deferral record, when it was at hand already
    connect_snapshot: Snapshot | None = None  # the record under the address key, read at connect
    helo: str = ""
    esmtp: bool = False
    tls: str | None = None  # "TLSv1.3 with cipher ..." once STARTTLS is done
    decided: dict[str, RcptDecision] = field(default_factory=dict)  # one attempt per key a session
    backend: BackendSession | None = None
    transactions: int = 0
    transaction: Transaction | None = None
    closing: bool = False  # a 421 was given: the session ends after this reply
    junk: int = 0  # commands without progress since the last MAIL (limits.junk_commands)

    @classmethod
    def new(cls, peer_port: int | None) -> SessionState:
        return cls(id=secrets.token_hex(4), peer_port=peer_port)

    def begin_transaction(self) -> Transaction:
        self.transactions += 1
        self.transaction = Transaction(id=f"{self.id}.{self.transactions}")
        return self.transaction

    async def prefetched(self) -> Snapshot | None:
        """The prefetched deferral record, once: later transactions read afresh."""
        task, self.snapshot_task = self.snapshot_task, None
        if task is None:
            snapshot, self.snapshot = self.snapshot, None
            return snapshot
        try:
            return await task
        except StoreError:
            return None  # the decision will meet the outage itself

    async def assessed(self) -> Assessment:
        """The assessment, waiting for the PTR lookup started at connect if need be."""
        if self.assessment is None:
            assert self.assessment_task is not None
            self.assessment = await asyncio.shield(self.assessment_task)
        return self.assessment
