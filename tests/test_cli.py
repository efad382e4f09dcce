"""The `onajimi` command as an operator runs it: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONF

ONAJIMI = [sys.executable, "-m", "gateway"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ONAJIMI, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A copy of the shipped conf/ with a SQLite store in the temp dir."""
    target = tmp_path / "conf"
    shutil.copytree(CONF, target)
    config = target / "gateway.toml"
    text = config.read_text()
    text = text.replace(
        'url = "sqlite:///var/lib/onajimi/state.db"', 'url = "sqlite://state/state.db"'
    )
    config.write_text(text)
    return config


def seed_store(config: Path, records: dict) -> None:
    """Records put in the SQLite store of `conf` (state/state.db beside it) before a run."""
    import asyncio

    from gateway.store import open_store

    async def seed() -> None:
        (config.parent / "state").mkdir()
        store = open_store(f"sqlite://{config.parent / 'state' / 'state.db'}")
        await store.open()
        for key, record in records.items():
            await store.put(key, record)
        await store.close()

    asyncio.run(seed())


def with_dns(config: Path, dns_address: str) -> Path:
    text = config.read_text().replace("nameservers = []", f'nameservers = ["{dns_address}"]')
    config.write_text(text.replace("timeout = 5 ", "timeout = 1 "))
    return config


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_check_good_config(conf: Path) -> None:
    result = run("check", "-c", str(conf))
    assert result.returncode == 0, result.stderr
    assert ": OK" in result.stdout
    assert "accept example.com" in result.stdout
    assert "allow    " in result.stdout and "entries" in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "onajimi"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("onajimi ")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (
            lambda t: t.replace("ipv4_prefix = 32", "ipv4_prefix = 40"),
            "policy.ipv4_prefix: must be at most 32",
        ),
        (
            lambda t: t.replace('accept_domains = ["example.com"]', ""),
            "relay.accept_domains: required",
        ),
        (lambda t: t + "\n[bogus]\n", "[bogus]: unknown section"),
        (lambda t: t.replace("[listen]", "[listen"), "invalid TOML"),
    ],
)
def test_check_bad_config_is_one_line_exit_2(conf: Path, edit, fragment: str) -> None:
    conf.write_text(edit(conf.read_text()))
    assert_one_line_error(run("check", "-c", str(conf)), fragment)


def test_check_bad_list_line_names_file_and_line(conf: Path) -> None:
    deny = conf.parent / "deny.txt"
    deny.write_text("192.0.2.1\n\n192.0.2.7/24\n")
    assert_one_line_error(
        run("check", "-c", str(conf)), "deny.txt:3: '192.0.2.7/24' has host bits set"
    )


def test_unreadable_config(tmp_path: Path) -> None:
    assert_one_line_error(
        run("check", "-c", str(tmp_path / "nope.toml")), "configuration file not found"
    )


@pytest.mark.parametrize(
    ("name", "reason", "rule", "reply"),
    [
        ("p1234-ip45.dyn.example.jp", "s25r_rule1", 1, "450 4.7.1 "),
        ("host12345.example.com", "s25r_rule2", 2, "450 4.7.1 "),
        ("mail.12345.example.co.jp", "s25r_rule3", 3, "450 4.7.1 "),
        ("ip1.10-20-30.example.net", "s25r_rule4", 4, "450 4.7.1 "),
        ("host1.pool2.dyn.example.net", "s25r_rule5", 5, "450 4.7.1 "),
        ("dhcp5.example.com", "s25r_rule6", 6, "450 4.7.1 "),
        ("pool-ab.dyn.optonline.net", "s25r_blacklist", None, "450 4.7.1 "),
        ("mail.example.org", "clean", None, None),
        ("mail-ot1-f41.google.com", "allowlist", None, None),
    ],
)
def test_explain_json_for_every_s25r_case(conf: Path, name, reason, rule, reply) -> None:
    result = run("explain", "203.0.113.9", "--name", name, "--json", "-c", str(conf))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    decision = data["decision"]
    assert decision["reason"] == reason and decision["stage"] == "rcpt"
    assert decision["reply"] is None if reply is None else decision["reply"].startswith(reply)
    assert data["fcrdns"] == {
        "status": "confirmed",
        "given": True,
        "ptr": [name],
        "confirmed": [name],
        "detail": "given with --name",
    }
    if reason == "allowlist":  # the allow list is read before S25R: the line, not a rule
        listed = decision["list"]
        assert listed["list"] == "allow" and re.fullmatch(r".*allow\.txt:\d+", listed["source"])
        assert "google.com" in listed["entry"] and data["s25r"] is None
        return
    s25r = data["s25r"]
    assert s25r["suspect"] is (reason != "clean") and s25r["rule"] == rule
    assert s25r["reason"] == (None if reason == "clean" else reason)
    if rule is not None:
        assert s25r["pattern"].startswith("^") and s25r["source"] is None
    if reason == "s25r_blacklist":
        assert re.fullmatch(r".*s25r-blacklist\.txt:\d+", s25r["source"]) and s25r["entry"]
    if reply is not None:
        assert data["record"] == {"kind": "none"}
        assert data["this_attempt"]["kind"] == "first" and data["this_attempt"]["counted"] is False


