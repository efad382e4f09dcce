"""`onajimi explain IP`: the decision the gateway would make now, and why. Changes nothing.

It walks the same Decider calls as an SMTP session (connect, reverse DNS, RCPT), reading
the store but never writing it, and prints each fact that went into the verdict.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from gateway.assembly import build_policy, dynamic_list
from gateway.cli.common import print_json, print_table, settings_from, timestamp, with_store
from gateway.config import Settings
from gateway.decider import Decider
from gateway.errors import UserError
from gateway.policy import dnsbl, strikes
from gateway.policy.decision import Policy, Verdict, decided_at_data
from gateway.policy.deferral import AttemptKind, Step
from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.lists import ListEntry, Role
from gateway.policy.messages import describe_match
from gateway.policy.net import client_address
from gateway.policy.proof import sender_domain
from gateway.policy.recipients import recipient_syntax
from gateway.policy.records import (
    Penalty,
    Pending,
    Pool,
    Pregreet,
    Record,
    Space,
    Strikes,
    store_key,
)
from gateway.policy.s25r import RULES, S25RResult
from gateway.policy.vocabulary import Action
from gateway.resolver.resolver import Resolver
from gateway.store.base import Store


def _address(text: str):
    try:
        return client_address(text)
    except ValueError:
        raise UserError(f"{text!r} is not an IP address") from None


async def _policy_with_dynamic(policy: Policy, store: Store) -> Policy:
    allow = [(e.text, e.comment) for e in await store.entries(Role.ALLOW.value)]
    deny = [(e.text, e.comment) for e in await store.entries(Role.DENY.value)]
    return policy.with_dynamic(dynamic_list(allow, Role.ALLOW), dynamic_list(deny, Role.DENY))


def _verdict(verdict: Verdict) -> dict[str, Any]:
    return {
        "action": verdict.action.value,
        "reason": verdict.reason.value,
        "reply": str(verdict.reply) if verdict.reply else "250 (passes)",
        "detail": verdict.detail,
    }


# -- explain --json: the same facts, typed -------------------------------------------------
def _typed_verdict(verdict: Verdict, stage: str) -> dict[str, Any]:
    """The decision: what a client would get, and the list line behind it if any."""
    return {
        "stage": stage,
        "action": verdict.action.value,
        "reason": verdict.reason.value,
        "reply": str(verdict.reply) if verdict.reply else None,
        "detail": verdict.detail,
        "list": _typed_entry(verdict.entry, verdict.reason.value),
    }


def _typed_entry(entry: ListEntry | None, reason: str) -> dict[str, Any] | None:
    if entry is None:
        return None
    # Only allow and deny verdicts carry their line (a blacklist line is in `s25r`).
    kind = {"denylist": "deny", "allowlist": "allow"}
    return {"list": kind[reason], "source": entry.source, "entry": entry.text}


def _typed_fcrdns(rdns: RDNS, given: bool) -> dict[str, Any]:
    """confirmed (a PTR name resolves back), mismatch (PTR names, none resolving back),
    none (no PTR name), tempfail (DNS did not answer: not a verdict)."""
    if rdns.status is RDNSStatus.CONFIRMED:
        status = "confirmed"
    elif rdns.status is RDNSStatus.TEMPFAIL:
        status = "tempfail"
    else:
        status = "mismatch" if rdns.ptr_names else "none"
    return {
        "status": status,
        "given": given,
        "ptr": list(rdns.ptr_names),
        "confirmed": list(rdns.confirmed),
        "detail": rdns.detail,
    }


def _typed_s25r(result: S25RResult) -> dict[str, Any]:
    pattern = RULES.get(result.rule) if result.rule is not None else None
    entry = result.entry
    return {
        "suspect": result.suspect,
        "reason": result.reason.value if result.reason is not None else None,
        "rule": result.rule,
        "pattern": pattern.pattern if pattern is not None else None,
        "source": entry.source if entry is not None else None,
        "entry": entry.text if entry is not None else None,
        "name": result.name,
    }


def _typed_dnsbl(score: dnsbl.Score, rules: dnsbl.DnsblRules) -> dict[str, Any]:
    return {
        "score": score.total,
        "listed": rules.listed(score),
        "allowlisted": rules.allowlisted(score),
        "threshold": rules.threshold,
        "allowlist_threshold": rules.allowlist_threshold,
        "action": rules.action,
        "fired": [
            {
                "site": f.site.text,
                "domain": f.site.domain,
                "weight": f.site.weight,
                "replies": list(f.replies),
            }
            for f in score.fired
        ],
        "no_answer": list(score.failed),
    }


def _typed_record(record: Record | None, kind: str) -> dict[str, Any]:
    """The store's record under the deferral key, times as epoch seconds."""
    if record is None:
        return {"kind": kind or "none"}
    out: dict[str, Any] = {"kind": type(record).__name__.lower()}
    for f in fields(record):
        value = getattr(record, f.name)
        out[f.name] = len(value) if f.name == "messages" else value
    return out


