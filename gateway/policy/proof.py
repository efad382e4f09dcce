"""When a retry from *another address* counts: pools by proof (README "How it decides").

A key's retry promotes it (deferral.py), but a provider that retries from another
address of its pool (Gmail, Office 365, SES) never retries under the key it was deferred
at. Sharing an rDNS domain proves nothing (the bots of one ISP's dynamic pool share
it: that rule, "siblings", let 789 of 789 simulated botnet retries in). Two things do:

* **SPF.** The sender's domain says, through SPF (RFC 7208), that both addresses send
  its mail, through a mechanism no wider than an IPv4 /12 or an IPv6 /32 (a pass from
  `all`, `ptr` or `exists`, or from half the Internet, proves nothing). The retry then
  proves the *sender domain* a pool (`Pool`): its mail passes from any address its SPF
  passes narrowly, while it passes. The address itself gains nothing: another sender
  from it is an ichigen-san still.
* **One name.** Both addresses carry the same forward-confirmed PTR name: one host that
  retried over the other address family (Gmail and Yandex do). Its key is promoted.

What connects the two addresses is a `Trace` per message (sender, SIZE, one recipient),
claimed put-if-absent at each deferral of a message new to its key: it keeps where and
when the message was first deferred. The retry, a new message under its own key, finds
the trace of the first try. Timing is a retry's: at least `min_retry_delay`, at most
`retry_window` after that first try. SPF is asked only then (and for senders of proven
domains), so the first contact costs no DNS lookup more; a DNS failure during SPF is no
proof (the attempt is deferred as it would have been), never an error.

Everything here is pure; decider.py reads the trace and pool records and asks SPF.
"""

from __future__ import annotations

from gateway.policy.deferral import AttemptKind, DeferralRules
from gateway.policy.facts import RDNS, SPF
from gateway.policy.messages import Envelope, recipient_id
from gateway.policy.records import Pool, Trace
from gateway.policy.values import value

NARROWEST_IPV4 = 12  # a proof is no wider than an IPv4 /12 ...
NARROWEST_IPV6 = 32  # ... or an IPv6 /32
POOL_REFRESH = 3600.0  # a proven domain's record is written again at most this often


def narrow_pass(spf: SPF) -> bool:
    """An SPF pass through a network narrow enough to prove something."""
    if spf.result != "pass" or spf.prefix is None:
        return False
    return spf.prefix >= (NARROWEST_IPV6 if spf.ipv6 else NARROWEST_IPV4)


def sender_domain(sender: str) -> str:
    """The envelope sender's domain, lower-case ("" for the null sender or none)."""
    _, at, domain = sender.strip().strip("<>").rpartition("@")
    return domain.rstrip(".").lower() if at else ""


def confirmed_name(rdns: RDNS | None) -> str:
    """The client's forward-confirmed PTR name, "" if it has none."""
    return rdns.confirmed[0] if rdns is not None and rdns.confirmed else ""


def trace_key(envelope: Envelope, recipient: str) -> str:
    """A message as a trace knows it: the sender, the SIZE (or "-") and one recipient, so
    a retry that carries only the recipients still pending finds its own."""
    size = "-" if envelope.size is None else str(envelope.size)
    return f"{envelope.sender}.{size}.{recipient_id(recipient)}"


def traceable(kind: AttemptKind | None, sender: str) -> bool:
    """Whether a deferral leaves a trace: a message new to its key, from a sender with
    a domain (the null sender's callbacks and bounces have no pool to prove)."""
    return kind in (AttemptKind.FIRST, AttemptKind.NEW_MESSAGE, AttemptKind.EXPIRED) and bool(
        sender_domain(sender)
    )


def new_trace(now: float, address: str, rdns: RDNS | None, rules: DeferralRules) -> Trace:
    return Trace(now, address, confirmed_name(rdns), now + rules.retry_window)


def retry_elsewhere(
    trace: Trace | None, now: float, address: str, rules: DeferralRules
) -> Trace | None:
    """The first try of this message, when this attempt is its retry from another
    address: timed as a retry must be. None otherwise."""
    if trace is None or trace.address == address or now >= trace.expires:
        return None
    since = now - trace.first
    if rules.min_retry_delay <= since <= rules.retry_window:
        return trace
    return None


def same_host(trace: Trace, rdns: RDNS | None) -> bool:
    """Both addresses carry one forward-confirmed name: one host, two addresses."""
    name = confirmed_name(rdns)
    return bool(name) and trace.name == name


@value
class Proof:
    """Why a retry from another address was let in, for logs and explain."""

    kind: AttemptKind  # SAME_NAME, SPF_POOL or SPF_DOMAIN
    detail: str


def host_proof(trace: Trace, now: float) -> Proof:
    return Proof(
        AttemptKind.SAME_NAME,
        f"{trace.name} deferred at {trace.address} {now - trace.first:.0f} s ago",
    )


def pool_proof(domain: str, here: SPF, there: SPF, there_address: str) -> Proof | None:
    """SPF proves `domain` a pool when it passes narrowly at both addresses."""
    if not (narrow_pass(here) and narrow_pass(there)):
        return None
    return Proof(
        AttemptKind.SPF_POOL,
        f"SPF of {domain}: {here.describe()} here, {there.describe()} at {there_address}",
    )


def domain_proof(domain: str, pool: Pool | None, here: SPF, now: float) -> Proof | None:
    """A proven domain's mail passes from an address its SPF passes narrowly."""
    if pool is None or now >= pool.expires or not narrow_pass(here):
        return None
    return Proof(
        AttemptKind.SPF_DOMAIN,
        f"{domain} proven a pool {now - pool.since:.0f} s ago; SPF {here.describe()}",
    )


def proven(now: float, rules: DeferralRules, pool: Pool | None = None) -> Pool:
    """The Pool record after a proof or a use (keeps the first proof's time)."""
    since = pool.since if pool is not None and now < pool.expires else now
    return Pool(since, now, now + rules.familiar_ttl)


def pool_due(pool: Pool, now: float) -> bool:
    """Whether a use of a proven domain should write its record again."""
    return now - pool.last_seen >= POOL_REFRESH
