"""`onajimi simulate` as an operator runs it: the table, --vs, --json, --plot, errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import CONF
from tests.test_cli import assert_one_line_error, run

SHIPPED = str(CONF / "gateway.toml")

SMALL = """
builtins = false

[[class]]
name = "postfix/s25r"
like = "postfix/s25r"
senders = 10
bursts_per_day = 2.0

[[class]]
name = "gmail/s25r"
like = "gmail/s25r"
senders = 5

[[class]]
name = "bot-once/s25r"
like = "bot-once/s25r"
senders = 10
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "senders.toml"
    path.write_text(SMALL)
    return path


@pytest.fixture
def slower(tmp_path: Path) -> Path:
    """The shipped configuration with min_retry_delay 900 (a copy beside the list files)."""
    path = CONF / "gateway.toml"
    text = path.read_text().replace("min_retry_delay = 300 ", "min_retry_delay = 900 ")
    assert "min_retry_delay = 900" in text
    target = tmp_path / "conf"
    target.mkdir()
    for name in ("allow.txt", "deny.txt", "s25r-blacklist.txt"):
        (target / name).write_text((CONF / name).read_text())
    (target / "slower.toml").write_text(text)
    return target / "slower.toml"


def test_the_table_names_every_class_and_the_store(small: Path) -> None:
    result = run("simulate", "-c", SHIPPED, "--senders", str(small), "--days", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"onajimi simulate: {SHIPPED}, 2 days, seed 1")
    for name in ("postfix/s25r", "gmail/s25r", "bot-once/s25r", "legitimate (all)", "bots (all)"):
        assert f"\n{name} " in out
    assert "store at the end of day 2:" in out
    bots = next(line for line in out.splitlines() if line.startswith("bot-once/s25r"))
    assert bots.split()[-1] == "0.0%"  # never retries: nothing accepted


def test_a_seed_makes_the_run_repeatable(small: Path) -> None:
    args = ("simulate", "-c", SHIPPED, "--senders", str(small), "--days", "2", "--seed", "5")
    first, again = run(*args), run(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    other = run(*args[:-1], "6")
    assert other.stdout != first.stdout


def test_vs_shows_both_configurations_and_the_difference(small: Path, slower: Path) -> None:
    result = run(
        "simulate", "-c", SHIPPED, "--vs", str(slower), "--senders", str(small), "--days", "2"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"A = {SHIPPED}" in out and f"B = {slower}" in out
    row = next(line for line in out.splitlines() if line.startswith("postfix/s25r"))
    cells = row.split()
    # class, delivered A B, lost A B, p90 A B Δ, max A B Δ, accepted A B Δ
    assert len(cells) == 14, row
    assert cells[10].startswith("+"), row  # a longer delay costs the misjudged MTA more


def test_json_has_the_documented_fields(small: Path, slower: Path) -> None:
    result = run(
        "simulate",
        "-c",
        SHIPPED,
        "--vs",
        str(slower),
        "--senders",
        str(small),
        "--days",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["days"] == 1 and data["seed"] == 1
    assert [r["config"] for r in data["runs"]] == [SHIPPED, str(slower)]
    for one in data["runs"]:
        assert set(one) == {
            "config",
            "min_retry_delay",
            "classes",
            "totals",
            "store",
            "decisions",
            "sessions",
        }
        assert set(one["store"]) == {"records", "by_kind"}
        assert one["store"]["records"] == sum(one["store"]["by_kind"].values())
        names = [c["class"] for c in one["classes"]]
        assert names == ["postfix/s25r", "gmail/s25r", "bot-once/s25r"]
        for figures in one["classes"]:
            assert figures["delivered"] + figures["lost"] == figures["messages"]
            assert figures["accepted_attempts"] <= figures["attempts"]
            delay = figures["delay"]
            if figures["delivered"]:
                assert set(delay) == {"p50", "p90", "max"}
                assert 0 <= delay["p50"] <= delay["p90"] <= delay["max"]
            else:
                assert delay is None
        assert one["totals"]["bots"]["accepted_share"] == 0.0
    assert [d["class"] for d in data["differences"]] == [
        "postfix/s25r",
        "gmail/s25r",
        "bot-once/s25r",
    ]
    assert data["differences"][0]["delay_max"] > 0


def test_plot_writes_an_svg_with_a_row_per_delivering_class(small: Path, tmp_path: Path) -> None:
    picture = tmp_path / "delays.svg"
    result = run(
        "simulate", "-c", SHIPPED, "--senders", str(small), "--days", "1", "--plot", str(picture)
    )
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(picture.read_text())
    labels = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert "postfix/s25r" in labels and "gmail/s25r" in labels
    assert "bot-once/s25r" not in labels  # nothing delivered: no row


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[class]\n", "invalid TOML"),
        ("bogus = 1\n", "bogus: unknown key"),
        ('[senders]\n"nobody/s25r" = 3\n', "senders.nobody/s25r: no such class"),
        ('[senders]\n"postfix/s25r" = -1\n', "senders.postfix/s25r: must be a whole number"),
        ('[[class]]\nname = "x"\nlike = "sendmail/clean"\n', "class[0] (x).like: must name"),
        ('[[class]]\nname = "x"\nlike = "postfix/s25r"\nrdns = "real"\n', "no real template"),
        (
            '[[class]]\nname = "x"\nlike = "postfix/s25r"\n'
            'retry = { kind = "exim", rules = "F,2h" }\n',
            "class[0] (x).retry.rules:",
        ),
        (
            '[[class]]\nname = "x"\nlike = "postfix/s25r"\nretry = { kind = "interval" }\n',
            "needs low and high",
        ),
        ('[[class]]\nname = "x"\nlike = "postfix/s25r"\nbacklog = [3, 1]\n', "backlog: must be"),
        (
            '[[class]]\nname = "x"\nlike = "postfix/s25r"\nnames = { s25r = "{x}.example" }\n',
            "bad template",
        ),
        ("builtins = false\n", "no class has any senders"),
        ("neighbours = 0\n", "neighbours: must be a whole number from 1 to 254"),
    ],
)
def test_a_bad_senders_file_is_one_line_and_exit_2(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = run("simulate", "-c", SHIPPED, "--senders", str(path), "--days", "1")
    assert_one_line_error(result, fragment)
    assert result.stderr.startswith(f"onajimi: {path}")


def test_a_missing_senders_file_and_a_bad_days_are_one_line(tmp_path: Path) -> None:
    missing = run("simulate", "-c", SHIPPED, "--senders", str(tmp_path / "none.toml"))
    assert_one_line_error(missing, "senders file not found")
    days = run("simulate", "-c", SHIPPED, "--days", "0")
    assert_one_line_error(days, "--days: must be more than 0")
