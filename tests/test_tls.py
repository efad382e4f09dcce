"""STARTTLS by default: the self-signed fallback, the context, rotation without a restart.

The handshakes are real: `openssl s_client -starttls smtp` (Debian's openssl, installed by
`make test`) against `onajimi run`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.tls import certificate_for, self_signed, server_context
from tests.faults.live import live_gateway
from tests.tls import make_certificate
from tests.waiting import eventually


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """One STARTTLS handshake; the peer certificate's subject and the session in stdout."""
    return subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{port}",
         "-showcerts", *args],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=20,
    )  # fmt: skip


# -- the certificate and the context ------------------------------------------------------
def test_a_self_signed_certificate_is_made_once_and_kept(tmp_path) -> None:
    first = self_signed("mx.example.org", tmp_path, "t.toml")
    assert first.self_signed and first.cert.name == "selfsigned-mx.example.org.pem"
    assert os.stat(first.key).st_mode & 0o777 == 0o600
    again = self_signed("mx.example.org", tmp_path, "t.toml")
    assert again.stamp == first.stamp  # kept across restarts, not made anew
    other = self_signed("mx2.example.org", tmp_path, "t.toml")
    assert other.cert != first.cert
    context = server_context(first.cert, first.key, "t.toml")
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def _make_in(directory: str) -> str:
    """One worker's start-up: the self-signed pair for gw.test (its serial number)."""
    from cryptography import x509

    cert = self_signed("gw.test", Path(directory), "t.toml")
    return str(x509.load_pem_x509_certificate(cert.cert.read_bytes()).serial_number)


