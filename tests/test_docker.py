"""docker/: what can be checked without a Docker engine (none runs on the build machines).

The files must agree with each other: the gateway config passes `onajimi check`; the
ports, service names and volume paths in compose.yaml match that config, the Postfix
backend and the Prometheus scrape target; every metric the dashboard queries exists in a
running gateway's /metrics.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import smtplib
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config import load_settings
from tests.conftest import REPO
from tests.gatewayenv import start_env
from tests.postfix import PrivatePostfix
from tests.postfix import available as postfix_unavailable
from tests.postfix import free_port as postfix_free_port
from tests.test_observability import http_get

DOCKER = REPO / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_gateway_config_passes_check() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(DOCKER / "gateway.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "docker/gateway.toml: OK" in result.stdout


def test_both_compose_versions_accept_the_file() -> None:
    """Compose v2 takes a top-level `name:`; Debian 12's Compose v1 refuses the whole file
    for it ('name' does not match any of the regexes). Without it, v1 reads it (below)."""
    assert "name" not in compose() and "version" not in compose()
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian's Compose v1) not installed: make test installs it")
    result = subprocess.run(
        ["docker-compose", "-p", "onajimi", "-f", str(DOCKER / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(yaml.safe_load(result.stdout)["services"]) == set(compose()["services"])


def test_compose_agrees_with_the_gateway_config() -> None:
    services = compose()["services"]
    assert set(services) == {"gateway", "postfix", "redis", "prometheus", "grafana"}
    settings = load_settings(DOCKER / "gateway.toml")
    gateway = services["gateway"]
    host_port, container_port = gateway["ports"][0].split(":")[-2:]
    assert host_port == "25"
    assert {int(container_port)} == {a.port for a in settings.listen.addresses}
    # The shared store is the redis service, on its default port.
    store = urlsplit(settings.store.url)
    assert store.scheme == "redis" and store.hostname == "redis" and store.port == 6379
    assert "redis" in gateway["depends_on"] and "--port" not in services["redis"]["command"]
    # The backend is the postfix service, on the port its master.cf listens on.
    assert settings.backend.host == "postfix" and settings.backend.forward_client == "xclient"
    master = (DOCKER / "postfix" / "master.cf").read_text()
    listeners = re.findall(r"^(\d+)\s+inet\s", master, re.M)
    assert listeners == [str(settings.backend.port)]
    assert str(settings.backend.port) in services["postfix"]["expose"]


def main_cf() -> dict[str, str]:
    """docker/postfix/main.cf as settings (no continuation lines in it)."""
    found = {}
    for line in (DOCKER / "postfix" / "main.cf").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def test_postfix_trusts_the_gateways_fixed_address_for_xclient_only() -> None:
    main = main_cf()
    gateway = compose()["services"]["gateway"]["networks"]["mail"]["ipv4_address"]
    subnet = compose()["networks"]["mail"]["ipam"]["config"][0]["subnet"]
    assert main["smtpd_authorized_xclient_hosts"] == gateway
    assert ipaddress.ip_address(gateway) in ipaddress.ip_network(subnet)
    # No network may relay: with XCLIENT anyone trusted could claim to be 127.0.0.1.
    assert main["mynetworks"] == "" and "permit_mynetworks" not in main.values()
    assert "permit_mynetworks" not in main["smtpd_recipient_restrictions"]
    assert "permit_mynetworks" not in main["smtpd_relay_restrictions"]
    assert "example.com" in main["virtual_mailbox_domains"]
    assert load_settings(DOCKER / "gateway.toml").relay.accept_domains == ("example.com",)
    assert (
        int(main["message_size_limit"])
        > load_settings(DOCKER / "gateway.toml").limits.max_message_size
    )  # room for the Received header the gateway adds


@pytest.mark.skipif(postfix_unavailable() is not None, reason=str(postfix_unavailable()))
def test_the_backend_config_refuses_relay_xclient_from_others_and_unknown_users() -> None:
    """docker/postfix/main.cf's policy lines in a real Postfix (loopback standing in for
    the compose network: 127.0.0.1 is the gateway's fixed address, 127.0.0.2 another
    container): no open relay even through XCLIENT, XCLIENT for the gateway alone, real
    recipients only, and a SIZE above the gateway's."""
    main = main_cf()
    instance = PrivatePostfix(postfix_free_port())
    instance.extra = {
        "mynetworks": main["mynetworks"],
        "smtpd_authorized_xclient_hosts": "127.0.0.1",
        "smtpd_relay_restrictions": main["smtpd_relay_restrictions"],
        "smtpd_recipient_restrictions": main["smtpd_recipient_restrictions"],
        "message_size_limit": main["message_size_limit"],
        "virtual_mailbox_domains": main["virtual_mailbox_domains"],
        "virtual_mailbox_base": str(instance.mail),
        "virtual_mailbox_maps": f"texthash:{DOCKER / 'postfix' / 'vmailbox'}",
    }
    instance.start()
    try:
        with smtplib.SMTP("127.0.0.1", instance.port, source_address=("127.0.0.2", 0)) as other:
            other.ehlo("intruder.test")
            code, text = other.docmd("XCLIENT", "ADDR=127.0.0.1 NAME=localhost")
            assert code == 550 and b"insufficient authorization" in text
        with smtplib.SMTP("127.0.0.1", instance.port) as gateway:
            gateway.ehlo("gateway.test")
            assert int(gateway.esmtp_features["size"]) == int(main["message_size_limit"])
            assert gateway.docmd("XCLIENT", "ADDR=127.0.0.1 NAME=localhost")[0] == 220
            gateway.ehlo("gateway.test")
            assert gateway.docmd("MAIL", "FROM:<a@sender.example>")[0] == 250
            code, text = gateway.docmd("RCPT", "TO:<victim@elsewhere.example>")
            assert code == 554 and b"Relay access denied" in text  # not mynetworks
            code, text = gateway.docmd("RCPT", "TO:<nobody@example.com>")
            assert code == 550 and b"5.1.1" in text
            assert gateway.docmd("RCPT", "TO:<bob@example.com>")[0] == 250
    finally:
        instance.stop()


