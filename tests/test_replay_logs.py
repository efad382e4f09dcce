"""Reading logs for `onajimi replay`: a Postfix maillog, Onajimi's decision log, and
their timestamps. The fixtures are in tests/fixtures/.

tests/fixtures/maillog, line by line:
  1      dovecot: another program, ignored
  2-8    mail.example.org[203.0.113.5], clean, one message at 10:00:01
  9-15   p1234-ip45.dyn.example.jp[198.51.100.7] (S25R rule 1), a message at 10:00:10
  16     postscreen CONNECT: ignored
  17-21  the same host, its next message at 10:06:10: 360 s later
  22-26  unknown[192.0.2.99] (no PTR: rule 0), its only message at 10:20:00
  27-29  unknown[203.0.113.66], a relay attempt Postfix refused (554)
  30     `connect from` with no address: unreadable
  31     not a log line: unreadable
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from gateway.replay.model import LogRead
from gateway.replay.onajimi import OnajimiReader
from gateway.replay.postfix import PostfixReader
from gateway.replay.timestamps import Timestamps

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "maillog"
NOW = dt.datetime(2026, 12, 2, 12, 0).timestamp()  # the day after the fixture's


def read_postfix(text: str | None = None, fixture: str = "maillog") -> LogRead:
    lines = (FIXTURES / fixture).read_text() if text is None else text.strip()
    return PostfixReader(fixture, now=NOW).lines(lines.splitlines())


def local(month: int, day: int, hour: int, minute: int, second: int = 0, year: int = 2026):
    return dt.datetime(year, month, day, hour, minute, second).timestamp()


DECISIONS = FIXTURES / "decisions.log"


def read_decisions() -> LogRead:
    return OnajimiReader("decisions.log").lines(DECISIONS.read_text().splitlines())


# -- a Postfix maillog ---------------------------------------------------------------------
def test_the_fixture_reads_as_five_sessions_and_two_unreadable_lines() -> None:
    log = read_postfix()
    assert (log.lines, log.used, log.ignored, log.unreadable) == (31, 18, 11, 2)
    assert log.unreadable_lines == [30, 31]
    assert [str(c.address) for c in log.conversations] == [
        "203.0.113.5",
        "198.51.100.7",
        "198.51.100.7",
        "192.0.2.99",
        "203.0.113.66",
    ]
    clean, s25r, again, unnamed, relay = log.conversations
    assert clean.when == local(12, 1, 10, 0, 1)  # at RCPT (the client= line), not connect
    assert (clean.naming.name, clean.naming.confirmed) == ("mail.example.org", True)
    (message,) = clean.transactions
    assert (message.sender, message.recipients, message.logged) == (
        "alice@example.org",
        ["bob@example.com"],
        ["250"],
    )
    assert message.message == "1A2B3C4D5E" and message.size == 1520
    assert again.when - s25r.when == 360
    assert unnamed.naming.name is None and unnamed.naming.known
    (refused,) = relay.transactions
    assert refused.logged == ["554 5.7.1"] and relay.helo == "203.0.113.66"


def test_postscreen_clients_take_the_name_smtpd_gave_them_else_none() -> None:
    log = read_postfix(fixture="postscreen.maillog")
    named, unnamed, _ = log.conversations
    assert named.naming.name == "mx1.b.example" and named.naming.confirmed
    assert not unnamed.naming.known and log.unnamed == 1
    assert named.transactions[0].logged == ["450 4.3.2"]


def test_a_name_that_does_not_resolve_back_is_kept_unconfirmed() -> None:
    log = read_postfix(fixture="unverified.maillog")
    (conversation,) = log.conversations
    rdns = conversation.naming.rdns()
    assert rdns.ptr_names == ("mail.fake.example",) and rdns.confirmed == ()


# -- timestamps ----------------------------------------------------------------------------
def test_syslog_stamps_take_the_current_year_and_cross_new_year() -> None:
    stamps = Timestamps(now=local(12, 31, 12, 0))
    assert stamps.read("Dec 31 23:59:00") == local(12, 31, 23, 59)
    assert stamps.read("Jan  1 00:01:00") == local(1, 1, 0, 1, year=2027)
    assert stamps.read("Dec 31 23:59:30") == local(12, 31, 23, 59, 30)  # a late line
    assert stamps.read("Jan  1 00:02:00") == local(1, 1, 0, 2, year=2027)


def test_a_december_log_read_in_january_is_last_year_s() -> None:
    stamps = Timestamps(now=local(1, 5, 9, 0, year=2027))
    assert stamps.read("Dec 30 08:00:00") == local(12, 30, 8, 0)


def test_rfc3339_stamps_and_unreadable_ones() -> None:
    stamps = Timestamps(now=NOW)
    utc = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC).timestamp()
    assert stamps.read("2026-12-01T10:00:00.123456+00:00") == utc + 0.123456
    assert stamps.read("2026-12-01T19:00:00+0900") == utc
    assert stamps.read("2026-12-01T10:00:00Z") == utc
    for bad in ("Foo  1 10:00:00", "Feb 30 10:00:00", "yesterday"):
        with pytest.raises(ValueError):
            stamps.read(bad)


def test_a_decision_log_reads_as_sessions_with_what_each_recipient_got() -> None:
    log = read_decisions()
    assert (log.lines, log.used, log.ignored, log.unreadable) == (8, 6, 1, 1)
    assert log.unreadable_lines == [8]
    clean, deferred, promoted, unnamed = log.conversations
    assert clean.transactions[0].logged == ["250"]
    assert clean.transactions[0].message == "aa01.1"
    assert deferred.transactions[0].logged == ["450 4.7.1"]
    assert promoted.when - deferred.when == 360
    assert (promoted.naming.name, promoted.naming.confirmed) == ("p1234-ip45.dyn.example.jp", True)
    assert unnamed.naming.name is None and unnamed.naming.known  # rule 0 with no ptr: no PTR
    assert unnamed.transactions[0].sender == "erin@small.example"


def test_maillog_file_stamps_and_a_journal_prefix_are_read() -> None:
    """Postfix's own maillog_file writes RFC 3339 stamps; a decision log that went
    through syslog or the journal has their prefix before `ts=`."""
    postfix = read_postfix(
        "2026-12-01T10:00:00.250000+00:00 mx postfix/smtpd[9]: connect from mx.a.example[192.0.2.8]"
    )
    (conversation,) = postfix.conversations
    assert conversation.when == dt.datetime(2026, 12, 1, 10, 0, 0, 250000, dt.UTC).timestamp()
    prefixed = (
        "Dec  1 10:00:01 mx onajimi[42]: ts=2026-12-01T10:00:01.000Z decision session=f1 "
        "client=192.0.2.8 ptr=mx.a.example helo=mx.a.example from=<a@a.example> "
        "to=<b@example.com> action=pass reason=clean"
    )
    decisions = OnajimiReader("journal").lines([prefixed])
    assert (decisions.used, decisions.unreadable) == (1, 0)
    (conversation,) = decisions.conversations
    assert conversation.transactions[0].recipients == ["b@example.com"]
