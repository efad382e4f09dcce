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
import subprocess
import sys
from urllib.parse import urlsplit

import yaml

from gateway.config import load_settings
from tests.conftest import REPO
from tests.gatewayenv import start_env
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


def test_postfix_trusts_the_compose_network_for_xclient_only() -> None:
    main = (DOCKER / "postfix" / "main.cf").read_text()
    trusted = re.search(r"^smtpd_authorized_xclient_hosts\s*=\s*(\S+)", main, re.M).group(1)
    subnet = compose()["networks"]["mail"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_network(trusted) == ipaddress.ip_network(subnet)
    assert "example.com" in re.search(r"^virtual_mailbox_domains\s*=\s*(.+)$", main, re.M).group(1)
    assert load_settings(DOCKER / "gateway.toml").relay.accept_domains == ("example.com",)


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
