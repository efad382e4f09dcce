"""Prometheus metrics: these families, with exactly these names and labels
(dashboards and docker/prometheus/alerts.yml depend on them).

    onajimi_connections_total                              counter
    onajimi_sessions_active                                gauge (livesum across workers)
    onajimi_decisions_total{action,reason}                 counter
    onajimi_retries_total{outcome="early|promoted|expired"} counter
    onajimi_relay_transactions_total{result=...}           counter
    onajimi_data_normalized_total{what="nul|bare_newline"}  counter
    onajimi_limit_refusals_total{limit=...}                counter (connections, client_connections,
                                                                    junk_commands, command_timeout)
    onajimi_tls_sessions_total{version="TLSv1.2|TLSv1.3"}  counter (STARTTLS handshakes)
    onajimi_tarpit_total{result="waited|abandoned|full"}   counter (suspects held)
    onajimi_auth_total{result="ok|failed|aborted|tempfail|backend_error"}
                                                           counter (AUTH exchanges relayed)
    onajimi_relay_seconds                                  histogram (backend DATA round trip)
    onajimi_dns_seconds                                    histogram (uncached lookups)
    onajimi_store_records{kind="pending|familiar|penalty"} gauge (most recent across workers)
    onajimi_store_errors_total                             counter (failed store operations)
    onajimi_store_up                                       gauge, 1 or 0 (min across workers)

Labels stay low-cardinality: actions, reasons and results come from fixed vocabularies,
never an address, a name or a sender. Each Gateway has its own registry (tests run many
in one process); with several worker processes prometheus_client's multiprocess mode
sums what every worker recorded, which is why the gauges declare how to combine them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.policy.vocabulary import (
    Action,
    AuthResult,
    Limit,
    Reason,
    RelayResult,
    Retry,
    TarpitResult,
)
from gateway.relay.content import NORMALIZED
from gateway.tls import VERSIONS as TLS_VERSIONS

# The (action, reason) pairs that can occur; only these series exist.
DECISIONS = {
    Action.PASS: (
        Reason.TRUSTED,
        Reason.ALLOWLIST,
        Reason.FAMILIAR,
        Reason.PROMOTED,
        Reason.POOL,
        Reason.CLEAN,
        Reason.PREGREET,  # pregreet.action = "ignore": noted, let through
        Reason.AUTHENTICATED,
        Reason.EXEMPT,
        Reason.DNSWL,
        Reason.TARPIT,
    ),
    Action.DEFER: (
        *(Reason.s25r_rule(n) for n in range(7)),
        Reason.S25R_BLACKLIST,
        Reason.ICHIGEN,
        Reason.GREYLIST,
        Reason.EARLY_RETRY,
        Reason.DNS_TEMPFAIL,
        Reason.PREGREET,
        Reason.DNSBL,
    ),
    Action.REJECT: (
        Reason.DENYLIST,
        Reason.RELAY_DENIED,
        Reason.PREGREET,
        Reason.AUTH_FAILURES,
        Reason.DNSBL,
    ),
    Action.PENALTY: (
        Reason.IMPATIENT,
        Reason.AUTH_FAILURES,
        Reason.AUTOBAN_RELAY,
        Reason.AUTOBAN_PROBE,
        Reason.AUTOBAN_LOITER,
    ),
}
RECORD_KINDS = ("pending", "familiar", "penalty")
_DNS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connections = Counter("onajimi_connections", "SMTP connections accepted", registry=r)
        self.sessions_active = Gauge(
            "onajimi_sessions_active",
            "SMTP sessions open now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.decisions = Counter(
            "onajimi_decisions",
            "Policy decisions by action and reason",
            ["action", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "onajimi_retries",
            "Returning deferred keys by what they turned out to be",
            ["outcome"],
            registry=r,
        )
        self.relay_transactions = Counter(
            "onajimi_relay_transactions",
            "Transactions relayed to the backend by result",
            ["result"],
            registry=r,
        )
        self.relay_seconds = Histogram(
            "onajimi_relay_seconds", "Backend DATA round trip", buckets=_RELAY_BUCKETS, registry=r
        )
        self.limit_refusals = Counter(
            "onajimi_limit_refusals",
            "Sessions refused or ended by a limit, by limit",
            ["limit"],
            registry=r,
        )
        self.normalized = Counter(
            "onajimi_data_normalized",
            "Messages normalized before relaying (relay.bare_newline = normalize), by what",
            ["what"],
            registry=r,
        )
        self.tls_sessions = Counter(
            "onajimi_tls_sessions",
            "STARTTLS handshakes completed, by TLS version",
            ["version"],
            registry=r,
        )
        self.auth = Counter(
            "onajimi_auth",
            "AUTH exchanges relayed to the backend, by how they ended",
            ["result"],
            registry=r,
        )
        self.tarpit = Counter(
            "onajimi_tarpit",
            "Suspects held in the tarpit, by how the hold ended",
            ["result"],
            registry=r,
        )
        self.backend_connections = Counter(
            "onajimi_backend_connections",
            "Backend connections a client session used, by how: opened for it, or reused "
            "(backend.reuse)",
            ["how"],
            registry=r,
        )
        self.dns_seconds = Histogram(
            "onajimi_dns_seconds", "Uncached DNS lookups", buckets=_DNS_BUCKETS, registry=r
        )
        self.store_records = Gauge(
            "onajimi_store_records",
            "Live records in the state store by kind",
            ["kind"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.store_errors = Counter(
            "onajimi_store_errors",
            "Store operations that failed (outage, timeout, lock)",
            registry=r,
        )
        self.store_up = Gauge(
            "onajimi_store_up",
            "1 while the state store answers, 0 during an outage",
            registry=r,
            multiprocess_mode="min",
        )
        self.store_up.set(1)
        # Every label value exists from the start: dashboards show 0, not "no data". The
        # children are kept: labels() costs more than the increment, on every decision.
        self._decision_children = {
            (action, reason): self.decisions.labels(action.value, reason.value)
            for action, reasons in DECISIONS.items()
            for reason in reasons
        }
        self._retry_children = {outcome: self.retries.labels(outcome.value) for outcome in Retry}
        self._relay_children = {
            result: self.relay_transactions.labels(result.value) for result in RelayResult
        }
        for what in NORMALIZED:
            self.normalized.labels(what)
        for limit in Limit:
            self.limit_refusals.labels(limit.value)
        for version in TLS_VERSIONS:
            self.tls_sessions.labels(version)
        for result in AuthResult:
            self.auth.labels(result.value)
        for outcome in TarpitResult:
            self.tarpit.labels(outcome.value)
        for kind in RECORD_KINDS:
            self.store_records.labels(kind)
        self.backend_opened = self.backend_connections.labels("opened")
        self.backend_reused = self.backend_connections.labels("reused")

    def decision(self, action: Action, reason: Reason, retry: Retry | None) -> None:
        child = self._decision_children.get((action, reason))
        if child is None:  # a pair DECISIONS does not list: counted all the same
            child = self.decisions.labels(action.value, reason.value)
        child.inc()
        if retry is not None:
            self._retry_children[retry].inc()

    def relayed(self, result: RelayResult, seconds: float | None) -> None:
        """`seconds`: the backend round trip, None when the backend was never asked."""
        self._relay_children[result].inc()
        if seconds is not None:
            self.relay_seconds.observe(seconds)

    def store_counts(self, counts: dict[str, int]) -> None:
        for kind in RECORD_KINDS:
            self.store_records.labels(kind).set(counts.get(kind, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
