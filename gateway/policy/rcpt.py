"""The RCPT decision, in one place: a pure function of the facts gathered so far.

Everything the gateway decides about a recipient happens in `decide`, in this order:

    1. the relay check (5xx before anything else: never an open relay)
    2. exempt recipients (postmaster@ and the like: before any deferral)
    3. an early verdict (allow or deny list, clean host, DNS lists): it stands, except a
       DNS failure, which still lets a familiar client key through
    4. the session's memory: the recipients of one transaction are one attempt; a pass
       goes for the session (SessionDecisions)
    5. the client key's familiar record (DNS failure, or triplet mode)
    6. the deferral procedure on the key's record (deferral.step: promote, defer, count,
       the penalty box), applied atomically by the store
    7. for a deferred message new to its key: the proof of a pool (policy/proof.py) from
       its trace, the sender domain's pool record and SPF
    8. what the step leaves to write: the penalty box, triplet mode's count

Facts arrive one kind at a time, as the decision needs them: `decide` returns either a
`Ruling` (the decision and the store writes it leaves) or a need (`ReadClient`,
`UpdateKey`, `ReadProof`, `AskSpf`) for decider.py to fetch, after which `decide` runs
again with one fact more. Nothing here awaits or touches the store, DNS or a clock:
decider.py reads keys and applies writes, and the SMTP server, `onajimi explain` and
the simulator all come through it. Re-running the few steps up to the missing fact costs
microseconds; a first contact needs two rounds (the key's update with its trace and pool
along, when the read ahead at connect found nothing; the ruling) or three, a familiar
client one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from gateway.policy import deferral, proof
from gateway.policy.decision import (
    Assessment,
    Policy,
    RcptDecision,
    SessionDecisions,
    Verdict,
    verdict_of,
)
from gateway.policy.facts import SPF
from gateway.policy.records import Familiar, Pool, Record, Space, Trace, store_key
from gateway.policy.values import value
from gateway.policy.vocabulary import Action, KeyMode, Reason, Retry


class _Unread:
    """A fact not fetched yet (None is a fact: nothing there)."""

    def __repr__(self) -> str:
        return "UNREAD"


UNREAD = _Unread()


def defer_key(key: str) -> str:
    return store_key(Space.DEFER, key)


# -- what decide() may ask for --------------------------------------------------------------
@value
class Prepared:
    """Steps 1-4 done for this recipient: the key and the attempt as the session makes it
    (every need carries it back, so that the next round starts from there)."""

    key: str
    attempt: deferral.Attempt


@value
class ReadClient:
    """The client key's record (is it familiar?)."""

    key: str  # the store key
    prepared: Prepared | None = None


@value
class ReadProof:
    """The message's trace, claimed (put-if-absent: `trace` is written when none lives;
    a dry run only reads), and the sender domain's pool record (when SPF can be asked)."""

    trace_key: str
    trace: Trace
    pool_key: str | None
    prepared: Prepared | None = None


@value
class UpdateKey:
    """Apply `change` to the record under `key` atomically; the Step it returns is the
    next fact. `snapshot`: the record read ahead at connect may stand in for the read.
    `proof`: when the read ahead found nothing there (a first deferral, certainly a new
    message), the trace to claim along, at once (one batch, or one round trip less)."""

    key: str  # the store key
    change: Callable[[Record | None], deferral.Step]
    snapshot: bool
    proof: ReadProof | None = None
    prepared: Prepared | None = None


@value
class AskSpf:
    """SPF for `domain` at `address` (one at a time: the second only if the first passes)."""

    domain: str
    address: str
    prepared: Prepared | None = None


Need = ReadClient | UpdateKey | ReadProof | AskSpf


# -- what it decides ------------------------------------------------------------------------
@value
class Put:
    key: str
    record: Record


@value
class Change:
    """A read-modify-write another key needs (None from `change`: leave it as it is)."""

    key: str
    change: Callable[[Record | None], Record | None]


@value
class Ruling:
    decision: RcptDecision
    writes: tuple[Put | Change, ...] = ()
    # What the session remembers under the deferral key `key` afterwards (None: nothing
    # new), with the attempt as the session made it.
    remember: RcptDecision | None = None
    key: str = ""
    attempt: deferral.Attempt | None = None


