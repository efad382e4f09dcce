"""The tarpit (taRgrey's answer: slow, not refuse): a suspect's first deferral is held
instead; a real MTA waits it out, a bot hangs up (counted as an early retry). One hold
per session; what it ended in goes for every later recipient.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.policy.decision import (
    RcptDecision,
    Verdict,
)
from gateway.policy.vocabulary import (
    Action,
    Reason,
    SuspectAction,
    TarpitResult,
)
from gateway.smtp.core.actions import Promote, RelayRcpt, Say, Tarpit
from gateway.smtp.core.notes import Decided, TarpitEnded
from gateway.smtp.core.state import SessionState, TarpitState

# The reasons that make a client a suspect: the ones policy.suspect_action is about
# (a clean ichigen-san deferred by policy.defer = "all" is no suspect, nor is DNS trouble).
SUSPECT_REASONS = frozenset(
    {*(Reason.s25r_rule(n) for n in range(7)), Reason.S25R_BLACKLIST, Reason.DNSBL}
)


class TarpitStage(SessionState):
    """A suspect's deferral held, waited out or hung up on."""

    __slots__ = ()

    def _tarpitted(self, result: RcptDecision, recipient: str) -> Tarpit | Say | RelayRcpt | None:
        """A suspect's first deferral meets the tarpit; what the hold ended in goes for
        the session's later recipients. None: no tarpit here (decide as usual)."""
        action = self.rules.suspect_action
        assessment = self.assessment
        if (
            action is SuspectAction.DEFER
            or result.verdict.action is not Action.DEFER
            or assessment is None
            or assessment.defer_reason not in SUSPECT_REASONS
        ):
            return None
        if self.tarpit is None:
            # Held for tarpit.delay by thousands of sessions at once: without what the
            # session has kept already (its `remember`, and the attempt behind it).
            kept = replace(result, remember=None) if result.remember is not None else result
            self.tarpit, self.tarpit_held = TarpitState.HELD, kept
            return Tarpit(self.rules.tarpit_delay, recipient)
        if self.tarpit is TarpitState.WAITED and action is SuspectAction.TARPIT:
            self._note_waited(result, recipient)  # promoted already, at the hold's end
            return self._to_backend(recipient)
        return None  # full, or tarpit+defer: the deferral as usual

    def tarpit_waited(self, recipient: str) -> Say | Promote:
        """The client waited the hold out: with "tarpit" it has shown itself a real MTA
        (promoted: familiar from now on); with "tarpit+defer" the deferral it had."""
        result = self.tarpit_held
        assert result is not None and self.tarpit is TarpitState.HELD
        self.tarpit, self.tarpit_held = TarpitState.WAITED, None
        self.notes.append(TarpitEnded(TarpitResult.WAITED, self.rules.tarpit_delay))
        if self.rules.suspect_action is SuspectAction.TARPIT:
            self._note_waited(result, recipient)
            return Promote(result.key, self._to_backend(recipient))
        return self._judged(result, recipient) or Say(str(result.verdict.reply))

    def tarpit_full(self, recipient: str) -> Say:
        """No room in the tarpit: the deferral the decision had, at once."""
        result = self.tarpit_held
        assert result is not None and self.tarpit is TarpitState.HELD
        self.tarpit, self.tarpit_held = TarpitState.FULL, None
        self.notes.append(TarpitEnded(TarpitResult.FULL, 0.0))
        return self._judged(result, recipient) or Say(str(result.verdict.reply))

    def tarpit_abandoned(self) -> str | None:
        """The client hung up during the hold: the key to count an early retry on."""
        held = self.tarpit_held
        if self.tarpit is not TarpitState.HELD or held is None:
            return None
        self.tarpit, self.tarpit_held = TarpitState.FULL, None
        self.notes.append(TarpitEnded(TarpitResult.ABANDONED, 0.0))
        # The deferral it would have had is its decision (a line, a count), said to no one.
        sender = self.transaction.sender if self.transaction is not None else None
        gave_up = replace(held.verdict, detail="hung up in the tarpit")
        self.notes.append(Decided(gave_up, sender, None, held))
        return held.key or None

    def _note_waited(self, result: RcptDecision, recipient: str) -> None:
        transaction = self.transaction
        assert transaction is not None
        detail = f"waited out the tarpit ({self.rules.tarpit_delay:g}s)"
        verdict = Verdict(Action.PASS, Reason.TARPIT, detail=detail)
        self.notes.append(Decided(verdict, transaction.sender, recipient, result))
