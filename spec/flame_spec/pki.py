"""Certificates for TLS on every hop: a certificate authority and the leaf certificates it issues.

Two authorities use this module:

* the **stack CA**, which ``flamectl up`` creates on first start in ``<home>/pki`` (or an
  operator brings): it signs the services' certificate, and every client of the control plane
  (flamectl, flamelets, tasks) trusts it;
* the **data-plane CA** of a controller, derived from the data-plane secret (as the signing keys
  are, :mod:`flame_spec.signing`), so every controller replica holding the secret signs with the
  same key and nothing new is stored. It issues each task a certificate when the task gets its
  config; peers dial each other by address and check the certificate against the name
  :data:`DATA_PLANE_NAME`, since a task's address is not known when its certificate is made.

Keys are ECDSA P-256 (fast to make, understood by gRPC's BoringSSL, OpenSSL and paho).
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
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flame_spec.task import TaskConfig, TlsSettings

DATA_PLANE_NAME = "data-plane.flame.internal"
_CURVE = ec.SECP256R1()
_CA_SALT = b"flame/data-plane-ca/v1"
_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:  # never print key material
        return "KeyPair(...)"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Flame"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


class Authority:
    """A CA that issues leaf certificates valid for both server and client use."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("a Flame CA key must be an EC key")
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        if self.cert.public_key() != key.public_key():
            raise ValueError("the CA certificate does not match its key")
        self._key = key
        self.cert_pem = cert_pem

    def __repr__(self) -> str:
        return f"Authority({self.cert.subject.rfc4514_string()})"

    @classmethod
    def create(
        cls,
        common_name: str,
        *,
        key: ec.EllipticCurvePrivateKey | None = None,
        not_before: dt.datetime | None = None,
        years: int = 10,
    ) -> Authority:
        """A new self-signed CA (a given ``key`` and ``not_before`` make it reproducible)."""
        key = key or ec.generate_private_key(_CURVE)
        start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        name = _name(common_name)
        public = key.public_key()
        ski = x509.SubjectKeyIdentifier.from_public_key(public)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            # from the key: a derived CA has the same name, key and serial wherever it is made
            .serial_number(int.from_bytes(ski.digest[:8]) >> 1 or 1)
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=365 * years))
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
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    @classmethod
    def in_folder(cls, folder: Path, common_name: str) -> Authority:
        """The CA kept in ``folder`` (``ca.pem``, ``ca.key`` readable by the owner only),
        created there on first use."""
        cert_path, key_path = folder / "ca.pem", folder / "ca.key"
        if cert_path.exists() and key_path.exists():
            return cls(cert_path.read_bytes(), key_path.read_bytes())
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = cls.create(common_name)
        write_private(key_path, ca._key_pem())
        cert_path.write_bytes(ca.cert_pem)
        return ca

    @classmethod
    def derived(cls, secret: bytes, common_name: str) -> Authority:
        """The CA whose key is derived from ``secret``: wherever the secret is, the same name
        and key, so a certificate one controller replica issued verifies against another's."""
        raw = HKDF(algorithm=hashes.SHA256(), length=48, salt=_CA_SALT, info=b"ca").derive(secret)
        order = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16)
        key = ec.derive_private_key(int.from_bytes(raw) % (order - 1) + 1, _CURVE)
        return cls.create(common_name, key=key, not_before=_EPOCH, years=30)

    def _key_pem(self) -> bytes:
        return _key_pem(self._key)

    def issue(self, common_name: str, hosts: Sequence[str], *, days: int = 397) -> KeyPair:
        """A new key and a certificate for ``hosts`` (DNS names or IP addresses), usable as a
        server's and as a client's."""
        key = ec.generate_private_key(_CURVE)
        start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(min(start + dt.timedelta(days=days), self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_san(hosts), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def with_certificate(config: TaskConfig, ca: Authority, trust: bytes | None = None) -> TaskConfig:
    """``config`` with a new certificate for its task on the data plane, issued by ``ca``, and
    the CAs the task trusts: ``ca`` (its peers) and ``trust`` (the control plane's CA, if any)."""
    pair = ca.issue(f"{config.job_id}/{config.task_id}", [DATA_PLANE_NAME])
    bundle = ca.cert_pem + (b"\n" + trust if trust else b"")
    tls = TlsSettings(
        ca_pem=bundle.decode(), cert_pem=pair.cert_pem.decode(), key_pem=pair.key_pem.decode()
    )
    return config.model_copy(update={"tls": tls})


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by the owner only from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)
