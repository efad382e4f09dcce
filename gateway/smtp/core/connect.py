"""The connect stage and the pregreet test: limits, deny list, penalty box, reverse DNS
(whether it must come first), postscreen's teaser and wait, and a refused session's 503s.
"""

from __future__ import annotations

from gateway.policy import dnsbl, replies
from gateway.policy.decision import (
    Screening,
    Verdict,
)
from gateway.policy.facts import RDNS
from gateway.policy.net import IPAddress, address_text
from gateway.policy.vocabulary import (
    Action,
    Limit,
    PregreetAction,
    Reason,
)
from gateway.smtp.core.actions import GREET, Greet, LookUp, Say, Then
from gateway.smtp.core.notes import Decided, LimitReached
from gateway.smtp.core.phases import Happening, Phase
from gateway.smtp.core.state import SessionState

REFUSED_COMMANDS = 20  # after a 554 greeting: this many 503s, then the door closes


class ConnectStage(SessionState):
    """Before the greeting: who the client is, and whether it may talk."""

    __slots__ = ()

    def asks_lists(self, configured: bool) -> bool:
        """Whether the DNS lists ([dnsbl], when `configured`) are asked about this client:
        not for a familiar one, whom no score would defer."""
        return configured and not self.familiar

    def connected_via(self, port: int | None, place: str | None) -> None:
        """Where the connection came from and what it reached: the peer's port and our
        listening address (keys.place_key). A PROXY header tells the client's own; what
        it leaves out keeps what the TCP connection said."""
        if port:
            self.peer_port = port
        if place:
            self.place = place

    def arrive(self, address: IPAddress) -> bool:
        """The client is known (TCP peer or PROXY source). True if it is trusted: trusted
        networks are exempt from the per-client connection limit."""
        self.address = address
        self.address_text = address_text(address)
        return self.policy.trusted.lookup(address) is not None

    def admission(self, limit: Limit | None) -> Say | None:
        """What the connection limits said. None: admitted, the connect facts come next."""
        if limit is not None:
            self.notes.append(LimitReached(limit))
            return self._drop(replies.limit_refusal(self.rules.hostname, limit))
        self.counted = True
        return None

    def connect_facts(
        self,
        screening: Screening,
        verdict: Verdict | None,
        *,
        pregreeted: bool = False,
        familiar: bool = False,
    ) -> Say | Greet | LookUp:
        """The store's answer before the greeting (decider.at_connect): `pregreeted`, it
        talked before a greeting within pregreet.ttl; `familiar`, its address key is."""
        self.screening = screening
        self.familiar = familiar
        if verdict is not None and verdict.action is Action.REJECT:
            return self._refuse(verdict)
        if verdict is not None and verdict.action is Action.PENALTY:
            self.notes.append(Decided(verdict))
            return self._drop(str(verdict.reply))
        if pregreeted and verdict is None:  # remembered: no wait, the action at once
            say = self._talked_early(remembered=True)
            if say is not None:
                return say
        if verdict is not None:  # trusted or allow-listed by address: no DNS needed
            self.assessment = self.policy.assess(screening, None)
            return self._greet()
        return LookUp(wait=self.policy.deny_has_names)

    def store_down_at_connect(self, now: float) -> Say | Greet | LookUp:
        """No penalty box without the store; the address lists still apply, and the RCPT
        stage meets the outage itself (store.on_error)."""
        assert self.address is not None
        screening = self.policy.screen(self.address)
        return self.connect_facts(screening, self.policy.before_greeting(screening, None, now))

    def greet_before_rdns(self) -> Greet:
        """No deny entry names a PTR: greet now, the lookup overlaps EHLO and MAIL."""
        return self._greet()

    def rdns_known(self, rdns: RDNS, score: dnsbl.Score | None = None) -> Say | Greet | None:
        """Reverse DNS answered (or failed: RDNS says so), with the DNS lists' score when
        they were asked. Before the greeting: greet or refuse; after it (the lookup
        overlapped EHLO and MAIL): None."""
        assert self.screening is not None
        assessment = self.assessment = self.policy.assess(self.screening, rdns, score)
        if self.phase is not Phase.CONNECTED:
            return None
        verdict = assessment.verdict
        if verdict is not None and verdict.reason is Reason.DENYLIST:
            return self._refuse(verdict)
        return self._greet()

    def greet_wait(self) -> float:
        """Seconds to wait between the teaser `220-` line and the final `220` (0: greet at
        once). Clients that need no screening, and remembered pregreeters, are not made
        to wait."""
        screening = self.screening
        if (
            self.rules.greet_wait <= 0
            or self.pregreeted
            or self.familiar
            or screening is None
            or screening.verdict is not None  # trusted or allow-listed by address
            or self._vouched_for()  # a returning host, allow-listed by name or DNSWL
        ):
            return 0.0
        return self.rules.greet_wait

    def _vouched_for(self) -> bool:
        verdict = self.assessment.verdict if self.assessment is not None else None
        return verdict is not None and verdict.reason in (Reason.ALLOWLIST, Reason.DNSWL)

    def greet_wait_over(self, talked: bool) -> Say | None:
        """The wait is over; `talked`: the client sent something before the final 220."""
        if not talked:
            return None
        return self._talked_early(remembered=False)

    def _talked_early(self, remembered: bool) -> Say | None:
        self.pregreeted = True
        action = self.rules.pregreet_action
        when = "within pregreet.ttl" if remembered else "now"
        if action is PregreetAction.DROP:
            reply = replies.pregreet_refusal(self.rules.hostname)
            verdict = Verdict(Action.REJECT, Reason.PREGREET, detail=f"talked early ({when})")
            self.notes.append(Decided(verdict))
            return self._drop(reply)
        if action is PregreetAction.IGNORE and not remembered:
            detail = "talked early; pregreet.action = ignore"
            self.notes.append(Decided(Verdict(Action.PASS, Reason.PREGREET, detail=detail)))
        return None  # defer: each recipient gets 450 (rcpt); ignore: goes on

    def _greet(self) -> Greet:
        self._move(Happening.GREET)
        return GREET

    def _refuse(self, verdict: Verdict) -> Say:
        self.notes.append(Decided(verdict))
        self._move(Happening.REFUSE)
        return Say(str(verdict.reply), Then.REFUSE)

    def refused_command(self, line: bytes) -> Say:
        """A command after the 554 greeting (RFC 5321 3.1): QUIT is answered; anything
        else gets 503, and the REFUSED_COMMANDS-th of them closes the door."""
        if line.strip().upper() == b"QUIT":
            return self.quit()
        self.junk += 1
        return Say(replies.SAY_QUIT, Then.CLOSE if self.junk >= REFUSED_COMMANDS else Then.GO_ON)