def test_prometheus_scrapes_the_gateway_metrics_port() -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    (target,) = config["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    listen = load_settings(DOCKER / "gateway.toml").metrics.listen
    assert host == "gateway" and int(port) == listen.port and listen.host == "0.0.0.0"


def test_dockerfile_runs_unprivileged_with_a_healthcheck() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim", dockerfile, re.M)
    assert re.search(r"^USER onajimi$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert re.search(r"^EXPOSE 2525 9125$", dockerfile, re.M)


async def test_every_dashboard_metric_exists_in_the_gateway() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "onajimi.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    wanted = {name for e in exprs for name in re.findall(r"\bonajimi_[a-z_]+", e)}
    assert len(dashboard["panels"]) >= 6 and wanted
    env = await start_env({"metrics": {"listen": "127.0.0.1:0"}})
    try:
        _, body = await http_get(env.gateway.endpoint.port, "/metrics")
    finally:
        await env.close()
    exposed = {
        line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and line[0] != "#"
    }
    assert wanted <= exposed, wanted - exposed
    provisioning = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "dashboards" / "onajimi.yml").read_text()
    )
    mounts = compose()["services"]["grafana"]["volumes"]
    assert any(m.split(":")[1] == provisioning["providers"][0]["options"]["path"] for m in mounts)


def test_the_certificate_has_a_volume_the_gateway_can_write() -> None:
    settings = load_settings(DOCKER / "gateway.toml")
    directory = str(settings.tls.self_signed_dir)
    mounts = compose()["services"]["gateway"]["volumes"]
    assert any(m.split(":")[1] == directory and m.split(":")[0] == "certs" for m in mounts)
    assert "certs" in compose()["volumes"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"install -d -o onajimi -g onajimi -m 700 {directory}" in dockerfile


def test_the_postfix_backend_offers_sasl_with_a_test_user() -> None:
    main = (DOCKER / "postfix" / "main.cf").read_text()
    assert re.search(r"^smtpd_sasl_auth_enable\s*=\s*yes$", main, re.M)
    restrictions = re.search(r"^smtpd_recipient_restrictions\s*=\s*(.+)$", main, re.M).group(1)
    assert restrictions.index("permit_sasl_authenticated") < restrictions.index(
        "reject_unauth_destination"
    )
    sasl = (DOCKER / "postfix" / "smtpd.conf").read_text()
    assert "auxprop_plugin: sasldb" in sasl and "sasldb_path: /etc/sasldb2" in sasl
    environment = compose()["services"]["postfix"]["environment"]
    # No default password: a known login on a public port 25 would be an open relay.
    assert environment["SASL_USER"] == "test@example.com"
    assert environment["SASL_PASSWORD"] == "${ONAJIMI_TEST_PASSWORD:-}"
    start = (DOCKER / "postfix" / "start.sh").read_text()
    assert "saslpasswd2 -p" in start and start.rstrip().endswith("exec postfix start-fg")
    assert '[ -n "${SASL_PASSWORD:-}" ]' in start
    assert load_settings(DOCKER / "gateway.toml").auth.mode == "auto"
