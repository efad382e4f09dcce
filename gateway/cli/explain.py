"""`onajimi explain IP`: the decision the gateway would make now, and why. Changes nothing.

It walks the same Decider calls as an SMTP session (connect, reverse DNS, RCPT), reading
the store but never writing it, and prints each fact that went into the verdict.
"""

from __future__ import annotations

from typing import Any

from gateway.assembly import build_policy, dynamic_list
from gateway.cli.common import print_json, print_table, settings_from, timestamp, with_store
from gateway.config import Settings
from gateway.decider import Decider
from gateway.errors import UserError
from gateway.policy.decision import Policy, Verdict, decided_at_data
from gateway.policy.deferral import Kind, Step
from gateway.policy.facts import RDNS
from gateway.policy.lists import Role
from gateway.policy.net import client_address
from gateway.policy.recipients import recipient_syntax
from gateway.policy.records import Penalty, Pending, Record
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


def _record(record: Record | None, impatient_retries: int) -> str:
    """A pending record with the counts that matter: attempts, and counted early retries."""
    if not isinstance(record, Pending):
        return ""
    limit = f" of {impatient_retries}" if impatient_retries else ""
    return (
        f"pending since {timestamp(record.first_seen)} ({record.reason}): "
        f"{record.attempts} attempt(s), early retries counted {record.early}{limit}, "
        f"{len(record.messages)} message(s) remembered"
    )


def _attempt(step: Step, impatient_retries: int) -> str:
    """How an attempt now would be judged (deferral.Kind), and where that leaves the key."""
    counted = f"counts: early retries {step.early}" if step.kind.counted else "not counted"
    limit = f" of {impatient_retries}" if impatient_retries and step.kind.counted else ""
    return f"{step.kind.value} ({counted}{limit})"


async def _explain(settings: Settings, args: Any, store: Store) -> dict[str, Any]:
    address = _address(args.ip)
    policy = await _policy_with_dynamic(build_policy(settings), store)
    resolver = None if args.name else Resolver.from_settings(settings.dns)
    decider = Decider(lambda: policy, store, resolver)
    sender = args.sender if args.sender is not None else "someone@example.net"
    recipient = args.rcpt or f"postmaster@{settings.relay.accept_domains[0].lstrip('.')}"
    out: dict[str, Any] = {
        "client": str(address),
        "sender": f"<{sender}>" + ("" if args.sender is not None else " (assumed)"),
        "recipient": f"<{recipient}>" + ("" if args.rcpt else " (assumed)"),
    }
    if args.helo:
        out["helo"] = args.helo
    try:
        connect = await decider.at_connect(address)
        screening = connect.screening
        out["address_key"] = screening.address_key
        if isinstance(connect.penalty, Penalty):
            out["penalty"] = f"until {timestamp(connect.penalty.expires)}"
        if connect.verdict is not None and connect.verdict.action is not Action.PASS:
            out["stage"] = "connect (before the greeting)"
            out["decision"] = _verdict(connect.verdict)
            return out

        rdns = RDNS.assumed(args.name) if args.name else None
        assessment = await decider.assess(screening, rdns)
        if assessment.rdns is not None:
            r = assessment.rdns
            out["ptr"] = ", ".join(r.ptr_names) or "none"
            out["fcrdns"] = f"{r.status.value} ({r.detail})" if r.detail else r.status.value
        if assessment.s25r is not None:
            out["s25r"] = assessment.s25r.describe()
        out["client_key"] = assessment.client_key

        syntax = recipient_syntax(recipient)
        if syntax is not None:
            out["stage"] = "RCPT"
            out["decision"] = {"action": "reject", "reason": "syntax", "reply": str(syntax)}
            return out
        decision = await decider.at_rcpt(
            assessment, sender, recipient, dry_run=True, size=args.size
        )
        if decision.key:
            out["deferral_key"] = decision.key
            limit = settings.policy.impatient_retries
            out["record"] = _record(decision.record, limit) or decision.record_kind or "none"
        if decision.step is not None and decision.step.kind is not None:
            out["this_attempt"] = _attempt(decision.step, settings.policy.impatient_retries)
            if args.size is None and decision.step.kind is Kind.NEW_MESSAGE:
                # Real MTAs declare SIZE, and it is part of what makes a message the same.
                out["this_attempt"] += "; --size N judges a real MTA's message"
        verdict = decision.verdict
        out["stage"] = "RCPT"
        if decided_at_data(sender, verdict):
            out["stage"] = "DATA (null sender: RCPT passes; the decision waits for DATA)"
            verdict = verdict.at_data()
        out["decision"] = _verdict(verdict)
        return out
    finally:
        if resolver is not None:
            resolver.close()


def run(args: Any) -> int:
    settings = settings_from(args)
    result = with_store(settings, lambda store: _explain(settings, args, store), read_only=True)
    if args.json:
        print_json(result)
        return 0
    decision = result.pop("decision")
    rows = [(key.replace("_", " "), str(value)) for key, value in result.items()]
    rows.append(("decision", f"{decision['action']} ({decision['reason']})"))
    if decision.get("detail"):
        rows.append(("because", decision["detail"]))
    rows.append(("reply", decision["reply"]))
    print_table(rows)
    return 0
