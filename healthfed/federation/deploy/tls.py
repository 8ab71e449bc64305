"""TLS material for a Flower deployment: throwaway for loopback, or for real names.

A fresh certificate authority is made for every local deployment and signs one
server certificate valid for ``127.0.0.1``, ``::1`` and ``localhost``. The
SuperLink serves all its APIs (Fleet, Control, Runtime) with that certificate
and every client (SuperNodes, the Control API client, SuperExec) trusts only
that CA. A SuperLink reachable under real names gets its certificate from
:func:`generate_superlink_tls` (or the access body's own PKI). Keys never leave
the work directory and are written with ``0600`` permissions.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from healthfed.errors import FederationError, InvalidArgument

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")  # bind addresses that are no name to certify
SUPERLINK_TLS_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files of one throwaway CA and its server certificate."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (created 0600, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def generate_loopback_tls(directory: str | Path, days: int = 2) -> TlsFiles:
    """Make a throwaway CA and a loopback server certificate in ``directory``.

    Parameters
    ----------
    directory
        Where ``ca.pem``, ``server.pem`` and ``server.key`` are written (created
        with mode 0700 if missing; files are 0600).
    days
        Validity of both certificates, from one minute ago.

    Returns
    -------
    TlsFiles
        Paths of the CA certificate, server certificate and server private key.
    """
    names = [*LOOPBACK_NAMES, *LOOPBACK_IPS]
    return generate_tls(directory, names, days, ca_common_name="healthfed throwaway CA")


def generate_tls(
    directory: str | Path,
    names: list[str],
    days: int,
    ca_common_name: str,
) -> TlsFiles:
    """Make a CA and one server certificate valid for ``names`` (DNS names or IPs).

    The CA's private key is never written: the CA signs this one certificate and
    is gone, so nobody can later mint another certificate the nodes would trust.
    The server certificate's common name is ``names[0]``.
    """
    if not names:
        raise InvalidArgument("a server certificate needs at least one name")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(out / "ca.pem", out / "server.pem", out / "server.key")
    _write_private(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(files.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        files.server_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return files


def generate_superlink_tls(
    directory: str | Path, hosts: Sequence[str] = (), days: int = SUPERLINK_TLS_DAYS
) -> TlsFiles:
    """Make a CA and a SuperLink server certificate for ``hosts`` (plus loopback).

    Parameters
    ----------
    directory
        Where ``ca.pem``, ``server.pem`` and ``server.key`` are written (created
        0700; files 0600). ``ca.pem`` is what hospitals get; the CA's private key
        is never written, so a renewal means a new ``ca.pem`` for every hospital
        (or bring certificates from your own PKI instead).
    hosts
        DNS names and/or IP addresses hospitals (or the reverse proxy) use to
        reach the SuperLink. ``localhost``, ``127.0.0.1`` and ``::1`` are always added:
        the SuperLink's own ServerApp connects over loopback.
    days
        Validity of both certificates, from one minute ago.

    Returns
    -------
    TlsFiles
        Paths of the CA certificate, server certificate and server private key.
    """
    names: list[str] = []
    for h in [*hosts, *LOOPBACK_NAMES, *LOOPBACK_IPS]:
        h = h.strip().strip("[]")
        if h and h not in WILDCARDS and h not in names:
            names.append(h)
    return generate_tls(directory, names, days, ca_common_name="healthfed hub CA")


def certificate_names(cert_file: str | Path) -> set[str]:
    """DNS names and IP addresses (as text) in a PEM certificate's subjectAltName."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise FederationError(f"cannot read certificate {cert_file}: {exc}") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {str(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return names


def covers(names: set[str], host: str) -> bool:
    """Whether a certificate naming ``names`` is valid for ``host``."""
    if host in names:
        return True
    # one-label wildcard, e.g. *.example.org covers hub.example.org
    _, _, rest = host.partition(".")
    return bool(rest) and f"*.{rest}" in names