def _record(record: Record | None, impatient_retries: int) -> str:
    """A pending record with the counts that matter: attempts, and counted early retries."""
    if not isinstance(record, Pending):
        return ""
    limit = f" of {impatient_retries}" if impatient_retries else ""
    return (
        f"pending since {timestamp(record.first_seen)} ({record.reason}): "
        f"{record.attempts} attempt(s), early retries counted {record.early}{limit}, "
        f"{len(record.memory())} message(s) remembered"
    )


def _strikes(record: Strikes, limit: int) -> str:
    of = f" of {limit}" if limit else ""
    return (
        f"{record.count}{of} since {timestamp(record.first)}, "
        f"counted until {timestamp(record.expires)}"
    )


def _attempt(step: Step, impatient_retries: int) -> str:
    """How an attempt now would be judged (deferral.AttemptKind), and where that leaves the key."""
    counted = f"counts: early retries {step.early}" if step.kind.counted else "not counted"
    limit = f" of {impatient_retries}" if impatient_retries and step.kind.counted else ""
    return f"{step.kind.value} ({counted}{limit})"


async def _explain(
    settings: Settings, args: Any, store: Store
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the text rows, the typed facts for --json): the same walk, two renderings."""
    address = _address(args.ip)
    policy = await _policy_with_dynamic(build_policy(settings), store)
    # DNS is asked unless --name gives the PTR; the DNS lists, if any, are asked anyway.
    asks = not args.name or bool(settings.dnsbl.sites)
    resolver = Resolver.from_settings(settings.dns) if asks else None
    decider = Decider(lambda: policy, store, resolver)
    sender = args.sender if args.sender is not None else "someone@example.net"
    # Assumed: an ordinary mailbox (postmaster@ would be exempt: the least telling case).
    recipient = args.rcpt or f"someone@{settings.relay.accept_domains[0].lstrip('.')}"
    out: dict[str, Any] = {
        "client": str(address),
        "sender": f"<{sender}>" + ("" if args.sender is not None else " (assumed)"),
        "recipient": f"<{recipient}>" + ("" if args.rcpt else " (assumed)"),
    }
    typed: dict[str, Any] = {
        "client": str(address),
        "sender": {"address": sender, "assumed": args.sender is None},
        "recipient": {"address": recipient, "assumed": not args.rcpt},
        "helo": args.helo or None,
        "size": args.size,
    }
    if args.helo:
        out["helo"] = args.helo
    try:
        connect = await decider.at_connect(address)
        screening = connect.screening
        out["address_key"] = screening.address_key
        typed["address_key"] = screening.address_key
        typed["penalty"] = None
        if isinstance(connect.penalty, Penalty):
            penalty = connect.penalty
            out["penalty"] = f"until {timestamp(penalty.expires)} ({penalty.reason})"
            typed["penalty"] = _typed_record(penalty, "penalty")
        typed["pregreet"] = None
        talked = await store.get(store_key(Space.PREGREET, screening.address_text))
        if isinstance(talked, Pregreet):
            action = settings.pregreet.action
            out["pregreet"] = (
                f"talked before the greeting at {timestamp(talked.since)}; until "
                f"{timestamp(talked.expires)} every connection meets pregreet.action = {action}"
            )
            typed["pregreet"] = {**_typed_record(talked, "pregreet"), "action": action}
        typed["strikes"] = {}
        for reason in strikes.REASONS:
            stored = f"{screening.address_key}/{reason.value}"
            record = await store.get(store_key(Space.STRIKES, stored))
            if isinstance(record, Strikes):
                limit = policy.strike_rules.of(reason).limit
                out[f"strikes ({reason.value})"] = _strikes(record, limit)
                typed["strikes"][reason.value] = {
                    **_typed_record(record, "strikes"),
                    "limit": limit,
                }
        if connect.verdict is not None and connect.verdict.action is not Action.PASS:
            out["stage"] = "connect (before the greeting)"
            out["decision"] = _verdict(connect.verdict)
            typed["decision"] = _typed_verdict(connect.verdict, "connect")
            return out, typed

        rdns = RDNS.assumed(args.name) if args.name else None
        assessment = await decider.assess(screening, rdns)
        typed["fcrdns"] = typed["s25r"] = None
        if assessment.rdns is not None:
            r = assessment.rdns
            out["ptr"] = ", ".join(r.ptr_names) or "none"
            out["fcrdns"] = f"{r.status.value} ({r.detail})" if r.detail else r.status.value
            typed["fcrdns"] = _typed_fcrdns(r, given=bool(args.name))
        typed["dnsbl"] = None
        if assessment.dnsbl is not None:
            out["dnsbl"] = assessment.dnsbl.describe()
            typed["dnsbl"] = _typed_dnsbl(assessment.dnsbl, policy.dnsbl_rules)
        if assessment.s25r is not None:
            out["s25r"] = assessment.s25r.describe()
            typed["s25r"] = _typed_s25r(assessment.s25r)
        out["client_key"] = assessment.client_key
        typed["client_key"] = assessment.client_key

        syntax = recipient_syntax(recipient)
        if syntax is not None:
            out["stage"] = "RCPT"
            out["decision"] = {"action": "reject", "reason": "syntax", "reply": str(syntax)}
            # Not a policy Reason: the SMTP session refuses the address before the policy.
            typed["decision"] = {
                "stage": "rcpt",
                "action": "reject",
                "reason": None,
                "reply": str(syntax),
                "detail": "recipient syntax",
                "list": None,
            }
            return out, typed
        decision = await decider.at_rcpt(
            assessment, sender, recipient, dry_run=True, size=args.size
        )
        typed["deferral_key"] = decision.key or None
        typed["record"] = typed["this_attempt"] = None
        if decision.key:
            out["deferral_key"] = decision.key
            limit = settings.policy.impatient_retries
            out["record"] = _record(decision.record, limit) or decision.record_kind or "none"
            typed["record"] = _typed_record(decision.record, decision.record_kind)
        if decision.step is not None and decision.step.kind is not None:
            out["this_attempt"] = _attempt(decision.step, settings.policy.impatient_retries)
            step = decision.step
            typed["this_attempt"] = {
                "kind": step.kind.value,
                "counted": step.kind.counted,
                "early": step.early,
                "impatient_retries": settings.policy.impatient_retries,
            }
            if args.size is None and decision.step.kind is AttemptKind.NEW_MESSAGE:
                # Most MTAs declare SIZE, and it is part of what makes a message the same.
                out["this_attempt"] += "; --size N judges a real MTA's message"
        if isinstance(decision.record, Pending):
            env = policy.attempt(assessment, sender, recipient, "", args.size).envelope
            matched = describe_match(decision.record.memory(), env, decider.clock())
            out["message"] = matched
            typed["message"] = matched
        typed["proof"] = (decision.step.proof or None) if decision.step is not None else None
        if decision.step is not None and decision.step.proof:
            out["proof"] = f"{decision.step.kind.value}: {decision.step.proof}"
        domain = sender_domain(sender)
        pool = await store.get(store_key(Space.POOL, domain)) if domain else None
        typed["sender_pool"] = None
        if isinstance(pool, Pool):
            out["sender domain"] = (
                f"{domain} proven a pool at {timestamp(pool.since)} (SPF): its mail passes "
                f"from any address its SPF passes narrowly, until {timestamp(pool.expires)}"
            )
            typed["sender_pool"] = {"domain": domain, **_typed_record(pool, "pool")}
        verdict = decision.verdict
        out["stage"] = "RCPT"
        stage = "rcpt"
        if decided_at_data(sender, verdict):
            out["stage"] = "DATA (null sender: RCPT passes; the decision waits for DATA)"
            verdict = verdict.at_data()
            stage = "data"
        out["decision"] = _verdict(verdict)
        typed["decision"] = _typed_verdict(verdict, stage)
        return out, typed
    finally:
        if resolver is not None:
            resolver.close()


def run(args: Any) -> int:
    settings = settings_from(args)
    result, typed = with_store(
        settings, lambda store: _explain(settings, args, store), read_only=True
    )
    if args.json:
        print_json(typed)
        return 0
    decision = result.pop("decision")
    rows = [(key.replace("_", " "), str(value)) for key, value in result.items()]
    rows.append(("decision", f"{decision['action']} ({decision['reason']})"))
    if decision.get("detail"):
        rows.append(("because", decision["detail"]))
    rows.append(("reply", decision["reply"]))
    print_table(rows)
    return 0
