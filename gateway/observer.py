"""Every log line and metric about sessions and relays, written in one place.

The session core (smtp/session.py) leaves what happened in `session.notes`; the adapter
hands them here after each step. The words are the vocabulary's (policy/vocabulary.py):
the `action=`, `reason=`, `result=` and `limit=` a line carries are the label values of
the metrics it counts, and the names of the settings behind them.

    decision  one per verdict (README "Logs"): onajimi_decisions_total, onajimi_retries_total
    relay     one per relayed transaction: onajimi_relay_transactions_total, _relay_seconds
    limit     a Limit refused or ended a session: onajimi_limit_refusals_total
    store_busy / store_error   a recipient the store could not decide (store.on_error)
    backend_error              the backend gave no usable reply (a warning)
    auth      one per AUTH exchange: mechanism and how it ended, never what was sent:
              onajimi_auth_total (a refusal is a warning, for fail2ban-minded operators)
    strike    a strike counted against the client (policy/strikes.py): its reason and count

The gateway's own warnings are written here too: stress, the store's outage, and the
host's default gateway as the client of too many connections (smtp/masquerade.py).

With the web pages on, each decision line's fields also go to the admin page's ring of
recent decisions (web/recent.py). It must not decide anything: it only writes down.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway import logs
from gateway.errors import StoreError
from gateway.metrics import Metrics
from gateway.policy.vocabulary import AuthResult, Event, Limit, OnError
from gateway.smtp.core.notes import (
    AuthEnded,
    BackendErrored,
    Decided,
    Encrypted,
    LimitReached,
    Normalized,
    Note,
    Relayed,
    StoreTrouble,
    Struck,
    TarpitEnded,
)
from gateway.smtp.session import Session

if TYPE_CHECKING:
    from gateway.smtp.limits import ConnectionLimits
    from gateway.smtp.masquerade import Masquerade
    from gateway.web.recent import RecentDecisions

log = logging.getLogger("onajimi")


class Observer:
    def __init__(self, metrics: Metrics, on_error: OnError = OnError.TEMPFAIL) -> None:
        self.metrics = metrics
        self.on_error = on_error  # store.on_error, for the outage line (set on reload)
        self.recent: RecentDecisions | None = None  # the admin page's ring, when it is served

    # -- sessions -------------------------------------------------------------------------
    def opened(self) -> None:
        self.metrics.connections.inc()
        self.metrics.sessions_active.inc()

    def closed(self) -> None:
        self.metrics.sessions_active.dec()

    def noted(self, session: Session) -> None:
        """Write down what the session core noted since the last call."""
        notes = session.notes
        if notes:
            for note in notes:
                self.note(session, note)
            notes.clear()

    def note(self, session: Session, note: Note) -> None:
        if isinstance(note, Decided):
            self.decision(session, note)
        elif isinstance(note, Relayed):
            self.relayed(session, note)
        elif isinstance(note, LimitReached):
            self.limit(session, note.limit)
        elif isinstance(note, StoreTrouble):
            self.event(note.event, session, to=note.recipient, on_error=note.on_error.value)
        elif isinstance(note, BackendErrored):
            self.event(Event.BACKEND_ERROR, session, logging.WARNING, detail=note.detail)
        elif isinstance(note, Normalized):
            self.metrics.normalized.labels(note.what).inc()
        elif isinstance(note, Encrypted):
            self.metrics.tls_sessions.labels(note.version).inc()
        elif isinstance(note, AuthEnded):
            self.auth(session, note)
        elif isinstance(note, TarpitEnded):
            self.metrics.tarpit.labels(note.result.value).inc()
            self.event(Event.TARPIT, session, result=note.result.value, seconds=note.seconds)
        elif isinstance(note, Struck):
            self.event(Event.STRIKE, session, reason=note.reason.value, count=note.count)

    def auth(self, session: Session, note: AuthEnded) -> None:
        self.metrics.auth.labels(note.result.value).inc()
        failed = note.result is AuthResult.FAILED
        self.event(
            Event.AUTH,
            session,
            logging.WARNING if failed else logging.INFO,
            ptr=session.assessment.ptr if session.assessment is not None else "",
            mechanism=note.mechanism,
            result=note.result.value,
            code=note.code,
            failures=session.auth_failures,
        )

    def decision(self, session: Session, note: Decided) -> None:
        verdict, decision = note.verdict, note.decision
        assessment = session.assessment
        step = decision.step if decision is not None else None
        fresh = step is not None and not decision.repeated
        self.metrics.decision(verdict.action, verdict.reason, step.retry if fresh else None)
        fields = {
            "session": session.id,
            "client": session.address_text,
            "ptr": assessment.ptr if assessment is not None else "",
            "helo": session.helo,
            "from": _angle(note.sender),
            "to": _angle(note.recipient),
            "action": verdict.action.value,
            "reason": verdict.reason.value,
            "key": (decision.key if decision is not None and decision.key else None)
            or (assessment.client_key if assessment is not None else ""),
            "attempt": step.attempt if step is not None else "",
            # How a deferred attempt was judged, and the count the penalty box goes by.
            "kind": step.kind.value if step is not None and step.kind else "",
            "early": step.early if step is not None and step.kind else "",
            "detail": verdict.detail,
        }
        score = assessment.dnsbl if assessment is not None else None
        if score is not None and (score.fired or score.failed):
            fields["dnsbl"] = score.describe()  # what the lists said, whatever they decided
        logs.emit(logs.decision_log, "decision", fields)
        if self.recent is not None:
            self.recent.add(fields)

    def backend_connection(self, reused: bool) -> None:
        """A backend connection a session began to use (metrics only: no log line)."""
        (self.metrics.backend_reused if reused else self.metrics.backend_opened).inc()

    def relayed(self, session: Session, note: Relayed) -> None:
        self.metrics.relayed(note.result, note.seconds)
        transaction = note.transaction
        recipients = transaction.recipients
        assessment = session.assessment
        logs.emit(
            logs.relay_log,
            "relay",
            {
                "session": session.id,
                "id": transaction.id,
                "client": session.address_text,
                "ptr": assessment.ptr if assessment is not None else "",
                "helo": session.helo,
                "from": _angle(transaction.sender),
                "to": ",".join(f"<{r}>" for r in recipients[:5])
                + ("..." if len(recipients) > 5 else ""),
                "rcpts": len(recipients),
                "size": transaction.received,
                "tls": session.tls_version,
                "result": note.result.value,
                "reply": note.reply.replace("\r\n", " / "),
                "seconds": "" if note.seconds is None else f"{note.seconds:.3f}",
            },
        )

    def limit(self, session: Session, limit: Limit) -> None:
        self.metrics.limit_refusals.labels(limit.value).inc()
        self.event(Event.LIMIT, session, limit=limit.value)

    def event(
        self, event: Event, session: Session, level: int = logging.INFO, **fields: Any
    ) -> None:
        logs.emit(
            logs.log,
            event.value,
            {"session": session.id, "client": session.address_text, **fields},
            level,
        )

    # -- the gateway ----------------------------------------------------------------------
    def stress(self, began: bool, limits: ConnectionLimits) -> None:
        if began:
            log.warning(
                "under stress: %d of %d connections in use; command timeout %gs, "
                "junk command limit %d until the load drops",
                limits.active,
                limits.total,
                limits.command_timeout,
                limits.junk_limit,
            )
        else:
            log.info("stress over: %d of %d connections in use", limits.active, limits.total)

    def masquerading(self, masquerade: Masquerade) -> None:
        """One address opens most connections, and it is this host's default gateway
        (smtp/masquerade.py): at most once an hour."""
        log.warning(
            "%d of the last %d connections came from %s, this host's default gateway "
            "(a Docker bridge or NAT): every client then looks like one, to familiar hosts, "
            "auto-bans and per-client limits alike; publish the port on IPv4 only "
            "(0.0.0.0:25:2525) so Docker forwards without its proxy, or put a PROXY-protocol "
            "balancer in front (listen.proxy_protocol); see README 'Docker'",
            masquerade.count,
            masquerade.window,
            masquerade.address,
        )

    def store_failed(self, exc: StoreError) -> None:
        """From the store guard, at most once per retry interval while the store is down."""
        self.metrics.store_errors.inc()
        self.metrics.store_up.set(0)
        action = "pass" if self.on_error is OnError.PASS else "tempfail (451 4.3.0)"
        log.error("state store unavailable (%s); clients who need it: %s", exc, action)

    def store_recovered(self) -> None:
        self.metrics.store_up.set(1)
        log.warning("state store reachable again: normal decisions resume")


def _angle(address: str | None) -> str | None:
    if address is None:
        return None
    return address if address == "<>" else f"<{address}>"
