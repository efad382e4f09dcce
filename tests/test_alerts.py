"""docker/prometheus/: the alert rules, checked by a real promtool.

promtool comes from Debian's prometheus package, unpacked into .cache/debian by `make test`
(installing the package would start a Prometheus server). The rules may only name what a
running gateway exports: metric names from its exposition, label values from the
vocabulary (gateway/policy/vocabulary.py), the job from prometheus.yml.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import RECORD_KINDS, Metrics
from gateway.policy import vocabulary as words
from tests.conftest import REPO

PROMETHEUS = REPO / "docker" / "prometheus"
UNIT_TESTS = REPO / "tests" / "data" / "alerts_test.yml"
PROMTOOL = REPO / ".cache" / "debian" / "prometheus" / "usr" / "bin" / "promtool"
needs_promtool = pytest.mark.skipif(
    not PROMTOOL.exists(),
    reason="promtool not unpacked into .cache/debian/prometheus: `make test` does it "
    "(or `.ci/unpack-debian-packages prometheus`)",
)
# The words each label of an alert may use (a result is relayed, AUTH's or the tarpit's).
WORDS = {
    "action": set(words.Action),
    "reason": set(words.Reason),
    "outcome": set(words.Retry),
    "limit": set(words.Limit),
    "result": set(words.RelayResult) | set(words.AuthResult) | set(words.TarpitResult),
    "kind": set(RECORD_KINDS),
}
SELECTOR = re.compile(r"\b([a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def promtool(*args: str, cwd: object = None) -> None:
    result = subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert result.returncode == 0, result.stdout + result.stderr


def alerts() -> dict:
    return yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())


def rules() -> list[dict]:
    return [rule for group in alerts()["groups"] for rule in group["rules"]]


def job_name() -> str:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    return job["job_name"]


@needs_promtool
def test_promtool_accepts_the_config_and_its_rules() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"] and config["global"]["evaluation_interval"]
    promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))  # loads alerts.yml too
    promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))


@needs_promtool
def test_the_alerts_fire_when_they_should_and_only_then(tmp_path) -> None:
    """The cases of tests/data/alerts_test.yml, on alerts.yml without its annotations:
    promtool compares their text too, and that text is for people."""
    stripped = alerts()
    for group in stripped["groups"]:
        for rule in group["rules"]:
            del rule["annotations"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(stripped))
    shutil.copy(UNIT_TESTS, tmp_path)
    promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    cases = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    assert {c["alertname"] for c in checks if c["exp_alerts"]} == set(names)
    (quiet,) = (case for case in cases if case["name"] == "quiet gateway")
    assert sorted(
        c["alertname"] for c in quiet["alert_rule_test"] if not c["exp_alerts"]
    ) == sorted(names)


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    for rule in rules():
        assert rule["for"], rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_alerts_use_only_what_the_gateway_exports() -> None:
    exposition = Metrics().exposition().decode()
    samples = [s for family in text_string_to_metric_families(exposition) for s in family.samples]
    exported = {sample.name for sample in samples}
    exprs = [rule["expr"] for rule in rules()]
    wanted = {name for e in exprs for name in re.findall(r"\bonajimi_[a-z_]+", e)}
    assert wanted and wanted <= exported, wanted - exported
    for metric, matchers in (s for e in exprs for s in SELECTOR.findall(e)):
        labels = {}
        for label, op, value in MATCHER.findall(matchers):
            assert op == "=", f"{metric}: only = matchers are checked here"
            labels[label] = value
        if metric == "up":
            assert labels == {"job": job_name()}
            continue
        for label, value in labels.items():
            assert value in WORDS[label], f"{metric}{{{label}={value!r}}}"
        # The gateway creates every series up front: the one selected is there, at 0.
        assert any(s.name == metric and labels.items() <= s.labels.items() for s in samples), (
            f"{metric}{{{matchers}}}"
        )