def test_explain_never_changes_state(conf: Path) -> None:
    for _ in range(3):
        data = json.loads(
            run(
                "explain",
                "203.0.113.9",
                "--name",
                "p1-2.dyn.example.net",
                "--json",
                "-c",
                str(conf),
            ).stdout
        )
        assert data["decision"]["reason"] == "s25r_rule1"  # never early_retry
    assert not (conf.parent / "state" / "state.db").exists()


def test_explain_with_real_dns_and_text_output(conf: Path, dns_server) -> None:
    dns_server.add_ptr("192.0.2.9", "p1234-ip45.dyn.example.jp")
    dns_server.add_host("p1234-ip45.dyn.example.jp", "192.0.2.9", ptr=False)
    dns_server.servfail.add(dns_server.reverse_name("192.0.2.66"))
    with_dns(conf, dns_server.address)
    result = run("explain", "192.0.2.9", "--helo", "pc", "-c", str(conf))
    assert result.returncode == 0, result.stderr
    assert "fcrdns        confirmed (forward-confirmed)" in result.stdout
    assert "s25r_rule1" in result.stdout and "reply         450 4.7.1" in result.stdout
    tempfail = json.loads(run("explain", "192.0.2.66", "--json", "-c", str(conf)).stdout)
    assert tempfail["decision"]["reason"] == "dns_tempfail"
    assert tempfail["decision"]["reply"].startswith("451 4.4.3")
    assert tempfail["fcrdns"]["status"] == "tempfail" and tempfail["fcrdns"]["given"] is False
    no_ptr = json.loads(run("explain", "192.0.2.10", "--json", "-c", str(conf)).stdout)
    assert no_ptr["decision"]["reason"] == "s25r_rule0"
    assert no_ptr["fcrdns"]["status"] == "none" and no_ptr["s25r"]["rule"] == 0
    found = json.loads(run("explain", "192.0.2.9", "--json", "-c", str(conf)).stdout)
    assert found["fcrdns"]["status"] == "confirmed" and found["fcrdns"]["given"] is False
    dns_server.add_ptr("192.0.2.11", "mail.elsewhere.example")  # resolves to nothing
    mismatch = json.loads(run("explain", "192.0.2.11", "--json", "-c", str(conf)).stdout)
    assert mismatch["fcrdns"]["status"] == "mismatch"
    assert mismatch["fcrdns"]["ptr"] == ["mail.elsewhere.example"]


def test_explain_relay_and_null_sender(conf: Path) -> None:
    relay = json.loads(
        run(
            "explain",
            "203.0.113.9",
            "--name",
            "mail.example.org",
            "--rcpt",
            "x@elsewhere.example",
            "--json",
            "-c",
            str(conf),
        ).stdout
    )
    assert relay["decision"]["reason"] == "relay_denied"
    null = json.loads(
        run(
            "explain",
            "203.0.113.9",
            "--name",
            "p1-2.dyn.example.net",
            "--sender",
            "",
            "--json",
            "-c",
            str(conf),
        ).stdout
    )
    assert null["decision"]["stage"] == "data"
    assert null["decision"]["reply"].startswith("451 4.7.1")
    assert null["sender"] == {"address": "", "assumed": False}


def test_explain_bad_address(conf: Path) -> None:
    assert_one_line_error(run("explain", "1.2.3", "-c", str(conf)), "'1.2.3' is not an IP address")


def test_allow_deny_add_list_remove_and_explain_sees_them(conf: Path) -> None:
    added = run(
        "deny", "add", "198.51.100.0/24", "--ttl", "2h", "--comment", "hammering", "-c", str(conf)
    )
    assert added.returncode == 0, added.stderr
    assert run("allow", "add", "partner.example", "-c", str(conf)).returncode == 0
    listing = run("deny", "list", "--json", "-c", str(conf))
    entries = json.loads(listing.stdout)
    assert [e["entry"] for e in entries] == ["198.51.100.0/24"]
    assert entries[0]["comment"] == "hammering" and entries[0]["expires"] > entries[0]["added"]
    data = json.loads(run("explain", "198.51.100.7", "--json", "-c", str(conf)).stdout)
    assert data["decision"]["reason"] == "denylist" and data["decision"]["stage"] == "connect"
    assert data["decision"]["list"] == {
        "list": "deny",
        "source": "dynamic deny",  # from the store (onajimi deny add), not a file
        "entry": "198.51.100.0/24",
    }
    partner = json.loads(
        run(
            "explain", "192.0.2.1", "--name", "mx.partner.example", "--json", "-c", str(conf)
        ).stdout
    )
    assert partner["decision"]["reason"] == "allowlist"
    assert run("deny", "remove", "198.51.100.0/24", "-c", str(conf)).returncode == 0
    missing = run("deny", "remove", "198.51.100.0/24", "-c", str(conf))
    assert missing.returncode == 1 and "no such entry" in missing.stdout
    status = json.loads(run("status", "--json", "-c", str(conf)).stdout)
    assert status["dynamic_allow"] == 1 and status["dynamic_deny"] == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["deny", "add", "192.0.2.7/24"], "has host bits set"),
        (["deny", "add", "/unclosed"], "no closing '/'"),
        (["allow", "add", "192.0.2.1", "--ttl", "soon"], "'soon' is not a duration"),
        (["allow", "add", "192.0.2.1 OK"], "without an action"),
    ],
)
def test_bad_entries_are_refused(conf: Path, args: list[str], fragment: str) -> None:
    assert_one_line_error(run(*args, "-c", str(conf)), fragment)


