"""S25R (Selective SMTP Rejection): does this client look like an end-user computer?

Rule 0 is "no usable name" (no PTR, or FCrDNS fails). Rules 1-6 are the published
regular expressions, applied case-insensitively to the forward-confirmed PTR name with
its final dot removed. The blacklist adds site-specific patterns (dynamic pools the
generic rules miss); its entries may be names, regexes or addresses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from gateway.policy.facts import RDNS, RDNSStatus
from gateway.policy.lists import ClientList, ListEntry, Role
from gateway.policy.net import IPAddress
from gateway.policy.values import value
from gateway.policy.vocabulary import Reason

RULES: dict[int, re.Pattern[str]] = {
    1: re.compile(r"^[^.]*[0-9][^0-9.]+[0-9].*\.", re.IGNORECASE),
    2: re.compile(r"^[^.]*[0-9]{5}", re.IGNORECASE),
    3: re.compile(r"^([^.]+\.)?[0-9][^.]*\.[^.]+\..+\.[a-z]", re.IGNORECASE),
    4: re.compile(r"^[^.]*[0-9]\.[^.]*[0-9]-[0-9]", re.IGNORECASE),
    5: re.compile(r"^[^.]*[0-9]\.[^.]*[0-9]\.[^.]+\..+\.", re.IGNORECASE),
    6: re.compile(r"^(dhcp|dialup|ppp|[achrsvx]?dsl)[^.]*[0-9]", re.IGNORECASE),
}
ALL_RULES = (0, 1, 2, 3, 4, 5, 6)


@value
class S25RResult:
    """Suspect or clean, and exactly why."""

    reason: Reason | None  # s25r_ruleN / s25r_blacklist when suspect, None when clean
    rule: int | None = None
    entry: ListEntry | None = None  # the blacklist line that matched
    name: str | None = None  # the name that was judged

    @property
    def suspect(self) -> bool:
        return self.reason is not None

    def describe(self) -> str:
        if self.reason is None:
            return "clean"
        if self.entry is not None:
            return f"suspect: blacklist {self.entry}"
        if self.rule == 0:
            return "suspect: rule 0 (no forward-confirmed PTR name)"
        return f"suspect: rule {self.rule} ({RULES[self.rule].pattern})"


CLEAN = S25RResult(None)


class S25RClassifier:
    """The enabled generic rules plus the blacklist, built once per configuration."""

    __slots__ = ("_combined", "_rule0", "_rule_of_group", "blacklist")

    def __init__(self, rules: Iterable[int] = ALL_RULES, blacklist: ClientList | None = None):
        enabled = set(rules)
        self._rule0 = 0 in enabled
        self.blacklist = blacklist if blacklist is not None else ClientList(Role.BLACKLIST)
        # The enabled rules as one alternation, each in its own group: every rule is
        # anchored at the start, so the engine tries them in order at one position and
        # the first that matches is the first rule that matches. One call instead of six.
        parts: list[str] = []
        self._rule_of_group: dict[int, int] = {}
        group = 1
        for number in sorted(enabled - {0}):
            pattern = RULES[number]
            assert pattern.pattern.startswith("^"), "rules must be anchored"
            parts.append(f"({pattern.pattern})")
            self._rule_of_group[group] = number
            group += 1 + pattern.groups
        self._combined = re.compile("|".join(parts), re.IGNORECASE) if parts else None

    def rule_matching(self, name: str) -> int | None:
        """The first enabled generic rule (1-6) that matches `name`."""
        if self._combined is None:
            return None
        m = self._combined.match(name)
        return None if m is None else self._rule_of_group[m.lastindex]

    def classify(self, address: IPAddress, address_text: str, rdns: RDNS) -> S25RResult:
        """Judge a client. `rdns` must not be TEMPFAIL (that is not a verdict)."""
        by_address = self.classify_address(address, address_text, rdns)
        return by_address if by_address is not None else self.classify_names(rdns)

    def classify_address(
        self, address: IPAddress, address_text: str, rdns: RDNS
    ) -> S25RResult | None:
        """A blacklist entry for the address itself, which outranks any name."""
        entry = self.blacklist.match_address(address, address_text)
        if entry is not None:
            return S25RResult(Reason.S25R_BLACKLIST, entry=entry, name=rdns.name)
        return None

    def classify_names(self, rdns: RDNS) -> S25RResult:
        """The judgement that depends on the names alone (so it can be remembered)."""
        if rdns.status is not RDNSStatus.CONFIRMED:
            if self._rule0:
                return S25RResult(Reason.S25R_RULE0, rule=0, name=rdns.name)
            # Rule 0 switched off: an unconfirmed PTR name is still judged by the blacklist.
            entry = self.blacklist.match_names(rdns.ptr_names)
            if entry is not None:
                return S25RResult(Reason.S25R_BLACKLIST, entry=entry, name=rdns.name)
            return CLEAN
        # Several confirmed names: the client is clean if any of them is. Dynamic pools
        # carry one generic name; a host with a second, proper name is run by someone.
        first_suspect: S25RResult | None = None
        for name in rdns.confirmed:
            verdict = self._classify_name(name)
            if not verdict.suspect:
                return S25RResult(None, name=name)
            first_suspect = first_suspect or verdict
        assert first_suspect is not None
        return first_suspect

    def _classify_name(self, name: str) -> S25RResult:
        rule = self.rule_matching(name)
        if rule is not None:
            return S25RResult(Reason.s25r_rule(rule), rule=rule, name=name)
        entry = self.blacklist.match_name(name)
        if entry is not None:
            return S25RResult(Reason.S25R_BLACKLIST, entry=entry, name=name)
        return S25RResult(None, name=name)
