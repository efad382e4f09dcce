"""The words operators see: actions and reasons, shared by config, logs and metrics.

The values are the metric label values (README "Metrics and the dashboard"); renaming one
breaks dashboards and alert rules.
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
    POOL = "pool"  # a sender domain proven by SPF to send from a pool (policy/proof.py)
    CLEAN = "clean"
    S25R_RULE0 = "s25r_rule0"
    S25R_RULE1 = "s25r_rule1"
    S25R_RULE2 = "s25r_rule2"
    S25R_RULE3 = "s25r_rule3"
    S25R_RULE4 = "s25r_rule4"
    S25R_RULE5 = "s25r_rule5"
    S25R_RULE6 = "s25r_rule6"
    S25R_BLACKLIST = "s25r_blacklist"
    ICHIGEN = "ichigen"  # a clean ichigen-san (first-time host), deferred by policy.defer = "all"
    GREYLIST = "greylist"  # a new triplet, deferred because policy.key = "triplet"
    EARLY_RETRY = "early_retry"
    DENYLIST = "denylist"
    IMPATIENT = "impatient"
    DNS_TEMPFAIL = "dns_tempfail"
    RELAY_DENIED = "relay_denied"
    PREGREET = "pregreet"  # talked before the greeting was complete ([pregreet])
    DNSWL = "dnswl"  # a DNS allow-list score at or below dnsbl.allowlist_threshold: passes
    DNSBL = "dnsbl"  # a DNS block-list score at or above dnsbl.threshold
    TARPIT = "tarpit"  # a suspect waited out the tarpit (policy.suspect_action = "tarpit")
    EXEMPT = "exempt"  # a recipient of policy.exempt_recipients: never deferred
    AUTHENTICATED = "authenticated"  # SMTP AUTH succeeded at the backend: it decides
    AUTH_FAILURES = "auth_failures"  # too many failed authentications ([auth])
    AUTOBAN_RELAY = "autoban_relay"  # too many relay attempts ([autoban] relay_limit)
    AUTOBAN_PROBE = "autoban_probe"  # too many unknown recipients ([autoban] probe_limit)
    AUTOBAN_LOITER = (
        "autoban_loiter"  # sessions ended by the command timeout ([autoban] loiter_limit)
    )

    @classmethod
    def s25r_rule(cls, number: int) -> "Reason":
        return cls(f"s25r_rule{number}")


class Retry(StrEnum):
    """What a returning pending key turned out to be (`onajimi_retries_total{outcome}`)."""

    EARLY = "early"
    PROMOTED = "promoted"
    EXPIRED = "expired"


class RelayResult(StrEnum):
    """How a relayed transaction ended (`onajimi_relay_transactions_total{result}` and the
    relay line's `result=`)."""

    DELIVERED = "delivered"  # the backend said 250 to the end of data
    REJECTED = "rejected"  # a 5xx: the backend's, or the gateway's content check
    TEMPFAIL = "tempfail"  # the backend's own 4xx
    BACKEND_ERROR = "backend_error"  # no usable reply from the backend: 451 4.4.1


class AuthResult(StrEnum):
    """How an AUTH exchange ended (`onajimi_auth_total{result}`, the auth line's `result=`)."""

    OK = "ok"  # the backend said 235: the session is authenticated
    FAILED = "failed"  # the backend refused the credentials (535 and the like): counted
    ABORTED = "aborted"  # the client cancelled (`*`) or sent what is not base64 (501)
    TEMPFAIL = "tempfail"  # the backend's own 4xx (its SASL service is down, say)
    BACKEND_ERROR = "backend_error"  # no usable reply from the backend: 451 4.4.1


class TarpitResult(StrEnum):
    """How a tarpit hold ended (`onajimi_tarpit_total{result}`, the tarpit line's `result=`)."""

    WAITED = "waited"  # the client waited it out: passed, or on to its deferral
    ABANDONED = "abandoned"  # it hung up: counted as an early retry
    FULL = "full"  # tarpit.max_sessions were held already: the normal deferral at once


class Limit(StrEnum):
    """What refused or ended a session (`onajimi_limit_refusals_total{limit}`); the names
    are the `[limits]` settings that set them."""

    CONNECTIONS = "connections"  # max_connections
    CLIENT_CONNECTIONS = "client_connections"  # max_connections_per_client
    JUNK_COMMANDS = "junk_commands"  # junk_commands (stress_junk_commands under stress)
    COMMAND_TIMEOUT = "command_timeout"  # command_timeout (stress_command_timeout)


class DeferMode(StrEnum):
    """`policy.defer`: who goes through the deferral procedure."""

    SUSPECT = "suspect"  # only S25R suspects (and DNS-listed clients); clean ones pass
    ALL = "all"  # every client not allowed or familiar: an ichigen-san (reason ichigen)


class KeyMode(StrEnum):
    """`policy.key`: what a deferral is remembered under."""

    CLIENT = "client"  # the client key alone (onajimi-san)
    TRIPLET = "triplet"  # client key, sender and recipient (greylisting; reason greylist)


class PromoteOn(StrEnum):
    """`policy.promote_on`: what makes a pending key familiar."""

    RETRY = "retry"  # a retry of a message it was deferred for, after the delay
    ANY = "any"  # any attempt after the delay (the seed's host-level rule)


class DnsblAction(StrEnum):
    """`dnsbl.action`: what a client the DNS lists score as listed gets."""

    DEFER = "defer"  # deferred as a suspect is (reason dnsbl)
    REJECT = "reject"  # 554 at RCPT
    IGNORE = "ignore"  # logged only


class SuspectAction(StrEnum):
    """`policy.suspect_action`: what a suspect's first deferral meets."""

    DEFER = "defer"  # the deferral, at once
    TARPIT = "tarpit"  # the reply held; waited out, the client is promoted
    TARPIT_DEFER = "tarpit+defer"  # the reply held, then the deferral all the same


class PregreetAction(StrEnum):
    """`pregreet.action`: what talking before the greeting was complete earns."""

    IGNORE = "ignore"  # noted, nothing more
    DEFER = "defer"  # every recipient of the session deferred (relay attempts: 5xx first)
    DROP = "drop"  # 521 and the connection closed


class BareNewline(StrEnum):
    """`relay.bare_newline`: a message with a bare CR or LF, or a NUL, in it."""

    REJECT = "reject"  # refused (550): SMTP smuggling cannot get through
    NORMALIZE = "normalize"  # normalized (CRLF line ends, NULs removed) and relayed


class OnError(StrEnum):
    """`store.on_error`: what a client that needs the store gets while it is down."""

    TEMPFAIL = "tempfail"  # 451 4.3.0
    PASS = "pass"  # let it through, unscreened


class Event(StrEnum):
    """Session events that are neither a decision nor a relay line (the log line's name)."""

    LIMIT = "limit"  # a Limit refused or ended the session
    STORE_BUSY = "store_busy"  # one key contended through several gateways: 451 for it
    STORE_ERROR = "store_error"  # the store was needed and is down: store.on_error decides
    BACKEND_ERROR = "backend_error"  # the backend gave no usable reply: 451 4.4.1
    TLS_FAILED = "tls_failed"  # a STARTTLS handshake failed: the connection closes
    AUTH = "auth"  # an AUTH exchange ended (the line says how; never what was sent)
    TARPIT = "tarpit"  # a tarpit hold ended: waited, abandoned, or no room (`result=`)
    STRIKE = "strike"  # a strike counted towards the auto-ban (policy/strikes.py)
