"""Sender classes: how real MTAs and bots behave towards a receiving MX, from published
behaviour (each family cites its source), plus the reverse DNS they present.

A class is a behaviour family (`postfix`, `gmail`, `bot-once`, ...) with one reverse-DNS
variant, named `family/variant`:

    clean  a forward-confirmed PTR name that S25R does not flag
    s25r   a forward-confirmed PTR name that looks like an end-user pool (a misjudged
           real MTA, or a bot on a dynamic address)
    none   no PTR at all (S25R rule 0)
    real   the provider's real naming under its real domain (only the big providers):
           what `conf/allow.txt` is for

Names are made from templates: {a}.{b}.{c}.{d} are the address's octets, {n} the
address's index in its pool, {domain} the class's domain (or one per sender when the
class has none: every self-hosted MTA has its own), {isp} one of twenty access or hosting
providers shared by every class (a generic name is the provider's, not the sender's: an
MTA misjudged by S25R and the bots next door sit under the same domain). Whether a
template really is clean or S25R-looking is checked against the real classifier in
tests/test_simulate.py.

The counts of the built-in population (`senders`) and the volumes are assumptions, not
measurements: they are there so that every class has enough messages to show its
figures. `--senders FILE` changes them (loader.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from gateway.simulation.retry import (
    DAY,
    EximRetry,
    IntervalRetry,
    Never,
    PostfixRetry,
    Retry,
)


class Naming(StrEnum):
    CLEAN = "clean"
    S25R = "s25r"
    NONE = "none"
    REAL = "real"


class Rotate(StrEnum):
    """Which of its addresses a sender uses for a round (a delivery attempt)."""

    FIXED = "fixed"  # always its first address (a single host)
    RANDOM = "random"  # any address of the pool, each round (big senders' load balancing)
    SEQUENTIAL = "sequential"  # the next address each round (a bot walking its /24)


class Spf(StrEnum):
    """What the sender domain publishes in SPF (RFC 7208), as the proof of a pool reads it."""

    NONE = "none"  # nothing (most spam domains)
    HOST = "host"  # the sender's own addresses, each a /32 (a self-hosted MTA: `a`, `mx`)
    NETWORKS = "networks"  # the /24s of its pool (a provider: `ip4:` ranges, includes)
    PLUS_ALL = "plus_all"  # `+all`: passes every address, proves nothing


@dataclass(frozen=True, slots=True)
class Pool:
    """The addresses a sender sends from: `addresses` spread over `networks` /24s;
    `shared`: one pool for every sender of the class (a provider's outbound servers),
    else one pool per sender."""

    addresses: int = 1
    networks: int = 1
    shared: bool = False
    rotate: Rotate = Rotate.FIXED


@dataclass(frozen=True, slots=True)
class SenderClass:
    """One row of the report: a behaviour family with one reverse-DNS variant."""

    name: str  # family/variant, e.g. "postfix/s25r"
    family: str
    bot: bool
    naming: Naming
    names: dict[Naming, str]  # PTR templates by variant (NONE needs none)
    domain: str  # "" = one generated domain per sender
    senders: int  # instances in the population
    bursts_per_day: float  # how often a sender has mail for us (Poisson)
    bursts: int  # instead: exactly this many bursts at uniform times (0: use bursts_per_day)
    backlog: tuple[int, int]  # messages per burst (uniform)
    parallel: int  # sessions a burst is sent through at once
    spacing: float  # seconds between two sessions of one parallel lane
    recipients: tuple[int, int]  # recipients of ours per message (uniform)
    mx_fallback: bool  # tries the backup MX at once when the primary defers
    fallback_after: float  # seconds between the primary's reply and the backup MX
    callback: float  # share of messages preceded by a sender-verification callback
    pregreet: float  # share of sessions that talk before the greeting (bots)
    retry: Retry
    pool: Pool = Pool()
    at: tuple[float, ...] = ()  # fixed burst times (seconds from the start) instead
    spf: Spf = Spf.NONE  # what its sender domain publishes
    batv: bool = False  # signs its sender with a new BATV tag (prvs=) on every try
    verp: bool = False  # a mailing list: the sender names the recipient (VERP), one each

    @property
    def template(self) -> str | None:
        """The PTR template of this class's variant (None: no PTR)."""
        return None if self.naming is Naming.NONE else self.names[self.naming]


def variant(base: SenderClass, naming: Naming, senders: int, **changes) -> SenderClass:
    """The family `base` with reverse DNS `naming` and `senders` instances."""
    if naming is not Naming.NONE and naming not in base.names:
        raise ValueError(f"{base.family} has no {naming.value!r} naming")
    return replace(
        base, name=f"{base.family}/{naming.value}", naming=naming, senders=senders, **changes
    )


def _family(family: str, *, bot: bool = False, **fields) -> SenderClass:
    defaults = dict(
        name=family,
        family=family,
        bot=bot,
        naming=Naming.CLEAN,
        domain="",
        senders=0,
        bursts_per_day=0.5,
        bursts=0,
        backlog=(1, 3),
        parallel=2,
        spacing=1.0,
        recipients=(1, 2),
        mx_fallback=not bot,
        fallback_after=1.0,
        callback=0.0,
        pregreet=0.0,
    )
    defaults.update(fields)
    return SenderClass(**defaults)


def _like(base: str, family: str, **changes) -> SenderClass:
    """A family that behaves as FAMILIES[base] but for `changes`."""
    return replace(FAMILIES[base], name=family, family=family, **changes)


# A self-hosted MTA's names: its own domain when clean; a hosting provider's generic name
# for the address when S25R-looking (rule 1: digit, non-digits, digit in the first label).
SELF_HOSTED = {
    Naming.CLEAN: "mail.{domain}",
    Naming.S25R: "{a}-{b}-{c}-{d}.static.{isp}",
}

# -- real MTAs ---------------------------------------------------------------------------
FAMILIES: dict[str, SenderClass] = {}

# Postfix with its defaults: retries per PostfixRetry (postconf(5), qmgr_active.c); up to
# initial_destination_concurrency = 5 sessions at once to a new destination; a 4xx at
# RCPT is tried at the next MX host within the same delivery attempt (src/smtp/
# smtp_trouble.c, smtp_rcpt_fail: a soft error keeps the recipient for the next server
# unless this one was the last); the few sites with reject_unverified_sender probe their
# senders with a null-sender RCPT first (ADDRESS_VERIFICATION_README).
FAMILIES["postfix"] = _family(
    "postfix",
    spf=Spf.HOST,
    names=SELF_HOSTED,
    bursts_per_day=0.7,
    backlog=(1, 4),
    parallel=5,
    callback=0.05,
    retry=PostfixRetry(),
)

# Exim with the default configuration's retry rule (EximRetry: F,2h,15m; G,16h,1h,1.5;
# F,4d,6h) and Debian's 30-minute queue runner; remote_max_parallel = 2 (Exim spec,
# "Main configuration", before 4.95 raised it to 4); hosts_max_try tries the next MX at
# once. Exim sites are the ones that verify senders by callout (`verify = sender/callout`,
# spec chapter "Access control lists"), so a fifth of the messages come with a callback.
FAMILIES["exim"] = _family(
    "exim",
    spf=Spf.HOST,
    names=SELF_HOSTED,
    bursts_per_day=0.5,
    backlog=(1, 3),
    parallel=2,
    callback=0.2,
    retry=EximRetry(),
)

# Exchange Server (2013-2019 transport service): MessageRetryInterval 15 minutes and
# MessageExpirationTimeout 2 days (learn.microsoft.com, "Message retry, resubmit, and
# expiration intervals in Exchange Server"; TransportServer.MessageRetryInterval "The
# default value is 15 minutes"); MaxPerDomainOutboundConnections 20, a few in use at once.
FAMILIES["exchange"] = _family(
    "exchange",
    spf=Spf.HOST,
    names=SELF_HOSTED,
    bursts_per_day=0.5,
    backlog=(1, 3),
    parallel=3,
    retry=IntervalRetry(900, 900, lifetime=2 * DAY),
)

# Exchange Online / Microsoft 365 (EOP): retries about every 15 minutes and gives up after
# 24 hours, each retry from another host of its outbound pool
# (mail-*.outbound.protection.outlook.com across many /24s): postgrey issue #49 lists nine
# such hosts for one message delayed over 24 h; postgrey #20 and #67 report day-long
# delays. Pool size (400 addresses over 40 /24s) is an assumption.
FAMILIES["exchange-online"] = _family(
    "exchange-online",
    spf=Spf.NETWORKS,
    names={
        Naming.REAL: "mail-eur{c}on{d}{n}.outbound.protection.outlook.com",
        Naming.S25R: "mail-eur{c}on{d}{n}.outbound.protection.{domain}",
        Naming.CLEAN: "mta{n}.outbound.protection.{domain}",
    },
    domain="exo-like.example",
    bursts_per_day=0.4,
    backlog=(1, 2),
    parallel=2,
    retry=IntervalRetry(780, 1020, lifetime=1 * DAY),
    pool=Pool(addresses=400, networks=40, shared=True, rotate=Rotate.RANDOM),
)

# Gmail-like: the retry comes after 5-7 minutes from another address of the pool
# (Stalwart issue #2101: "every IP address is different", a 2-minute greylist never
# passed); Google publishes no schedule, so later gaps growing by 1.5 up to an hour and
# giving up after 2 days are assumptions, as is the pool (128 addresses over 8 /24s).
# Real names look like mail-ot1-f41.google.com (S25R rule 1; allow.txt lists google.com).
FAMILIES["gmail"] = _family(
    "gmail",
    spf=Spf.NETWORKS,
    names={
        Naming.REAL: "mail-ot{c}-f{d}.google.com",
        Naming.S25R: "mail-ot{c}-f{d}.{domain}",
        Naming.CLEAN: "mta{n}.{domain}",
    },
    domain="gmail-like.example",
    bursts_per_day=0.4,
    backlog=(1, 2),
    parallel=2,
    retry=IntervalRetry(300, 420, factor=1.5, cap=3600, lifetime=2 * DAY),
    pool=Pool(addresses=128, networks=8, shared=True, rotate=Rotate.RANDOM),
)

# Amazon SES: a greylisted message came back 5 min 38 s later from the neighbouring
# address of the same /24 (postgrey issue #37: a10-219 then a10-220.smtp-out.amazonses.com,
# 54.240.10.219/.220); SES keeps trying for at most MaxDeliverySeconds, 50400 s = 14 h
# (SES API v2, DeliveryOptions). Later gaps growing by 1.5 up to an hour: an assumption.
FAMILIES["ses"] = _family(
    "ses",
    spf=Spf.NETWORKS,
    names={
        Naming.REAL: "a{c}-{d}.smtp-out.amazonses.com",
        Naming.S25R: "a{c}-{d}.smtp-out.{domain}",
        Naming.CLEAN: "mta{n}.smtp-out.{domain}",
    },
    domain="ses-like.example",
    bursts_per_day=0.4,
    backlog=(1, 2),
    parallel=2,
    retry=IntervalRetry(300, 360, factor=1.5, cap=3600, lifetime=50400),
    pool=Pool(addresses=64, networks=2, shared=True, rotate=Rotate.RANDOM),
)

# SendGrid: retries a deferred message for up to 72 hours (Twilio SendGrid docs,
# "Deferrals": "We'll attempt delivery again at a later time for up to 72 hours"), the
# retry from another /24 (postgrey issue #49: o1.sg 167.89.93.77 then o2.sg
# 167.89.104.98). First gaps of 5-10 minutes growing to hours: an assumption.
FAMILIES["sendgrid"] = _family(
    "sendgrid",
    spf=Spf.NETWORKS,
    names={
        Naming.REAL: "o{n}.ptr{c}{d}.sendgrid.net",
        Naming.S25R: "{c}-{d}.smtp.{domain}",
        Naming.CLEAN: "mta{n}.smtp.{domain}",
    },
    domain="sendgrid-like.example",
    bursts_per_day=0.4,
    backlog=(1, 2),
    parallel=2,
    retry=IntervalRetry(300, 600, factor=1.5, cap=3 * 3600, lifetime=3 * DAY),
    pool=Pool(addresses=32, networks=16, shared=True, rotate=Rotate.RANDOM),
)

# -- bots --------------------------------------------------------------------------------
# What spamware does after a 4xx, after the S25R author (97-99% of spam blocked by
# deferring end-user-looking hosts, because bots mostly do not retry; gabacho-net.jp
# "Anti-spam: S25R") and the seed of this project ("hosts that reconnect at once after an
# error, ignoring the RFC, are spam"). A bot sends one burst of messages to several of our
# addresses in the week (bot-return: one a day), never tries the backup MX on purpose, and
# some talk before the greeting (postscreen's pregreet test; the share is an assumption).
BOT_NAMES = {
    Naming.S25R: "p{b}{c}{d}-ip{a}.bb.{isp}",
    Naming.CLEAN: "www.{domain}",  # a compromised web server: S25R cannot see it
}

# Fire and forget: every message tried once.
FAMILIES["bot-once"] = _family(
    "bot-once",
    bot=True,
    names=BOT_NAMES,
    bursts=1,
    backlog=(5, 30),
    parallel=5,
    recipients=(1, 3),
    pregreet=0.2,
    retry=Never(),
)

# Retries at once, N times (every 1-4 s, ten times), then gives up.
FAMILIES["bot-burst"] = _family(
    "bot-burst",
    bot=True,
    names=BOT_NAMES,
    bursts=1,
    backlog=(2, 10),
    parallel=2,
    recipients=(1, 3),
    pregreet=0.2,
    retry=IntervalRetry(1, 4, tries=10, lifetime=DAY),
)

# Retries once after 5-30 minutes (spamware that learnt about greylisting).
FAMILIES["bot-retry"] = _family(
    "bot-retry",
    bot=True,
    names=BOT_NAMES,
    bursts=1,
    backlog=(5, 20),
    parallel=2,
    recipients=(1, 3),
    retry=IntervalRetry(300, 1800, tries=1, lifetime=DAY),
)

# Walks its /24: every attempt from the next address, each message retried twice after
# 30-120 s (snowshoe spam through a rented or hijacked /24).
FAMILIES["bot-rotate"] = _family(
    "bot-rotate",
    bot=True,
    names=BOT_NAMES,
    bursts=1,
    backlog=(20, 100),
    parallel=1,
    spacing=2.0,
    recipients=(1, 2),
    retry=IntervalRetry(30, 120, tries=2, lifetime=DAY),
    pool=Pool(addresses=254, networks=1, rotate=Rotate.SEQUENTIAL),
)


# Never retries a message, but the host comes back with new spam about once a day (an
# infected PC stays online and in the campaign for days): any session after
# min_retry_delay promotes its pending record, whether or not it repeats a message.
FAMILIES["bot-return"] = _family(
    "bot-return",
    bot=True,
    names=BOT_NAMES,
    bursts_per_day=1.0,
    backlog=(5, 30),
    parallel=5,
    recipients=(1, 3),
    pregreet=0.2,
    retry=Never(),
)


# -- what a review found missing (issue: promote on a real retry) -----------------------
# A botnet whose retry comes from another bot: one campaign's messages tried again 5-30
# minutes later from any of its thousand hosts (one retry in a thousand comes from the
# host that first tried, by chance: a retry, which promotes that host). Under one ISP,
# every host shares one rDNS domain (the "siblings" rule let all of them in); across
# many ISPs, they share nothing.
FAMILIES["botnet-one-isp"] = _family(
    "botnet-one-isp",
    bot=True,
    names={Naming.S25R: "p{b}{c}{d}-ip{a}.bb.{domain}", Naming.CLEAN: "www{n}.{domain}"},
    domain="dyn.botnet-isp.example",
    bursts=1,
    backlog=(5, 20),
    parallel=2,
    recipients=(1, 3),
    retry=IntervalRetry(300, 1800, tries=2, lifetime=DAY),
    pool=Pool(addresses=1016, networks=4, shared=True, rotate=Rotate.RANDOM),
)
FAMILIES["botnet-many-isps"] = _like(
    "botnet-one-isp",
    "botnet-many-isps",
    names={Naming.S25R: "p{b}{c}{d}-ip{a}.bb.{isp}"},
    domain="",
    pool=Pool(addresses=1016, networks=40, shared=True, rotate=Rotate.RANDOM),
)

# Spam sent under a throw-away domain that publishes `v=spf1 +all`, from a rented /24,
# each retry from another address of it: SPF passes everywhere and proves nothing.
FAMILIES["bot-spf-all"] = _like(
    "botnet-one-isp",  # the same campaign and retries, from a /24 of its own
    "bot-spf-all",
    names=BOT_NAMES,
    domain="",
    pool=Pool(addresses=254, networks=1, rotate=Rotate.RANDOM),
    spf=Spf.PLUS_ALL,
)

# Real MTAs that behave unlike the defaults: one that gives up after a single retry 5-10
# minutes on (a web application's own sender); one whose queue lifetime is 270 s (it
# retries once, at 270 s, before any min_retry_delay of 300 s: lost by design); one whose
# first retry comes 6-12 hours later (a misconfigured or overloaded queue); one signing
# its sender with a new BATV tag at each try; a mailing list with a VERP sender per
# recipient. All on misjudged (S25R-looking) names, where the delay is paid.
FAMILIES["mta-one-retry"] = _like(
    "postfix",
    "mta-one-retry",
    callback=0.0,
    retry=IntervalRetry(300, 600, tries=1, lifetime=DAY),
)
FAMILIES["mta-270s"] = _like(
    "postfix",
    "mta-270s",
    callback=0.0,
    retry=IntervalRetry(270, 270, tries=1, lifetime=270),
)
FAMILIES["mta-slow-retry"] = _like(
    "postfix",
    "mta-slow-retry",
    retry=IntervalRetry(6 * 3600, 12 * 3600, lifetime=5 * DAY),
)
FAMILIES["mta-batv"] = _like("postfix", "mta-batv", batv=True)
FAMILIES["list-verp"] = _like(
    "postfix",
    "list-verp",
    bursts_per_day=1.0,
    backlog=(5, 30),
    recipients=(1, 1),
    callback=0.0,
    verp=True,
)

# -- the built-in population ---------------------------------------------------------------
# family -> {variant: senders}. Real MTAs are mostly clean (S25R's author: about 13% of
# legitimate servers misjudged at first); the providers' "real" rows are the big senders
# as they are named today, the others a provider like them that no allow list names.
BUILTIN_COUNTS: dict[str, dict[Naming, int]] = {
    "postfix": {Naming.CLEAN: 300, Naming.S25R: 40, Naming.NONE: 10},
    "exim": {Naming.CLEAN: 150, Naming.S25R: 20, Naming.NONE: 5},
    "exchange": {Naming.CLEAN: 150, Naming.S25R: 20, Naming.NONE: 5},
    "exchange-online": {Naming.REAL: 200, Naming.CLEAN: 20, Naming.S25R: 20, Naming.NONE: 5},
    "gmail": {Naming.REAL: 300, Naming.CLEAN: 30, Naming.S25R: 30, Naming.NONE: 5},
    "ses": {Naming.REAL: 50, Naming.CLEAN: 10, Naming.S25R: 10, Naming.NONE: 2},
    "sendgrid": {Naming.REAL: 50, Naming.CLEAN: 10, Naming.S25R: 10, Naming.NONE: 2},
    "bot-once": {Naming.S25R: 600, Naming.NONE: 300, Naming.CLEAN: 20},
    "bot-burst": {Naming.S25R: 100},
    "bot-retry": {Naming.S25R: 60, Naming.NONE: 30, Naming.CLEAN: 10},
    "bot-rotate": {Naming.S25R: 10},
    "bot-return": {Naming.S25R: 50, Naming.NONE: 25},
    "botnet-one-isp": {Naming.S25R: 20},
    "botnet-many-isps": {Naming.S25R: 20},
    "bot-spf-all": {Naming.S25R: 10},
    "mta-one-retry": {Naming.S25R: 10},
    "mta-270s": {Naming.S25R: 5},
    "mta-slow-retry": {Naming.S25R: 10},
    "mta-batv": {Naming.S25R: 10},
    "list-verp": {Naming.S25R: 5},
}


def builtin_classes() -> list[SenderClass]:
    """The built-in population, in report order."""
    return [
        variant(FAMILIES[family], naming, count)
        for family, counts in BUILTIN_COUNTS.items()
        for naming, count in counts.items()
    ]