def test_workers_starting_together_make_one_pair(tmp_path) -> None:
    """server.workers > 1: every worker builds its context at once; one pair comes out."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        serials = pool.map(_make_in, [str(tmp_path)] * 4)
    assert len(set(serials)) == 1
    cert = tmp_path / "selfsigned-gw.test.pem"
    server_context(cert, tmp_path / "selfsigned-gw.test.key", "t.toml")  # a matching pair
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "selfsigned-gw.test.key",
        "selfsigned-gw.test.pem",
    ]


@pytest.mark.parametrize(
    "hostname", ["a" * 60 + ".mx.example.org", "mx.bücher.example"], ids=["long", "idn"]
)
def test_any_valid_hostname_can_be_self_signed(tmp_path, hostname: str) -> None:
    made = self_signed(hostname, tmp_path, "t.toml")
    server_context(made.cert, made.key, "t.toml")
    assert self_signed(hostname, tmp_path, "t.toml").stamp == made.stamp  # kept


def test_configured_files_win_and_bad_ones_are_one_line(tmp_path) -> None:
    cert, key = make_certificate(tmp_path, "mx.example.org")
    chosen = certificate_for(Path(cert), Path(key), "mx.example.org", tmp_path / "x", "t.toml")
    assert not chosen.self_signed and not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match=r"t.toml: tls.cert / tls.key: cannot load"):
        server_context(Path(key), Path(key), "t.toml")


def test_an_unwritable_directory_says_what_to_do(tmp_path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"tls.self_signed_dir: cannot write a certificate"):
        self_signed("mx.example.org", blocked / "tls", "t.toml")


async def test_a_gateway_that_cannot_self_sign_still_takes_mail(tmp_path) -> None:
    """An upgrade on a host where the directory cannot be written: one error line, no
    STARTTLS, mail flows as before."""
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    async with live_gateway(tmp_path, tls=f'self_signed_dir = "{blocked / "tls"}"') as live:
        client = await live.client()
        assert "STARTTLS" not in (await client.ehlo()).lines
        await client.close()
        assert any("STARTTLS is not offered" in x for x in live.lines)


# -- a running gateway ------------------------------------------------------------------
async def test_starttls_is_offered_with_no_certificate_configured(tmp_path) -> None:
    tls = f'self_signed_dir = "{tmp_path / "tls"}"'
    async with live_gateway(tmp_path, tls=tls) as live:
        shown = await asyncio.to_thread(s_client, live.port)
        assert "subject=CN = gw.test" in shown.stdout, shown.stdout[-2000:]
        assert "Protocol  : TLSv1.3" in shown.stdout or "TLSv1.3" in shown.stdout
        old = await asyncio.to_thread(s_client, live.port, "-tls1_1")
        assert "Cipher is (NONE)" in old.stdout or old.returncode != 0
        assert any("made a self-signed certificate for gw.test" in x for x in live.lines)
        assert await live.metric("onajimi_tls_sessions_total", version="TLSv1.3") >= 1
        client = await live.client()
        assert "STARTTLS" in (await client.ehlo()).lines
        await client.close()
        assert not live.problems()


async def test_tls_mode_off_offers_no_starttls(tmp_path) -> None:
    async with live_gateway(tmp_path, tls='mode = "off"') as live:
        client = await live.client()
        assert "STARTTLS" not in (await client.ehlo()).lines
        await client.close()


async def test_a_renewed_certificate_is_served_without_dropping_sessions(tmp_path) -> None:
    """certbot replaces the files: new sessions get the new certificate (at the next check,
    or at once on SIGHUP); a session already encrypted goes on with the old one."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    cert, key = make_certificate(first, "gw.test")
    new_cert, new_key = make_certificate(second, "gw.test")
    live_cert, live_key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    live_cert.write_bytes(Path(cert).read_bytes())
    live_key.write_bytes(Path(key).read_bytes())
    tls = f'cert = "{live_cert}"\nkey = "{live_key}"'
    async with live_gateway(tmp_path, tls=tls) as live:
        before = await asyncio.to_thread(s_client, live.port)
        during = await live.client()
        await during.ehlo()
        assert (await during.starttls()).code == 220
        await during.ehlo()
        # The renewal: new files in place (as certbot's symlinks switch), then SIGHUP.
        live_key.write_bytes(Path(new_key).read_bytes())
        live_cert.write_bytes(Path(new_cert).read_bytes())
        live.process.send_signal(signal.SIGHUP)
        await eventually(lambda: any("configuration reloaded" in x for x in live.lines))
        after = await asyncio.to_thread(s_client, live.port)
        assert _fingerprint(after.stdout) != _fingerprint(before.stdout)
        assert _fingerprint(after.stdout) == _pem_of(Path(new_cert))
        replies = await during.send_mail("a@sender.example", ["bob@example.com"], b"x\r\n")
        assert [r.code for r in replies] == [250, 250, 250]  # the old session went on
        await during.close()
        assert not live.problems()


async def test_renewed_files_are_picked_up_without_a_signal(tmp_path) -> None:
    cert, key = make_certificate(tmp_path, "gw.test")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    new_cert, new_key = make_certificate(fresh, "gw.test")
    live_cert, live_key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    live_cert.write_bytes(Path(cert).read_bytes())
    live_key.write_bytes(Path(key).read_bytes())
    async with live_gateway(tmp_path, tls=f'cert = "{live_cert}"\nkey = "{live_key}"') as live:
        live_key.write_bytes(Path(new_key).read_bytes())
        live_cert.write_bytes(Path(new_cert).read_bytes())
        await eventually(lambda: any("fullchain.pem changed" in x for x in live.lines), timeout=20)
        after = await asyncio.to_thread(s_client, live.port)
        assert _fingerprint(after.stdout) == _pem_of(Path(new_cert))


def _fingerprint(shown: str) -> str:
    """The first certificate s_client printed, as its PEM body."""
    start = shown.find("-----BEGIN CERTIFICATE-----")
    end = shown.find("-----END CERTIFICATE-----", start)
    return shown[start:end]


def _pem_of(path: Path) -> str:
    text = path.read_text()
    return text[: text.find("-----END CERTIFICATE-----")]
