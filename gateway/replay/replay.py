"""A mail log through the front door: what Onajimi with a configuration would have done
to the sessions the log shows, at the times it shows them.

Every session of the log runs through simulation/gate.py (the real session core and
Decider, a memory store) with the log's timestamps as the clock, in the log's order,
with reverse DNS as the log gives it, swept every hour of log time. The backend accepts
every recipient Onajimi lets through, except those the log shows refused as no such
mailbox (5.1.x): that is a fact about the mailbox, not a policy. Clients wait a tarpit
hold out (RFC 5321 gives RCPT five minutes; a log cannot tell who would have hung up).

Each recipient of a message is followed as a *delivery* across the attempts that carry
it: the same sender and recipient again, until the log accepts or refuses it for good.
When the log accepted it and Onajimi would not have, the sender keeps it and retries
with no trace in the log. The rule for that: it is accepted at the sender's first
attempt in the log (a session that tried to send mail) at least `min_retry_delay` after
its own first one, that Onajimi lets through. "The sender" is the client key it was
deferred under (the address, or what `ipv4_prefix` and `lump_by_rdns` make of it), and
the retry rides along in that session as one more transaction, ahead of the session's
own, so the Decider sees it (only a retry of a deferred message promotes).
With no such attempt in the log, the delivery is *waiting* for a retry the log does not
show. What the log shows retried because the old setup deferred it, Onajimi may take at
once: then its later retries would not have happened, and are left out (`spared`).

The delay of a message: from its first attempt to the acceptance of its last recipient,
with the configuration, beside the same in the log; *delayed* when the configuration's
is longer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from gateway.assembly import build_policy
from gateway.config import Settings
from gateway.policy.decision import Policy
from gateway.policy.keys import place_key
from gateway.policy.vocabulary import Action
from gateway.relay.reply import BackendReply
from gateway.replay.model import Conversation, LoggedTransaction, LogRead
from gateway.replay.outcome import Delivery, ReplayResult
from gateway.simulation.gate import HELO, MX, Client, Envelope, Gate, SimClock, local_domain

SWEEP_EVERY = 3600.0


@dataclass(slots=True)
class _Carried:
    """An envelope of the session, and the deliveries its recipients are (with what the
    log says each got; None: a retry riding along, which the log does not show)."""

    envelope: Envelope
    deliveries: list[Delivery] = field(default_factory=list)
    logged: list[str | None] = field(default_factory=list)


class Replay:
    def __init__(self, policy: Policy, settings: Settings, log: LogRead) -> None:
        self.policy = policy
        self.log = log
        self.min_retry_delay = settings.policy.min_retry_delay
        self.unseen = f"unseen-recipient@{local_domain(settings)}"
        start = log.conversations[0].when if log.conversations else 0.0
        self.clock = SimClock(start)
        self.gate = Gate(policy, settings, self.clock)
        self.next_sweep = start + SWEEP_EVERY
        self.open: dict[tuple[str, str], Delivery] = {}  # the latest by (sender, recipient)
        self.waiting: defaultdict[str, list[Delivery]] = defaultdict(list)  # by client key
        self.result = ReplayResult(self.min_retry_delay)

    async def run(self) -> ReplayResult:
        for conversation in self.log.conversations:
            while self.next_sweep <= conversation.when:
                self.clock.now = self.next_sweep
                await self.gate.sweep()
                self.next_sweep += SWEEP_EVERY
            self.clock.now = conversation.when
            await self.conversation(conversation)
        result = self.result
        result.store = await self.gate.store.counts()
        result.decisions = dict(self.gate.decisions)
        return result

    async def conversation(self, conversation: Conversation) -> None:
        policy, now = self.policy, conversation.when
        rdns = conversation.naming.rdns()
        key = policy.assess(policy.screen(conversation.address), rdns).client_key
        carried = [c for t in conversation.transactions if (c := self._own(t, conversation, key))]
        riders = self._riders(key, now) if conversation.transactions else []  # a try to send
        if conversation.transactions and not carried and not riders:
            self.result.spared += 1  # nothing left to send: it would not have come
            return
        client = Client(
            conversation.address,
            rdns,
            helo=conversation.helo or conversation.naming.name or HELO,
            place=place_key(conversation.place) if conversation.place else MX[0],
        )
        # The retries first: a sender's queue has them due, and only a retry promotes.
        sent = riders + carried
        visit = await self.gate.session(client, [c.envelope for c in sent])
        refusal = next((v for v in visit.verdicts if v.action is not Action.PASS), None)
        reason = f"{refusal.action.value}/{refusal.reason.value}" if refusal else ""
        accepted_at = now + visit.held
        for c, codes in zip(sent, visit.codes, strict=True):
            for delivery, logged, code in zip(c.deliveries, c.logged, codes, strict=True):
                self._decided(delivery, code, accepted_at, reason)
                if logged is not None:
                    self._logged(delivery, logged, now)
                else:
                    delivery.rides += 1
        figures = self.result.client(str(conversation.address), key, rdns.name or "")
        figures.sessions += 1
        if visit.verdicts:
            figures.decided(now)
        for verdict in visit.verdicts:
            figures.decisions[f"{verdict.action.value}/{verdict.reason.value}"] += 1
            if verdict.action is Action.PASS:
                figures.rescued = figures.rescued or figures.deferred
                continue
            figures.reason = figures.reason or verdict.reason.value
            figures.deferred = figures.deferred or verdict.action is Action.DEFER

    def _own(
        self, transaction: LoggedTransaction, conversation: Conversation, key: str
    ) -> _Carried | None:
        """The log's own transaction: its recipients that Onajimi has not taken yet."""
        if transaction.authenticated:  # SMTP AUTH: the backend's to judge, not screened
            self.result.authenticated += 1
            return None
        carried = _Carried(Envelope(transaction.sender, []))
        for recipient, logged in zip(transaction.recipients, transaction.logged, strict=True):
            identity = (transaction.sender.lower(), recipient or f"#{transaction.message}")
            delivery = self.open.get(identity)
            if delivery is None or delivery.logged_at is not None or delivery.logged_refused:
                delivery = Delivery(
                    transaction.sender,
                    recipient,
                    conversation.when,
                    str(conversation.address),
                    conversation.naming.name or "",
                    key,
                )
                self.open[identity] = delivery
                self.result.deliveries.append(delivery)
            delivery.message = transaction.message or delivery.message
            if delivery.accepted_at is not None or delivery.refused:
                self._logged(delivery, logged, conversation.when)  # taken (or refused) before
                continue
            address = recipient or self.unseen
            carried.envelope.recipients.append(address)
            carried.deliveries.append(delivery)
            carried.logged.append(logged)
            if _no_mailbox(logged):
                carried.envelope.refused[address] = BackendReply(int(logged[:3]), logged[4:])
        return carried if carried.deliveries else None

    def _riders(self, key: str, now: float) -> list[_Carried]:
        """Deliveries the log accepted and Onajimi has not, retried in this session of
        their sender, one envelope per message."""
        due = [d for d in self.waiting.get(key, ()) if now >= d.first + self.min_retry_delay]
        by_message: dict[tuple[str, str], _Carried] = {}
        for delivery in due:
            message = (delivery.sender, delivery.message)
            carried = by_message.get(message)
            if carried is None:
                carried = by_message[message] = _Carried(Envelope(delivery.sender, []))
            carried.envelope.recipients.append(delivery.recipient or self.unseen)
            carried.deliveries.append(delivery)
            carried.logged.append(None)
        return list(by_message.values())

    def _decided(self, delivery: Delivery, code: int, at: float, reason: str) -> None:
        """What Onajimi said to it this time (the first acceptance or refusal holds)."""
        if delivery.accepted_at is not None or delivery.refused:
            return
        if code < 300:
            delivery.accepted_at = at
        elif code >= 500:
            delivery.refused = str(code)
        else:
            delivery.reason = delivery.reason or reason
            return
        waiting = self.waiting.get(delivery.key)
        if waiting and delivery in waiting:
            waiting.remove(delivery)

    def _logged(self, delivery: Delivery, logged: str, now: float) -> None:
        """What the log says it got: accepted or refused for good ends it there."""
        code = int(logged[:3])
        if 400 <= code < 500:
            return  # deferred in the log too: its retries are in the log
        if code >= 500:
            delivery.logged_refused = True
            return
        delivery.logged_at = now
        if delivery.accepted_at is None and not delivery.refused:
            self.waiting[delivery.key].append(delivery)


def _no_mailbox(logged: str) -> bool:
    """A refusal that says there is no such mailbox (or address): the backend's to give."""
    return logged.startswith("5") and logged[4:9].startswith("5.1.")


def replay(settings: Settings, log: LogRead) -> ReplayResult:
    return asyncio.run(Replay(build_policy(settings), settings, log).run())
