"""The decision order (README "How it decides"), from facts to verdict.

A connection is judged in stages as facts arrive:

1. `screen(address)`, before any DNS: trusted networks, then address entries of the deny
   and allow lists. Pure and instant, so the greeting can carry a 554 at once.
2. `before_greeting(screening, penalty, now)`: the penalty box (its record comes from the
   store, under the address key).
3. `assess(screening, rdns)`, once the PTR lookup is done: name entries of the deny and
   allow lists, then S25R, then the client key and whether the deferral procedure
   applies, and for which reason.
4. At RCPT, policy/rcpt.py's `decide`, the whole order in one pure function: the relay
   check (the SMTP session has checked the syntax), exempt recipients, the session's
   memory, `deferral_key` and `deferral.step` on the key's record (familiar records pass
   there), the proof of a pool (policy/proof.py), and what is left to write.

`Policy` holds everything derived from configuration and list files. It is immutable: a
reload (SIGHUP, a dynamic list change) builds a new one and swaps it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from gateway.policy import deferral, dnsbl, replies, strikes
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.keys import address_key, client_key, is_null_sender, triplet_key
from gateway.policy.lists import ClientList, ListEntry, Role
from gateway.policy.messages import RECIPIENTS_KEPT, Envelope, envelope
from gateway.policy.net import IPAddress, NetSet, address_text
from gateway.policy.recipients import AcceptDomains, ExemptRecipients, relay_check
from gateway.policy.records import Penalty, Record
from gateway.policy.replies import Reply
from gateway.policy.s25r import S25RClassifier, S25RResult
from gateway.policy.values import value
from gateway.policy.vocabulary import Action, DeferMode, DnsblAction, KeyMode, Reason


@value
class Verdict:
    action: Action
    reason: Reason
    reply: Reply | None = None
    detail: str = ""  # the list line, rule or record behind it, for logs and explain
    entry: ListEntry | None = None  # the allow or deny line behind it (explain --json)

    def at_data(self) -> Verdict:
        """The same deferral given at DATA (451), for the null sender."""
        if self.reply is None:
            return self
        return replace(self, reply=self.reply.with_code(451))


def decided_at_data(sender: str, verdict: Verdict) -> bool:
    """Whether the null sender's decision waits for DATA: a deferral, and anything else
    that would write its key's record. Sender-verification callbacks (MAIL FROM:<>
    RCPT TO:<x> QUIT) from servers we send to then succeed and leave nothing behind: a
    server verifying ten addresses is not a host retrying ten times."""
    return is_null_sender(sender) and (
        verdict.action in (Action.DEFER, Action.PENALTY) or verdict.reason is Reason.PROMOTED
    )


TRUSTED = Verdict(Action.PASS, Reason.TRUSTED, detail="policy.trusted_networks")
CLEAN = Verdict(Action.PASS, Reason.CLEAN)
DNS_TEMPFAIL = Verdict(Action.DEFER, Reason.DNS_TEMPFAIL, replies.DNS_TEMPFAIL)


def _dnswl(score: dnsbl.Score) -> Verdict:
    return Verdict(Action.PASS, Reason.DNSWL, detail=score.describe())


def _listed(action: Action, reason: Reason, entry: ListEntry) -> Verdict:
    reply = replies.denied(entry.reply) if action is Action.REJECT else None
    return Verdict(action, reason, reply, detail=str(entry), entry=entry)


@value
class Screening:
    """What is known from the address alone."""

    address: IPAddress
    address_text: str
    address_key: str
    verdict: Verdict | None  # trusted / deny / allow by address; None: go on


@value
class Assessment:
    """What is known once reverse DNS has answered (or failed)."""

    screening: Screening
    rdns: RDNS | None
    client_key: str
    verdict: Verdict | None  # settled without the store; None: the deferral procedure applies
    defer_reason: Reason | None = None  # why the deferral procedure applies
    s25r: S25RResult | None = None
    dnsbl: dnsbl.Score | None = None  # None: no lists configured, or not asked (not needed)

    @property
    def ptr(self) -> str:
        return (self.rdns.name if self.rdns else None) or ""


@value
class NameJudgement:
    """What the lists and S25R say about a set of PTR names, whatever the address."""

    deny: ListEntry | None
    allow: ListEntry | None
    s25r: S25RResult


NAME_MEMO_SIZE = 65536
# Why an address key can be in the penalty box (a reason this version does not know,
# written by a newer gateway on a shared store, reads as the oldest one).
_PENALTY_REASONS = {reason.value: reason for reason in (Reason.IMPATIENT, *strikes.REASONS)}


@dataclass(frozen=True, slots=True)
class Policy:
    trusted: NetSet[str]
    allow: ClientList
    deny: ClientList
    classifier: S25RClassifier
    accept_domains: AcceptDomains
    rules: deferral.DeferralRules = deferral.DeferralRules()
    defer_mode: DeferMode = DeferMode.SUSPECT
    key_mode: KeyMode = KeyMode.CLIENT
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    lump_by_rdns: bool = True
    dynamic_allow: ClientList = ClientList(Role.ALLOW)
    dynamic_deny: ClientList = ClientList(Role.DENY)
    strike_rules: strikes.StrikeRules = strikes.StrikeRules()
    exempt_recipients: ExemptRecipients = ExemptRecipients()
    dnsbl_rules: dnsbl.DnsblRules = dnsbl.DnsblRules()
    # Judgements of PTR names against these lists: a pure function of the names, asked
    # again for every connection of a returning host. Private to this policy object, so
    # a reload (which builds a new Policy) can never serve a stale judgement.
    name_memo: dict = field(default_factory=dict, compare=False, repr=False)
    # Whether a deny verdict can depend on the PTR name (then the greeting waits for it):
    # asked at every connection, so computed once.
    deny_has_names: bool = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        names = self.deny.has_name_entries or self.dynamic_deny.has_name_entries
        object.__setattr__(self, "deny_has_names", names)

    def with_dynamic(self, allow: ClientList, deny: ClientList) -> Policy:
        """The same policy with a fresh copy of the store's dynamic list entries."""
        return replace(self, dynamic_allow=allow, dynamic_deny=deny, name_memo={})

    # -- stage 1 -------------------------------------------------------------------------
    def screen(self, address: IPAddress) -> Screening:
        text = address_text(address)
        key = address_key(address, self.ipv4_prefix, self.ipv6_prefix, text)
        if self.trusted.lookup(address) is not None:
            return Screening(address, text, key, TRUSTED)
        for deny in (self.deny, self.dynamic_deny):
            entry = deny.match_address(address, text)
            if entry is not None:
                return Screening(address, text, key, _listed(Action.REJECT, Reason.DENYLIST, entry))
        for allow in (self.allow, self.dynamic_allow):
            entry = allow.match_address(address, text)
            if entry is not None:
                return Screening(address, text, key, _listed(Action.PASS, Reason.ALLOWLIST, entry))
        return Screening(address, text, key, None)

    # -- stage 2 -------------------------------------------------------------------------
    def before_greeting(
        self, screening: Screening, penalty: Penalty | None, now: float
    ) -> Verdict | None:
        """Trusted and deny go first; then the penalty box; then allow (README "How it decides")."""
        verdict = screening.verdict
        if verdict is not None and verdict.reason in (Reason.TRUSTED, Reason.DENYLIST):
            return verdict
        if penalty is not None and now < penalty.expires:
            reason = _PENALTY_REASONS.get(penalty.reason, Reason.IMPATIENT)
            return Verdict(
                Action.PENALTY,
                reason,
                self.rules.wording.penalty(penalty.expires - now, reason.value),
                detail=f"penalty box until {penalty.expires:.0f}",
            )
        return verdict

    # -- stage 3 -------------------------------------------------------------------------
    def assess(
        self, screening: Screening, rdns: RDNS | None, score: dnsbl.Score | None = None
    ) -> Assessment:
        """`score`: the DNS lists' answer (policy/dnsbl.py), None when none were asked."""
        key = screening.address_key
        if screening.verdict is not None:
            return Assessment(screening, rdns, key, screening.verdict)
        lists = self.dnsbl_rules
        allowlisted = score is not None and lists.allowlisted(score)
        if rdns is None or rdns.status is RDNSStatus.TEMPFAIL:
            if allowlisted:  # the allow list vouches for the address, names or not
                return Assessment(screening, rdns, key, _dnswl(score), dnsbl=score)
            # Not a verdict: the caller may still find a familiar record under the address
            # key, and otherwise answers 451 4.4.3.
            return Assessment(screening, rdns, key, DNS_TEMPFAIL, dnsbl=score)
        judged = self.judge_names(rdns)
        if judged.deny is not None:
            deny = _listed(Action.REJECT, Reason.DENYLIST, judged.deny)
            return Assessment(screening, rdns, key, deny, dnsbl=score)
        if judged.allow is not None:
            allow = _listed(Action.PASS, Reason.ALLOWLIST, judged.allow)
            return Assessment(screening, rdns, key, allow, dnsbl=score)
        if allowlisted:
            return Assessment(screening, rdns, key, _dnswl(score), dnsbl=score)
        s25r = self.classifier.classify_address(screening.address, screening.address_text, rdns)
        if s25r is None:
            s25r = judged.s25r
        confirmed = s25r.name if rdns.status is RDNSStatus.CONFIRMED else None
        key = client_key(key, confirmed, s25r.suspect, self.lump_by_rdns)
        if score is not None and lists.listed(score) and lists.action is not DnsblAction.IGNORE:
            if lists.action is DnsblAction.REJECT:
                reply = replies.dnsbl_refusal(screening.address_text, lists.shown(score))
                verdict = Verdict(Action.REJECT, Reason.DNSBL, reply, detail=score.describe())
                return Assessment(screening, rdns, key, verdict, None, s25r, score)
            # A suspect like any other, under its usual key: a familiar host (its domain's
            # record, when lumped) still passes, and a new one waits like an S25R suspect.
            return Assessment(screening, rdns, key, None, Reason.DNSBL, s25r, score)
        if s25r.suspect:
            return Assessment(screening, rdns, key, None, s25r.reason, s25r, score)
        if self.defer_mode is DeferMode.SUSPECT:
            return Assessment(screening, rdns, key, CLEAN, None, s25r, score)
        reason = Reason.GREYLIST if self.key_mode is KeyMode.TRIPLET else Reason.ICHIGEN
        return Assessment(screening, rdns, key, None, reason, s25r, score)

    def judge_names(self, rdns: RDNS) -> NameJudgement:
        """Deny entry (any PTR name), allow entry (confirmed names only), S25R: memoised."""
        memo_key = (rdns.status, rdns.ptr_names, rdns.confirmed)
        judged = self.name_memo.get(memo_key)
        if judged is not None:
            return judged
        deny = self.deny.match_names(rdns.ptr_names) or self.dynamic_deny.match_names(
            rdns.ptr_names
        )
        allow = None
        if deny is None:  # unconfirmed names are no one's friend
            allow = self.allow.match_names(rdns.confirmed) or self.dynamic_allow.match_names(
                rdns.confirmed
            )
        judged = NameJudgement(deny, allow, self.classifier.classify_names(rdns))
        if len(self.name_memo) >= NAME_MEMO_SIZE:
            self.name_memo.clear()  # bounded; a clean restart beats LRU bookkeeping per hit
        self.name_memo[memo_key] = judged
        return judged

    # -- stage 4 -------------------------------------------------------------------------
    def relay_check(self, recipient: str) -> Verdict | None:
        """554 5.7.1 for mail that is not ours: before any deferral, so probes get a 5xx."""
        refusal = relay_check(recipient, self.accept_domains)
        if refusal is None:
            return None
        return Verdict(Action.REJECT, Reason.RELAY_DENIED, refusal, detail=recipient)

    def exempt(self, recipient: str) -> Verdict | None:
        """A pass for a recipient that is never deferred (policy.exempt_recipients);
        the caller has run the relay check first."""
        if not self.exempt_recipients:
            return None
        entry = self.exempt_recipients.exempt(recipient)
        if entry is None:
            return None
        return Verdict(Action.PASS, Reason.EXEMPT, detail=f"policy.exempt_recipients: {entry}")

    def deferral_key(self, assessment: Assessment, sender: str, recipient: str) -> str:
        if self.key_mode is KeyMode.TRIPLET:
            return triplet_key(assessment.client_key, sender, recipient)
        return assessment.client_key

    def attempt(
        self,
        assessment: Assessment,
        sender: str,
        recipient: str,
        place: str = "",
        size: int | None = None,
    ) -> deferral.Attempt:
        """What the deferral procedure needs to tell a retry from the next message."""
        return deferral.Attempt(
            envelope(sender, recipient, size),
            place,
            judge_pace=assessment.client_key == assessment.screening.address_key,
        )

    def step(
        self,
        assessment: Assessment,
        record,
        now: float,
        attempt: deferral.Attempt = deferral.UNKNOWN,
    ) -> deferral.Step:
        """The deferral procedure for a deferrable client (assessment.defer_reason set)."""
        assert assessment.defer_reason is not None
        return deferral.step(
            record,
            now,
            self.rules,
            assessment.defer_reason,
            client=assessment.screening.address_text,
            ptr=assessment.ptr,
            attempt=attempt,
        )


