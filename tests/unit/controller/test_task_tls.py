"""Tasks get their TLS material with their config: a certificate of their own from the
data-plane CA, and the CAs of their peers and of the control plane."""

from __future__ import annotations

from cryptography import x509

from flame_controller.domain.context import Ctx
from flame_controller.domain.keys import keyed
from flame_spec.pki import Authority
from tests.unit.spec.test_pki import config


def _cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def test_each_task_gets_its_own_certificate_and_trusts_peers_and_control_plane() -> None:
    stack = Authority.create("stack CA")
    ctx = Ctx(store=None, data_plane_secret=b"s" * 32, trusted_ca=stack.cert_pem)  # type: ignore[arg-type]
    one, two = keyed(ctx, config("t1")), keyed(ctx, config("t2"))
    assert one.tls.cert_pem != two.tls.cert_pem and one.tls.key_pem != two.tls.key_pem
    assert ctx.data_plane_ca is not None
    leaf = _cert(one.tls.cert_pem or "")
    leaf.verify_directly_issued_by(ctx.data_plane_ca.cert)
    assert "j1/t1" in leaf.subject.rfc4514_string()
    bundle = one.tls.ca_pem or ""
    assert stack.cert_pem.decode() in bundle and ctx.data_plane_ca.cert_pem.decode() in bundle


def test_without_data_plane_tls_a_task_still_checks_the_control_plane() -> None:
    stack = Authority.create("stack CA")
    ctx = Ctx(
        store=None, data_plane_secret=b"s" * 32, data_plane_tls=False, trusted_ca=stack.cert_pem
    )  # type: ignore[arg-type]
    got = keyed(ctx, config("t1")).tls
    assert got.cert_pem is None and got.ca_pem == stack.cert_pem.decode()


def test_only_a_role_without_data_gets_the_jobs_tracking_password() -> None:
    from flame_controller.tracking_accounts import TrackingAccounts
    from flame_spec import DatasetRef
    from flame_spec.task import TrackingAccess

    accounts = TrackingAccounts("http://mlflow", ("flame-admin", "pw"), b"s" * 32)
    ctx = Ctx(store=None, data_plane_secret=b"s" * 32, tracking_accounts=accounts)  # type: ignore[arg-type]
    access = TrackingAccess(experiment="usr/x", model_name="x-1", username="flame-job-j1")
    aggregator = config("agg").model_copy(update={"tracking": access})
    trainer = aggregator.model_copy(update={"dataset": DatasetRef(id="d", name="d")})
    assert keyed(ctx, aggregator).tracking.password == accounts.password("flame-job-j1")
    assert keyed(ctx, trainer).tracking.password is None
    assert "pw" not in repr(keyed(ctx, aggregator).tracking)