def test_status_counts(conf: Path) -> None:
    result = run("status", "-c", str(conf))
    assert result.returncode == 0, result.stderr
    assert "pending          0" in result.stdout and "sqlite://" in result.stdout


def test_usage_errors_are_one_line() -> None:
    assert_one_line_error(run("explain"), "required: ip")
    assert_one_line_error(run("frobnicate"), "invalid choice")


def test_explain_shows_the_count_that_matters(conf: Path) -> None:
    """A key with two counted early retries: the same message again would be the third;
    another message of the backlog would not count."""
    import time

    from gateway.policy.keys import message_key
    from gateway.policy.records import Pending

    now = time.time()
    spam = message_key("win@lottery.example", "bob@example.com", 2048)
    record = Pending(
        now - 60, now - 20, 7, 2, "s25r_rule1", now + 86400, "203.0.113.9", "",
        ((spam, now - 20, ""),), now - 20, True,
    )  # fmt: skip

    seed_store(conf, {"defer:203.0.113.9": record})
    base = ["explain", "203.0.113.9", "--name", "p1-2.dyn.example.net", "-c", str(conf)]
    retry = run(*base, "--sender", "win@lottery.example", "--rcpt", "bob@example.com",
                "--size", "2048")  # fmt: skip
    assert retry.returncode == 0, retry.stderr
    assert "early retries counted 2 of 5" in retry.stdout
    assert "this attempt  early_retry (counts: early retries 3 of 5)" in retry.stdout
    assert "this attempt  new_message (not counted); --size N" in run(*base).stdout
    other = json.loads(run(*base, "--json").stdout)
    assert other["this_attempt"] == {
        "kind": "new_message",
        "counted": False,
        "early": 2,
        "impatient_retries": 5,
    }
    assert other["decision"]["reason"] == "s25r_rule1"
    record = other["record"]
    assert record["kind"] == "pending" and record["attempts"] == 7 and record["early"] == 2
    assert record["first_seen"] == pytest.approx(now - 60) and record["messages"] == 1
    # Which remembered message the attempt is a retry of, or why it is none.
    # The command reads its own clock a moment after `now`: allow it a few seconds.
    tried = re.search(r"message       a retry of the message first tried (\d+) s ago", retry.stdout)
    assert tried and 60 <= int(tried.group(1)) <= 65, retry.stdout
    assert other["message"].startswith("a new message: none of 1 remembered matches")


def test_explain_shows_a_proven_pool_and_its_proof(conf: Path) -> None:
    import time

    from gateway.policy.records import Pool

    now = time.time()
    seed_store(conf, {"pool:pool.example": Pool(now - 600, now - 60, now + 86400)})
    base = ["explain", "203.0.113.9", "--name", "p1-2.dyn.example.net", "-c", str(conf)]
    shown = run(*base, "--sender", "bounce@pool.example")
    assert shown.returncode == 0, shown.stderr
    assert "sender domain  pool.example proven a pool at" in shown.stdout
    typed = json.loads(run(*base, "--sender", "bounce@pool.example", "--json").stdout)
    assert typed["sender_pool"]["domain"] == "pool.example"
    assert typed["proof"] is None  # no SPF answer here (no DNS): no proof, deferred
    assert typed["decision"]["action"] == "defer"


def test_explain_shows_failed_authentications_and_why_a_client_is_boxed(conf: Path) -> None:
    import time

    from gateway.policy.records import Penalty, Pregreet, Strikes

    now = time.time()
    seed_store(
        conf,
        {
            "strikes:203.0.113.9/auth_failures": Strikes(now - 60, 5, now + 3540),
            "pregreet:203.0.113.9": Pregreet(now - 30, now + 86370),
            "penalty:203.0.113.9": Penalty(
                now - 1, now + 3599, 5, "203.0.113.9", reason="auth_failures"
            ),
        },
    )
    base = ["explain", "203.0.113.9", "--name", "p1-2.dyn.example.net", "-c", str(conf)]
    text = run(*base)
    assert text.returncode == 0, text.stderr
    assert re.search(r"strikes \(auth failures\) +5 of 5 since", text.stdout)
    assert "(auth_failures)" in text.stdout
    assert "Too many failed authentications; come back in" in text.stdout
    typed = json.loads(run(*base, "--json").stdout)
    assert typed["strikes"]["auth_failures"]["count"] == 5
    assert typed["pregreet"]["action"] == "drop" and "talked before the greeting" in text.stdout
    assert typed["strikes"]["auth_failures"]["limit"] == 5
    assert typed["penalty"]["reason"] == "auth_failures"
    assert typed["decision"]["reason"] == "auth_failures"