@value
class RcptDecision:
    """The RCPT-stage decision for one recipient (decider.py gathers the facts for it)."""

    verdict: Verdict
    key: str = ""  # the deferral key the verdict was reached under ("" if none)
    step: deferral.Step | None = None
    record_kind: str = ""  # what the store held under the key, for explain
    repeated: bool = False  # the session's earlier decision for this key, given again
    record: Record | None = None  # dry runs: the record the decision started from
    # What the SMTP session keeps afterwards (SessionDecisions.keep): the decider
    # returns it, the session core keeps it. None: nothing new to keep.
    remember: Remember | None = None


@dataclass(frozen=True, slots=True)
class Remember:
    """A decision the session keeps under its deferral key, with the attempt as the
    session made it (policy/rcpt.py's Ruling says what)."""

    key: str
    decision: RcptDecision
    attempt: deferral.Attempt


@dataclass(slots=True)
class KeyInSession:
    """What one SMTP session has had decided under one deferral key."""

    transaction: int  # the transaction `decision` was given in
    decision: RcptDecision
    envelope: Envelope | None  # that transaction's, with every recipient judged so far
    earlier: list[Envelope]  # the session's earlier transactions' under this key


class SessionDecisions:
    """The decisions of one SMTP session, by deferral key (decider.at_rcpt).

    The recipients of one transaction are one attempt: the first one's decision goes for
    the rest; while it is a deferral, each further recipient (up to RECIPIENTS_KEPT)
    joins the message remembered (a retry may carry only some of them), and may find
    the retry that promotes. A pass goes for the rest of the session. A deferral does
    not: each later transaction is a message of its own (no MTA retries a message twice
    in a session), judged again, knowing what the session brought before
    (deferral.Attempt.earlier). The session moves `transaction` on at each MAIL.
    """

    __slots__ = ("keys", "transaction")

    def __init__(self) -> None:
        self.transaction = 0
        self.keys: dict[str, KeyInSession] = {}

    def given(self, key: str, attempt: deferral.Attempt) -> RcptDecision | None:
        """The decision that goes for this recipient as it is; None: judge `attempt`
        (after `attempt(key, ...)` has made it what this session makes it)."""
        held = self.keys.get(key)
        if held is None:
            return None
        decision = held.decision
        if held.transaction == self.transaction:
            if _joins(held, decision, attempt.envelope):
                return None
            return replace(decision, repeated=True)
        if decision.verdict.action is not Action.PASS or decision.verdict.reason is Reason.POOL:
            return None  # a pool's pass is its sender domain's: the next sender is judged
        if decision.verdict.reason is Reason.PROMOTED:  # one promotion; familiar since
            verdict = Verdict(Action.PASS, Reason.FAMILIAR, detail="promoted in this session")
            return RcptDecision(verdict, key, record_kind="familiar", repeated=True)
        return replace(decision, repeated=True)

    def attempt(self, key: str, attempt: deferral.Attempt) -> deferral.Attempt:
        """The attempt as this session makes it: a further recipient of its transaction,
        or a later transaction."""
        held = self.keys.get(key)
        if held is None:
            return attempt
        env = attempt.envelope
        if held.transaction == self.transaction and held.envelope is not None and env:
            joined = held.envelope.with_recipient(env.recipients[0])
            return replace(attempt, envelope=joined, earlier=tuple(held.earlier), more=True)
        earlier = (*held.earlier, held.envelope) if held.envelope is not None else held.earlier
        return replace(attempt, earlier=tuple(earlier))

    def keep(self, result: RcptDecision) -> None:
        """What a decision says to keep (its `remember`), kept under its key."""
        memo = result.remember
        if memo is None:
            return
        env = memo.attempt.envelope
        held = self.keys.get(memo.key)
        if held is None:
            self.keys[memo.key] = KeyInSession(self.transaction, memo.decision, env, [])
            return
        if held.transaction != self.transaction:
            if held.envelope is not None:
                held.earlier.append(held.envelope)
            held.transaction = self.transaction
        held.decision, held.envelope = memo.decision, env


def _joins(held: KeyInSession, decision: RcptDecision, env: Envelope | None) -> bool:
    """Whether a further recipient of a deferred transaction is judged (joins the
    message remembered) rather than given the transaction's decision."""
    mine = held.envelope
    return (
        decision.step is not None
        and decision.verdict.action is Action.DEFER
        and mine is not None
        and env is not None
        and len(mine.recipients) < RECIPIENTS_KEPT
        and env.recipients[0] not in mine.recipients
    )


# The setting behind a reason whose word is not the setting's own (both words are
# fixed: the metric label dashboards use and the config value), named in the decision
# line's `detail=`.
SETTING_BEHIND = {
    Reason.ICHIGEN: 'policy.defer = "all"',
    Reason.GREYLIST: 'policy.key = "triplet"',
}


def verdict_of(step: deferral.Step) -> Verdict:
    detail = SETTING_BEHIND.get(step.reason, "") if step.action is Action.DEFER else ""
    return Verdict(step.action, step.reason, step.reply, detail)
