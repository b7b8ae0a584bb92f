"""The PKI behind TLS on every hop: a CA kept in a folder, a CA derived from a secret that every
controller replica shares, and the certificates they issue."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from flame_spec import TaskConfig, parse_design, parse_job_spec
from flame_spec.pki import DATA_PLANE_NAME, Authority, with_certificate


def _cert(pem: bytes | str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def test_a_folder_ca_is_made_once_and_its_key_is_private(tmp_path: Path) -> None:
    first = Authority.in_folder(tmp_path / "pki", "test CA")
    again = Authority.in_folder(tmp_path / "pki", "test CA")
    assert again.cert_pem == first.cert_pem
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o077 == 0


def test_a_leaf_names_its_hosts_and_serves_and_connects(tmp_path: Path) -> None:
    ca = Authority.create("test CA")
    leaf = _cert(ca.issue("svc", ["127.0.0.1", "localhost"]).cert_pem)
    leaf.verify_directly_issued_by(ca.cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.not_valid_after_utc <= ca.cert.not_valid_after_utc


def test_replicas_sharing_a_secret_verify_each_others_certificates() -> None:
    one, two = Authority.derived(b"k" * 32, "dp"), Authority.derived(b"k" * 32, "dp")
    _cert(one.issue("a", [DATA_PLANE_NAME]).cert_pem).verify_directly_issued_by(two.cert)
    other = Authority.derived(b"x" * 32, "dp")
    with pytest.raises(Exception):
        _cert(other.issue("a", [DATA_PLANE_NAME]).cert_pem).verify_directly_issued_by(one.cert)


def test_a_mismatched_ca_key_is_refused() -> None:
    a, b = Authority.create("a"), Authority.create("b")
    with pytest.raises(ValueError, match="does not match"):
        Authority(a.cert_pem, b._key_pem())


def config(task: str) -> TaskConfig:
    return TaskConfig(
        job_id="j1",
        job_name="j",
        task_id=task,
        role="trainer",
        design=parse_design({"roles": [{"name": "trainer", "isDataConsumer": True}]}),
        job=parse_job_spec({"datasets": {"default": ["d"]}}),
    )


def test_with_certificate_trusts_the_issuer_and_the_given_ca() -> None:
    issuer, stack = Authority.create("dp"), Authority.create("stack")
    tls = with_certificate(config("t1"), issuer, stack.cert_pem).tls
    _cert(tls.cert_pem or "").verify_directly_issued_by(issuer.cert)
    assert tls.ca_pem == (issuer.cert_pem + b"\n" + stack.cert_pem).decode()
    assert "BEGIN" not in repr(tls)  # never printed
