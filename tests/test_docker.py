"""docker/: what can be checked without a Docker engine (tests/test_compose.py runs it).

The files must agree with each other: the gateway config passes `onajimi check`; the
ports, service names and volume paths in compose.yaml match that config, the Postfix
backend and the Prometheus scrape target; every metric the dashboard queries exists in a
running gateway's /metrics; the image is built the way the compose file expects it.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import smtplib
import subprocess
import sys
import tomllib
from pathlib import Path
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
SHIPPED = "/usr/share/onajimi/"  # where the image puts conf/'s lists (Dockerfile)


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def image_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docker/onajimi/gateway.toml as the image sees it: a copy of docker/onajimi (mounted
    at /etc/onajimi) whose /usr/share/onajimi/ lists are the repository's conf/."""
    conf = tmp_path_factory.mktemp("etc-onajimi")
    for file in (DOCKER / "onajimi").iterdir():
        (conf / file.name).write_text(file.read_text().replace(SHIPPED, f"{REPO / 'conf'}/"))
    return conf / "gateway.toml"


def test_gateway_config_passes_check(image_conf: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(image_conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "gateway.toml: OK" in result.stdout
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"COPY conf/allow.txt conf/deny.txt conf/s25r-blacklist.txt {SHIPPED}" in dockerfile


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


def test_compose_agrees_with_the_gateway_config(image_conf: Path) -> None:
    services = compose()["services"]
    assert set(services) == {"gateway", "postfix", "redis", "prometheus", "grafana"}
    settings = load_settings(image_conf)
    gateway = services["gateway"]
    # IPv4 only, published by NAT (the client's own address); the port is 25 unless the
    # compose test moves it.
    (published,) = gateway["ports"]
    host_port, container_port = re.fullmatch(r"0\.0\.0\.0:(.+):(\d+)", published).groups()
    assert host_port == "${ONAJIMI_SMTP_PORT:-25}"
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


def test_postfix_trusts_the_gateways_fixed_address_for_xclient_only(image_conf: Path) -> None:
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
    settings = load_settings(image_conf)
    assert settings.relay.accept_domains == ("example.com",)
    # Room for the Received header the gateway adds.
    assert int(main["message_size_limit"]) > settings.limits.max_message_size


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


def test_prometheus_scrapes_the_gateway_metrics_port(image_conf: Path) -> None:
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    (target,) = config["scrape_configs"][0]["static_configs"][0]["targets"]
    host, port = target.split(":")
    listen = load_settings(image_conf).metrics.listen
    assert host == "gateway" and int(port) == listen.port and listen.host == "0.0.0.0"
    prometheus = compose()["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    # Its history survives a recreated container.
    assert (
        "prometheus:/prometheus" in prometheus["volumes"] and "prometheus" in compose()["volumes"]
    )


def test_dockerfile_runs_unprivileged_with_a_healthcheck() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^USER onajimi$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert re.search(r"^EXPOSE 2525 9125$", dockerfile, re.M)


def test_every_image_starts_from_one_pinned_base() -> None:
    """A dated Debian tag, never a moving one, the same in both Dockerfiles and the compose
    file's BASE_IMAGE default (which the compose test replaces by a locally made base)."""
    bases = set()
    for dockerfile in (DOCKER / "Dockerfile", DOCKER / "postfix" / "Dockerfile"):
        text = dockerfile.read_text()
        bases |= set(re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M))
        assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M), dockerfile
    (base,) = bases
    assert re.fullmatch(r"debian:bookworm-20\d{6}-slim", base)
    for name in ("gateway", "postfix"):
        args = compose()["services"][name]["build"]["args"]
        assert args["BASE_IMAGE"] == f"${{ONAJIMI_BASE_IMAGE:-{base}}}"
    for name in ("redis", "prometheus", "grafana"):
        assert re.search(r":v?\d+\.\d+\.\d+", compose()["services"][name]["image"]), name


def test_dependencies_are_a_locked_layer_before_the_code() -> None:
    """A change to gateway/ rebuilds the last layers only; every dependency is pinned with
    its hashes, and the lock covers every dependency pyproject.toml names."""
    dockerfile = (DOCKER / "Dockerfile").read_text()
    lock_layer = dockerfile.index("COPY docker/requirements.lock")
    assert lock_layer < dockerfile.index("COPY gateway")
    assert "--require-hashes -r /tmp/requirements.lock" in dockerfile
    assert "--no-deps --no-build-isolation" in dockerfile
    lock = (DOCKER / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", lock, re.M))
    assert lock.count("==") == len(pins) and lock.count("--hash=sha256:") >= len(pins)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    named = {re.split(r"[<>=;\[ ]", d)[0].lower() for d in project["project"]["dependencies"]}
    build = {re.split(r"[<>=;\[ ]", d)[0].lower() for d in project["build-system"]["requires"]}
    assert named | build <= set(pins), (named | build) - set(pins)


def test_the_gateway_service_is_hardened_and_reads_the_mounted_config() -> None:
    gateway = compose()["services"]["gateway"]
    assert gateway["read_only"] is True and gateway["tmpfs"] == ["/tmp"]
    assert gateway["cap_drop"] == ["ALL"] and "cap_add" not in gateway  # it binds 2525
    assert gateway["init"] is True  # SIGHUP and SIGTERM reach it
    assert "./onajimi:/etc/onajimi:ro" in gateway["volumes"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    # `docker exec ... onajimi ...` reads the running gateway's config (and so its store).
    assert "ONAJIMI_CONFIG=/etc/onajimi/gateway.toml" in dockerfile
    assert re.search(r'^CMD \["run"\]$', dockerfile, re.M)


def test_every_service_is_healthchecked_rotated_and_waited_for() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["logging"]["options"] == {"max-size": "10m", "max-file": "5"}, name
        assert "healthcheck" in service or name == "gateway", name  # its image has one
    waits = {
        name: dep["condition"]
        for service in services.values()
        for name, dep in service.get("depends_on", {}).items()
    }
    assert waits == {
        "postfix": "service_healthy",
        "redis": "service_healthy",
        "prometheus": "service_healthy",
    }


def test_grafana_has_no_default_admin_password() -> None:
    grafana = compose()["services"]["grafana"]
    environment = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    assert environment["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert compose()["secrets"]["grafana_admin_password"]["file"] == "./grafana/admin-password"
    assert "docker/grafana/admin-password" in (REPO / ".gitignore").read_text().split()


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


def test_the_certificate_has_a_volume_the_gateway_can_write(image_conf: Path) -> None:
    settings = load_settings(image_conf)
    directory = str(settings.tls.self_signed_dir)
    mounts = compose()["services"]["gateway"]["volumes"]
    assert any(m.split(":")[1] == directory and m.split(":")[0] == "certs" for m in mounts)
    assert "certs" in compose()["volumes"]
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert f"install -d -o onajimi -g onajimi -m 700 {directory}" in dockerfile


def test_the_postfix_backend_offers_sasl_with_a_test_user(image_conf: Path) -> None:
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
    assert load_settings(image_conf).auth.mode == "auto"
