"""Configuration: the shipped file carries every key at its default; errors name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.config import (
    SECTIONS,
    default_values,
    load_settings,
    settings_from_mapping,
)
from gateway.errors import ConfigError
from tests.conftest import CONF, make_settings

pytestmark = pytest.mark.unit  # pure: make unit runs it (tests/nosocket.py)


def test_shipped_config_has_every_key_at_its_default() -> None:
    shipped = tomllib.loads((CONF / "gateway.toml").read_text())
    defaults = default_values()
    assert set(shipped) == set(SECTIONS)
    for section, values in defaults.items():
        assert set(shipped[section]) == set(values), section
        for key, default in values.items():
            if default is None:  # required, no default: relay.accept_domains
                continue
            assert shipped[section][key] == default, f"{section}.{key}"


def test_shipped_config_loads_and_resolves_paths() -> None:
    settings = load_settings(CONF / "gateway.toml")
    assert settings.s25r.blacklist_files == (CONF.resolve() / "s25r-blacklist.txt",)
    assert settings.lists.allow_files == (CONF.resolve() / "allow.txt",)
    assert str(settings.listen.addresses[1]) == "[::]:25"
    assert settings.backend_helo == "mx.example.com"
    assert settings.store.url == "sqlite:///var/lib/onajimi/state.db"


def test_relative_store_path_starts_at_config_dir(tmp_path: Path) -> None:
    s = settings_from_mapping(
        {
            "relay": {"accept_domains": ["example.com"]},
            "store": {"url": "sqlite://state.db"},
            "s25r": {"blacklist_files": []},
            "lists": {"allow_files": [], "deny_files": []},
        },
        "x.toml",
        tmp_path,
    )
    assert s.store.url == f"sqlite://{tmp_path / 'state.db'}"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"policy": {"ipv4_prefix": 33}}, "policy.ipv4_prefix: must be at most 32, got 33"),
        ({"policy": {"ipv6_prefix": -1}}, "policy.ipv6_prefix: must be at least 0"),
        ({"policy": {"min_retry_delay": -5}}, "policy.min_retry_delay: must be at least 0 seconds"),
        ({"policy": {"defer": "some"}}, "policy.defer: must be one of 'suspect', 'all'"),
        ({"policy": {"key": 3}}, "policy.key: must be one of 'client', 'triplet', got 3"),
        ({"policy": {"lump_by_rdns": "yes"}}, "policy.lump_by_rdns: must be true or false"),
        (
            {"policy": {"impatient_retries": 2.5}},
            "policy.impatient_retries: must be a whole number",
        ),
        (
            {"policy": {"retry_window": 100}},
            "policy.retry_window: must be longer than policy.min_retry_delay",
        ),
        (
            {"policy": {"defer_text": "wait {minutes}"}},
            "policy.defer_text: unknown placeholder {minutes}",
        ),
        (
            {"policy": {"trusted_networks": ["10.0.0.1/8"]}},
            "policy.trusted_networks: [0]: '10.0.0.1/8' is not a network",
        ),
        ({"policy": {"colour": "blue"}}, "policy.colour: unknown setting"),
        ({"bogus": {"x": 1}}, "[bogus]: unknown section"),
        (
            {"listen": {"addresses": ["0.0.0.0"]}},
            "listen.addresses: [0]: '0.0.0.0': expected HOST:PORT",
        ),
        ({"listen": {"addresses": ["[::1:25"]}}, "listen.addresses: [0]: '[::1:25': missing ']'"),
        ({"listen": {"addresses": ["0.0.0.0:99999"]}}, "port must be a number from 0 to 65535"),
        ({"s25r": {"rules": [1, 7]}}, "s25r.rules: [1]: must be at most 6, got 7"),
        ({"s25r": {"rules": [1, 1]}}, "s25r.rules: a rule is listed twice"),
        (
            {"s25r": {"blacklist_files": ["nope.txt"]}},
            "s25r.blacklist_files: [0]: 'nope.txt': no such file",
        ),
        (
            {"dns": {"nameservers": ["ns.example.com"]}},
            "dns.nameservers: [0]: 'ns.example.com': a nameserver must be an IP address",
        ),
        ({"dns": {"timeout": 0}}, "dns.timeout: must be more than 0 seconds"),
        ({"store": {"url": "postgres://x"}}, "store.url: 'postgres://x': expected"),
        (
            {"store": {"url": "redis+cluster://"}},
            "store.url: 'redis+cluster://': missing the nodes (HOST:PORT[,HOST:PORT...]",
        ),
        (
            {"store": {"url": "redis+cluster://10.0.0.1:7000,10.0.0.2/"}},
            "store.url: 'redis+cluster://10.0.0.1:7000,10.0.0.2/': node '10.0.0.2' is not",
        ),
        (
            {"store": {"url": "redis+cluster://:pw@10.0.0.1:99999/"}},
            "store.url: 'redis+cluster://10.0.0.1:99999/': node '10.0.0.1:99999' is not HOST:PORT",
        ),
        (
            {"store": {"url": "redis+cluster://10.0.0.1:7000/3"}},
            "a cluster has only database 0: end the URL with / after the nodes",
        ),
        (
            {"store": {"url": "rediss+cluster://10.0.0.1:7000/?verify=no"}},
            "store.url: 'rediss+cluster://10.0.0.1:7000/': unknown option 'verify' (known: ssl_",
        ),
        ({"backend": {"tls": "yes"}}, "backend.tls: must be one of 'none', 'starttls', 'implicit'"),
        ({"tls": {"cert": "gateway.toml"}}, "tls.cert and tls.key: set both"),
        (
            {"server": {"workers": 2}},
            "server.workers: worker processes cannot share a 'memory:' store",
        ),
        ({"relay": {"accept_domains": []}}, "relay.accept_domains: must not be empty"),
        ({"log": {"format": "xml"}}, "log.format: must be one of 'logfmt', 'json'"),
        (
            {"policy": {"exempt_recipients": ["@"]}},
            "policy.exempt_recipients: [0]: '@' names nobody",
        ),
        (
            {"policy": {"exempt_recipients": ["postmaster@exa mple.com"]}},
            "policy.exempt_recipients: [0]: 'exa mple.com' is not a domain name",
        ),
        ({"autoban": {"relay_limit": -1}}, "autoban.relay_limit: must be at least 0"),
        ({"tarpit": {"delay": -5}}, "tarpit.delay: must be more than 0 seconds"),
        (
            {"policy": {"suspect_action": "slow"}},
            "policy.suspect_action: must be one of 'defer', 'tarpit', 'tarpit+defer'",
        ),
        ({"dnsbl": {"min_ttl": 7200}}, "dnsbl.min_ttl: must not be more than dnsbl.max_ttl"),
        ({"dnsbl": {"allowlist_threshold": 2}}, "dnsbl.allowlist_threshold: must be at most 0"),
        ({"auth": {"mode": "on"}}, "auth.mode: must be one of 'auto', 'off'"),
    ],
)
def test_bad_values_name_the_key(overrides, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_settings(overrides)
    assert message in str(info.value)
    assert str(info.value).startswith("test.toml: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000/",
        "redis+cluster://:pass%40word@redis.internal:7000",
        "rediss+cluster://user:pw@[2001:db8::7]:7000,10.0.0.2:7000/0?ssl_ca_certs=/etc/ca.pem",
    ],
)
def test_redis_cluster_urls(url: str) -> None:
    assert make_settings({"store": {"url": url}}).store.url == url


def test_accept_domains_is_required(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[store]\nurl = "memory:"\n')
    with pytest.raises(ConfigError, match=r"relay\.accept_domains: required setting is missing"):
        load_settings(path)


def test_toml_syntax_error_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text("[relay\naccept_domains = 1\n")
    with pytest.raises(ConfigError, match=r"g\.toml: invalid TOML: .*line 1"):
        load_settings(path)


def test_settings_are_immutable() -> None:
    settings = make_settings()
    with pytest.raises(AttributeError):
        settings.policy.defer = "all"  # type: ignore[misc]


def test_promote_on_is_retry_or_any() -> None:
    assert make_settings().policy.promote_on == "retry"
    assert make_settings({"policy": {"promote_on": "any"}}).policy.promote_on == "any"
    with pytest.raises(ConfigError, match="promote_on"):
        make_settings({"policy": {"promote_on": "return"}})


def test_the_retired_sibling_setting_still_starts_with_one_warning(caplog) -> None:
    with caplog.at_level("WARNING", logger="onajimi"):
        settings = make_settings({"policy": {"sibling_retries": True}})
    assert settings.policy.promote_on == "retry"
    (line,) = [r.getMessage() for r in caplog.records if "sibling_retries" in r.getMessage()]
    assert "no longer a setting" in line and "SPF" in line
