"""STARTTLS towards clients: the server context, and the certificate it falls back on.

An MX without STARTTLS gets its mail flagged as unencrypted, so TLS is on unless
`tls.mode = "off"`: with `tls.cert`/`tls.key` (certbot's fullchain.pem and privkey.pem,
say) those are served; without them a self-signed certificate for `listen.hostname` is
made once in `tls.self_signed_dir` and kept across restarts, as Debian's Postfix does
with its "snakeoil" one (opportunistic SMTP TLS does not check the certificate).

The context follows Mozilla's "intermediate" profile: TLS 1.2 and later, forward-secret
AEAD ciphers for TLS 1.2, the default suites of TLS 1.3. Contexts are built at start,
on SIGHUP and when the certificate files change (runtime's chore): sessions already
encrypted keep theirs, new ones get the new one.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

log = logging.getLogger("onajimi.tls")

# Mozilla's intermediate configuration (version 5.7), TLS 1.2 ciphers; TLS 1.3 has its own.
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
SELF_SIGNED_DAYS = 3650  # as long as Debian's snakeoil: nothing checks it
RENEW_BEFORE_DAYS = 30
VERSIONS = ("TLSv1.2", "TLSv1.3")  # what a session can negotiate (a metric label)


class SelfSignedError(ConfigError):
    """No self-signed certificate could be made (the directory, the name)."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """The files the context was built from, and how to tell they changed."""

    cert: Path
    key: Path
    self_signed: bool
    stamp: tuple[tuple[int, int, int], ...]  # (inode, size, mtime_ns) of each file

    def changed(self) -> bool:
        try:
            return _stamp(self.cert, self.key) != self.stamp
        except OSError:
            return False  # being replaced right now: look again at the next check


def _stamp(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def server_context(cert: Path, key: Path, source: str) -> ssl.SSLContext:
    """A server context for STARTTLS; ConfigError (one line) when the files do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{source}: tls.cert / tls.key: cannot load: {exc}") from None
    return context


def certificate_for(
    cert: Path | None, key: Path | None, hostname: str, directory: Path, source: str
) -> Certificate:
    """The configured files, or the self-signed pair for `hostname` (made if need be)."""
    if cert is not None and key is not None:
        try:
            return Certificate(cert, key, False, _stamp(cert, key))
        except OSError as exc:
            raise ConfigError(
                f"{source}: tls.cert / tls.key: {exc.strerror}: {exc.filename}"
            ) from None
    return self_signed(hostname, directory, source)


def self_signed(hostname: str, directory: Path, source: str) -> Certificate:
    """The self-signed certificate for `hostname` in `directory`, made when missing, for
    another name, unusable, or close to expiry.

    Worker processes start together and each comes here: a lock on the directory makes
    one of them make the pair while the others wait for it and then use it."""
    cert = directory / f"selfsigned-{hostname}.pem"
    key = directory / f"selfsigned-{hostname}.key"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with _locked(directory):
            made = not _usable(cert, key, hostname)
            if made:
                _make(cert, key, hostname)
            stamp = _stamp(cert, key)
    except OSError as exc:
        raise SelfSignedError(
            f"{source}: tls.self_signed_dir: cannot write a certificate in {directory}: "
            f'{exc.strerror} (set tls.cert and tls.key, or tls.mode = "off")'
        ) from None
    except ValueError as exc:  # a name no certificate can carry
        raise SelfSignedError(
            f"{source}: listen.hostname: {hostname!r} cannot name a certificate: {exc}"
        ) from None
    if made:
        log.warning(
            "tls: no tls.cert configured: made a self-signed certificate for %s in %s "
            "(senders encrypt with it; set tls.cert and tls.key to a real one, e.g. "
            "certbot's fullchain.pem and privkey.pem)",
            hostname,
            cert,
        )
    return Certificate(cert, key, True, stamp)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".selfsigned.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _a_label(hostname: str) -> str:
    """The name as a certificate carries it (IDNA A-label); ValueError if it cannot."""
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(str(exc) or "not a valid DNS name") from None


def _usable(cert: Path, key: Path, hostname: str) -> bool:
    from cryptography import x509

    try:
        loaded = x509.load_pem_x509_certificate(cert.read_bytes())
        sans = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    names = sans.value.get_values_for_type(x509.DNSName)
    left = loaded.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    if names != [_a_label(hostname)] or left <= datetime.timedelta(days=RENEW_BEFORE_DAYS):
        return False
    try:  # the key is the certificate's: a pair half replaced is made anew
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError):
        return False
    return True


def _make(cert: Path, key: Path, hostname: str) -> None:
    """RSA 2048, like Debian's snakeoil: every TLS client there is can use it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    label = _a_label(hostname)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    # A common name holds 64 characters at most; clients read the alternative name.
    common = [x509.NameAttribute(NameOID.COMMON_NAME, label)] if len(label) <= 64 else []
    name = x509.Name(common)
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(label)]), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(key, key_bytes, 0o600)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Whole or not at all: a crash mid-write must not leave half a key to load."""
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