@dataclass(slots=True)
class Facts:
    """What is known so far about one recipient's decision. `decide` only reads it;
    decider.py adds each fact it fetches (in place: a copy per round cost more than the
    rest of the round)."""

    assessment: Assessment
    sender: str
    recipient: str
    now: float
    place: str = ""
    size: int | None = None
    session: SessionDecisions | None = None  # read only: what to keep returns in the decision
    spf: bool = False  # whether SPF can be asked at all
    dry_run: bool = False
    ahead: Record | _Unread | None = UNREAD  # the client key's record read at connect
    prepared: Prepared | None = None  # steps 1-4 done (see Prepared)
    client: Record | _Unread | None = UNREAD
    step: deferral.Step | None = None  # the key's update, once applied
    record: Record | _Unread | None = UNREAD  # dry runs: the key's record as read
    trace: Record | _Unread | None = UNREAD  # the live trace found (None: ours now)
    pool: Record | _Unread | None = UNREAD
    checked: dict[str, SPF] = field(default_factory=dict)  # SPF by address


def decide(policy: Policy, facts: Facts) -> Ruling | Need:
    """The decision for `facts.recipient`, or the next fact it needs (see the module
    docstring for the order)."""
    assessment, sender = facts.assessment, facts.sender
    verdict = assessment.verdict
    prepared = facts.prepared
    if prepared is None:
        early = _early(policy, facts)
        if isinstance(early, Ruling):
            return early
        prepared = early
    key, attempt = prepared.key, prepared.attempt
    session = facts.session
    client_key = assessment.client_key
    if verdict is not None or key != client_key:
        # DNS failed (a familiar record under the address key still passes), or triplet
        # mode (a familiar client key passes every triplet): look at the client first.
        if facts.client is UNREAD:
            return ReadClient(defer_key(client_key), prepared)
        familiar = _familiar(facts.client, client_key, facts.now)
        if familiar is not None:
            return Ruling(familiar)
        if verdict is not None:
            return Ruling(RcptDecision(verdict, client_key))

    step = facts.step
    if step is None:
        now = facts.now

        def change(record: Record | None) -> deferral.Step:
            return policy.step(assessment, record, now, attempt)

        hint = key == client_key and not attempt.more
        along = None
        if hint and facts.ahead is None and proof.sender_domain(sender):
            along = _read_proof(policy, facts, attempt)
        return UpdateKey(defer_key(key), change, hint, along, prepared)

    found = _proof(policy, facts, prepared, step)
    if found is not None:
        return found
    if attempt.more and step.action is Action.DEFER and session is not None:
        # A further recipient joined the transaction's message: its decision stands.
        held = session.keys[key].decision
        return Ruling(replace(held, repeated=True), (), held, key, attempt)
    writes: list[Put | Change] = []
    if step.penalty is not None:
        writes.append(Put(store_key(Space.PENALTY, assessment.screening.address_key), step.penalty))
    if step.reason is Reason.PROMOTED and policy.key_mode is KeyMode.TRIPLET:
        rules, now = policy.rules, facts.now
        writes.append(
            Change(defer_key(client_key), lambda record: deferral.count_pass(record, now, rules))
        )
    decision = _with_record(facts, RcptDecision(verdict_of(step), key, step))
    return Ruling(decision, tuple(writes), decision, key, attempt)


def _early(policy: Policy, facts: Facts) -> Ruling | Prepared:
    """Steps 1-4: the relay check, exempt recipients, an early verdict, the session's
    memory; what is left to decide starts from the Prepared key and attempt."""
    assessment, recipient, sender = facts.assessment, facts.recipient, facts.sender
    refused = policy.relay_check(recipient)
    if refused is not None:
        return Ruling(RcptDecision(refused))
    verdict = assessment.verdict
    if verdict is None or verdict.reason is not Reason.DENYLIST:
        exempt = policy.exempt(recipient)  # before any deferral, DNS trouble included
        if exempt is not None:
            return Ruling(RcptDecision(exempt))
    if verdict is not None and verdict.reason is not Reason.DNS_TEMPFAIL:
        return Ruling(RcptDecision(verdict))
    key = policy.deferral_key(assessment, sender, recipient)
    attempt = policy.attempt(assessment, sender, recipient, facts.place, facts.size)
    session = facts.session
    if session is not None:
        given = session.given(key, attempt)
        if given is not None:
            return Ruling(given)
        attempt = session.attempt(key, attempt)
    return Prepared(key, attempt)


