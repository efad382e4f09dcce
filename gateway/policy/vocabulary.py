"""The words operators see: actions and reasons, shared by config, logs and metrics.

The values are the metric label values of SPEC section 8; renaming one breaks dashboards.
"""

from enum import StrEnum


class Action(StrEnum):
    PASS = "pass"
    DEFER = "defer"
    REJECT = "reject"
    PENALTY = "penalty"


class Reason(StrEnum):
    TRUSTED = "trusted"
    ALLOWLIST = "allowlist"
    FAMILIAR = "familiar"
    PROMOTED = "promoted"
    CLEAN = "clean"
    S25R_RULE0 = "s25r_rule0"
    S25R_RULE1 = "s25r_rule1"
    S25R_RULE2 = "s25r_rule2"
    S25R_RULE3 = "s25r_rule3"
    S25R_RULE4 = "s25r_rule4"
    S25R_RULE5 = "s25r_rule5"
    S25R_RULE6 = "s25r_rule6"
    S25R_BLACKLIST = "s25r_blacklist"
    ICHIGEN = "ichigen"
    GREYLIST = "greylist"
    EARLY_RETRY = "early_retry"
    DENYLIST = "denylist"
    IMPATIENT = "impatient"
    DNS_TEMPFAIL = "dns_tempfail"
    RELAY_DENIED = "relay_denied"

    @classmethod
    def s25r_rule(cls, number: int) -> "Reason":
        return cls(f"s25r_rule{number}")


class Retry(StrEnum):
    """What a returning pending key turned out to be (`onajimi_retries_total{outcome}`)."""

    EARLY = "early"
    PROMOTED = "promoted"
    EXPIRED = "expired"
