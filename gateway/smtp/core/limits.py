"""The limits a session meets: junk commands, the command timeout, the
strikes it earns towards the auto-ban (policy/strikes.py) and how they were counted.
"""

from __future__ import annotations

from gateway.policy import replies
from gateway.policy.decision import (
    Verdict,
)
from gateway.policy.keys import is_null_sender
from gateway.policy.vocabulary import (
    Action,
    Limit,
    Reason,
)
from gateway.smtp.core.actions import Say, Strike
from gateway.smtp.core.notes import Decided, LimitReached, Struck
from gateway.smtp.core.state import SessionState

# Verdicts that make a client a friend of the operator's: never struck (policy/strikes.py).
_FRIENDS = frozenset({Reason.TRUSTED, Reason.ALLOWLIST, Reason.DNSWL})


class LimitsStage(SessionState):
    """Junk commands, timeouts and strikes."""

    __slots__ = ()

    def junk_command(self, limit: int) -> Say | None:
        """NOOP, RSET, HELP, VRFY, EXPN: one more junk command. The reply that
        ends the session (421) once there are more than `limit` since the last MAIL."""
        self.junk += 1
        if self.junk <= limit:
            return None
        self.notes.append(LimitReached(Limit.JUNK_COMMANDS))
        return self._drop(replies.too_much_junk(self.rules.hostname))

    def timed_out(self) -> Say:
        self.notes.append(LimitReached(Limit.COMMAND_TIMEOUT))
        return self._drop(replies.timed_out(self.rules.hostname))

    def loitered(self) -> Reason | None:
        """After a timeout: the strike it is (the adapter counts it; the session is over)."""
        return Reason.AUTOBAN_LOITER if self._strikable() else None

    def _strikable(self) -> bool:
        """Whether what this client does wrong counts towards the auto-ban: anyone but
        the operator's friends (trusted, allow-listed, DNSWL-passed), its users
        (authenticated), and the null sender (callbacks verify forged addresses, and are
        refused as unknown through no fault of their own)."""
        if self.authenticated is not None:
            return False
        transaction = self.transaction
        if transaction is not None and is_null_sender(transaction.sender):
            return False
        verdict = self.assessment.verdict if self.assessment is not None else None
        return verdict is None or verdict.reason not in _FRIENDS

    def strike_counted(self, strike: Strike, count: int, verdict: Verdict | None) -> Say:
        """The store counted a strike (`count` for its reason now; 0: the store could not);
        `verdict` is the penalty box when that was one too many."""
        if count:
            self.notes.append(Struck(strike.reason, count))
        if verdict is not None:
            self.notes.append(Decided(verdict))
            return self._drop(str(verdict.reply))
        limit = self.rules.auth_limit
        if strike.reason is Reason.AUTH_FAILURES and limit and self.auth_failures >= limit:
            detail = f"{self.auth_failures} failed authentications in one session"
            self.notes.append(Decided(Verdict(Action.REJECT, Reason.AUTH_FAILURES, detail=detail)))
            return self._drop(replies.too_many_auth_failures(self.rules.hostname))
        return strike.say