def _read_proof(
    policy: Policy, facts: Facts, attempt: deferral.Attempt, prepared: Prepared | None = None
) -> ReadProof:
    assert attempt.envelope is not None
    assessment = facts.assessment
    trace_key = store_key(Space.TRACE, proof.trace_key(attempt.envelope, facts.recipient))
    trace = proof.new_trace(
        facts.now, assessment.screening.address_text, assessment.rdns, policy.rules
    )
    pool_key = store_key(Space.POOL, proof.sender_domain(facts.sender))
    return ReadProof(trace_key, trace, pool_key if facts.spf else None, prepared)


def _familiar(record: Record | None, client_key: str, now: float) -> RcptDecision | None:
    if isinstance(record, Familiar) and now < record.expires:
        verdict = Verdict(Action.PASS, Reason.FAMILIAR, detail=f"familiar since {record.since:.0f}")
        return RcptDecision(verdict, client_key, record_kind="familiar")
    return None


def _with_record(facts: Facts, decision: RcptDecision) -> RcptDecision:
    """A dry run's decision carries the record it started from (explain shows it)."""
    if not facts.dry_run or isinstance(facts.record, _Unread):
        return decision
    record = facts.record
    kind = type(record).__name__.lower() if record is not None else "none"
    return replace(decision, record_kind=kind, record=record)


def _proof(
    policy: Policy, facts: Facts, prepared: Prepared, step: deferral.Step
) -> Ruling | Need | None:
    """Step 7: a deferred message new to its key may be a pool's retry from another
    address, or mail of a domain proven a pool. None: no proof, the step stands."""
    sender = facts.sender
    key, attempt = prepared.key, prepared.attempt
    if step.action is not Action.DEFER or attempt.envelope is None:
        return None
    if not proof.traceable(step.kind, sender):
        return None
    rules, now = policy.rules, facts.now
    assessment = facts.assessment
    address = assessment.screening.address_text
    domain = proof.sender_domain(sender)
    pool_key = store_key(Space.POOL, domain)
    if facts.trace is UNREAD:
        return _read_proof(policy, facts, attempt, prepared)
    pool = facts.pool if isinstance(facts.pool, Pool) else None
    if pool is not None and now < pool.expires:
        if address not in facts.checked:
            return AskSpf(domain, address, prepared)
        found = proof.domain_proof(domain, pool, facts.checked[address], now)
        if found is not None:
            used = Put(pool_key, proof.proven(now, rules, pool))
            writes = (used,) if proof.pool_due(pool, now) else ()
            return _proven(facts, found, Reason.POOL, step, attempt, key, writes)
    first = facts.trace if isinstance(facts.trace, Trace) else None
    elsewhere = proof.retry_elsewhere(first, now, address, rules)
    if elsewhere is None:
        return None
    if proof.same_host(elsewhere, assessment.rdns):
        promoted = (Put(defer_key(key), deferral.promoted(now, rules)),)
        found = proof.host_proof(elsewhere, now)
        return _proven(facts, found, Reason.PROMOTED, step, attempt, key, promoted)
    if not facts.spf:
        return None
    # Here first: most retries from elsewhere that get this far are a botnet's, and a
    # failure here spares the check there.
    if address not in facts.checked:
        return AskSpf(domain, address, prepared)
    here = facts.checked[address]
    if not proof.narrow_pass(here):
        return None
    if elsewhere.address not in facts.checked:
        return AskSpf(domain, elsewhere.address, prepared)
    there = facts.checked[elsewhere.address]
    found = proof.pool_proof(domain, here, there, elsewhere.address)
    if found is None:
        return None
    writes = (Put(pool_key, proof.proven(now, rules, pool)),)
    return _proven(facts, found, Reason.POOL, step, attempt, key, writes)


def _proven(
    facts: Facts,
    found: proof.Proof,
    reason: Reason,
    step: deferral.Step,
    attempt: deferral.Attempt,
    key: str,
    writes: tuple[Put | Change, ...],
) -> Ruling:
    """The pass a proof earns: the step's deferral turned into a pass, saying why. A
    pool's pass is its sender domain's, under the client key; one host's promotes `key`."""
    retry = None if found.kind is deferral.AttemptKind.SPF_DOMAIN else Retry.PROMOTED
    passed = replace(
        step,
        action=Action.PASS,
        reason=reason,
        reply=None,
        retry=retry,
        wait=0.0,
        kind=found.kind,
        proof=found.detail,
    )
    verdict = Verdict(Action.PASS, reason, detail=found.detail)
    shown = key if reason is Reason.PROMOTED else facts.assessment.client_key
    decision = _with_record(facts, RcptDecision(verdict, shown, passed))
    return Ruling(decision, writes, decision, key, attempt)
