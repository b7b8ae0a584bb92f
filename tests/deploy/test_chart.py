"""The Helm chart deploy/helm/flame, rendered with the real Helm library (helm-python-sdk; no
helm binary here) for the default values and variants, linted strictly, every manifest validated
against the Kubernetes 1.30 and the newest schemas kubernetes-validate ships (strict, unknown
kinds are errors), and checked for the chart's promises: hardened containers, no literal
secrets, a namespaced least-privilege deployer Role, a NetworkPolicy for every component,
leader election's Lease RBAC, and the env contract the services read."""

from __future__ import annotations

import base64
import copy
import functools
import json
import re
from concurrent import futures
from pathlib import Path
from unittest import mock

import jsonschema
import pytest
import yaml

from flame_controller.deployers.kubernetes import RBAC as DEPLOYER_RBAC
from flame_controller.leadership import RBAC as LEADER_RBAC

helm = pytest.importorskip("helm_python", reason="pip install -r requirements-dev.txt")
kv_utils = pytest.importorskip("kubernetes_validate.utils")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "flame"
README = (CHART / "README.md").read_text()
RELEASE, NAMESPACE = "demo", "flame-system"
FULL = "demo-flame"
KUBE_VERSIONS = ["1.30", kv_utils.latest_version()]

VARIANTS: dict[str, dict] = {
    "default": {},
    "external-mongodb": {
        "mongodb": {
            "enabled": False,
            "external": {
                "uriSecret": {"name": "flame-store", "key": "uri"},
                "egressTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            },
        }
    },
    "cert-manager": {
        "tls": {
            "certManager": {"enabled": True, "issuerRef": {"name": "flame-ca", "kind": "Issuer"}}
        }
    },
    "mqtt-off": {"mqtt": {"enabled": False}},
    "leader-election": {
        "controller": {
            "leaderElection": {"enabled": True},
            "replicas": 2,
            "persistence": {"accessModes": ["ReadWriteMany"]},
        }
    },
    # Everything outside or supplied: public URLs, Ingress, in-cluster flamelets, S3 artifacts
    # with an external PostgreSQL, the operator's own credentials, pull secrets and a registry.
    "external-everything": {
        "image": {"registry": "registry.example.com", "tag": "1.2.3", "pullSecrets": ["regcred"]},
        "credentials": {"existingSecret": "my-flame-credentials"},
        "apiserver": {
            "publicUrl": "https://flame.example.com",
            "ingress": {"enabled": True, "className": "nginx", "tlsSecretName": "flame-public"},
        },
        "notifier": {
            "publicAddress": "notify.flame.example.com:443",
            "service": {"type": "LoadBalancer"},
        },
        "tls": {"extraDnsNames": ["flame.example.com", "notify.flame.example.com"]},
        "mongodb": {"existingSecret": "my-mongodb"},
        "mlflow": {
            "backend": {
                "postgresql": {"enabled": False},
                "external": {"uriSecret": {"name": "mlflow-db", "key": "uri"}},
            },
            "artifacts": {
                "type": "s3",
                "s3": {
                    "bucket": "flame-artifacts",
                    "endpointUrl": "http://minio.minio.svc:9000",
                    "credentialsSecret": {"name": "minio-keys"},
                },
            },
        },
        "flamelet": {"enabled": True, "replicas": 2, "enrolmentSecret": "flamelet-tokens"},
        "networkPolicy": {"kubeApiServer": {"cidrs": ["10.0.0.1/32"]}},
    },
    # Development: no TLS, no Kubernetes deployer (every role on flamelets), no MLflow.
    "metrics-off": {"metrics": {"enabled": False}},
    "plain": {
        "tls": {"enabled": False},
        "controller": {"deployer": {"kind": "none"}},
        "mlflow": {"enabled": False},
    },
}

# CRDs the chart may render; kubernetes-validate knows only built-in kinds, so these are checked
# against the few fields the chart sets (cert-manager.io/v1 Certificate).
CRD_SCHEMAS = {
    ("cert-manager.io/v1", "Certificate"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "required": ["secretName", "issuerRef", "dnsNames"],
                "additionalProperties": False,
                "properties": {
                    "secretName": {"type": "string", "minLength": 1},
                    "commonName": {"type": "string", "maxLength": 64},
                    "ipAddresses": {"type": "array", "items": {"type": "string"}},
                    "duration": {"type": "string"},
                    "renewBefore": {"type": "string"},
                    "privateKey": {"type": "object"},
                    "usages": {"type": "array", "items": {"type": "string"}},
                    "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    "issuerRef": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                            "group": {"type": "string"},
                        },
                    },
                },
            }
        },
    }
}

TLS_COMPONENTS = ("apiserver", "controller", "notifier", "mqtt")
NAMES_OF_SECRETS = {"FLAME_KUBERNETES_IMAGE_PULL_SECRETS"}  # Secret names, not their values
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Exactly what the deployer calls (its tests run against a fake API server enforcing the same
# table) and nothing more: no Secret is ever read, listed or deleted by it.
DEPLOYER_RULES = {key: set(verbs) for key, verbs in DEPLOYER_RBAC.items()}
assert DEPLOYER_RULES[("", "secrets")] == {"create"}


# --- rendering (cached per variant for the module) ------------------------------------------


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(str(CHART)) as loaded:
        yield loaded


def _render(chart, values: dict) -> dict[str, str]:
    return chart.render(copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True)


def _docs(rendered: dict[str, str]) -> list[dict]:
    return [
        doc
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@pytest.fixture(scope="module")
def renders(chart) -> dict[str, tuple[dict[str, str], list[dict]]]:
    out = {}
    for name, values in VARIANTS.items():
        rendered = _render(chart, values)
        out[name] = (rendered, _docs(rendered))
    return out


@pytest.fixture(params=sorted(VARIANTS))
def variant(request, renders):
    rendered, docs = renders[request.param]
    return request.param, rendered, docs


def _kind(docs, kind, name=None):
    return [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]


def _one(docs, kind, name):
    found = _kind(docs, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _pod_specs(docs):
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            if doc["kind"] == "CronJob":
                template = doc["spec"]["jobTemplate"]["spec"]["template"]
            yield doc, template


def _containers(pod_spec):
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def _env(container) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _controller(docs):
    deployment = _one(docs, "Deployment", f"{FULL}-controller")
    return deployment, deployment["spec"]["template"]["spec"]["containers"][0]


# --- lint, schema, Kubernetes validation ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_lint_strict(name):
    report = helm.lint(str(CHART), copy.deepcopy(VARIANTS[name]), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_values_schema_accepts_variants_and_refuses_mistakes(chart):
    for values in VARIANTS.values():
        chart.validate_schema(copy.deepcopy(values))
    for wrong in (
        {"controller": {"deployer": {"kind": "docker"}}},
        {"tls": {"enabled": "yes"}},
        {"mongodb": {"enabeld": False}},
        {"podSecurity": {"runAsUser": 0}},
        {"mlflow": {"artifacts": {"type": "gcs"}}},
        {"apiserver": {"publicUrl": "flame.example.com"}},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(wrong)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"controller": {"replicas": 2}}, "leaderElection"),
        (
            {"controller": {"replicas": 2, "leaderElection": {"enabled": True}}},
            "ReadWriteMany",
        ),
        ({"tls": {"certManager": {"enabled": True}}}, "issuerRef.name"),
        ({"mongodb": {"enabled": False}}, "mongodb.external.uriSecret.name"),
        ({"flamelet": {"enabled": True}}, "enrolmentSecret"),
        ({"mlflow": {"artifacts": {"type": "s3"}}}, "bucket"),
        ({"tls": {"existingSecrets": {"apiserver": "mine"}}}, "existingSecrets"),
    ],
)
def test_impossible_combinations_fail_with_a_reason(chart, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        _render(chart, values)


@pytest.fixture(scope="module")
def cached_schemas():
    """kubernetes-validate reads its JSON schemas from disk on every call; cache them."""
    cached = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)
    with mock.patch.object(kv_utils, "schema_contents", cached):
        yield


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_an_unknown_api_version_is_an_error(kube, cached_schemas):
    """The validator really refuses what it has no schema for (so the loop below can trust it)."""
    retired = {"apiVersion": "extensions/v1beta1", "kind": "Ingress", "metadata": {"name": "x"}}
    with pytest.raises(kv_utils.SchemaNotFoundError):
        kv_utils.validate(retired, kube, strict=True)
    wrong_field = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x"},
        "dta": {"a": "b"},
    }
    with pytest.raises(kv_utils.ValidationError):
        kv_utils.validate(wrong_field, kube, strict=True)


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_manifest_validates_strictly(variant, kube, cached_schemas):
    _, _, docs = variant
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if crd is not None:
            jsonschema.validate(doc, crd)
            continue
        try:
            kv_utils.validate(doc, kube, strict=True)
        except kv_utils.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: unknown apiVersion/kind for Kubernetes {kube}: {exc.message}")
        except kv_utils.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} invalid for Kubernetes {kube} at {path}: {exc.message}")


# --- security promises ------------------------------------------------------------------------


def test_every_container_is_non_root_read_only_and_unprivileged(variant):
    _, _, docs = variant
    pods = list(_pod_specs(docs))
    assert pods
    for doc, template in pods:
        spec = template["spec"]
        pod_ctx = spec.get("securityContext", {})
        for container in _containers(spec):
            where = f"{doc['kind']}/{doc['metadata']['name']}/{container['name']}"
            ctx = container.get("securityContext", {})
            non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
            uid = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
            assert non_root is True, where
            assert isinstance(uid, int) and uid > 0, where
            assert ctx.get("readOnlyRootFilesystem") is True, where
            assert ctx.get("allowPrivilegeEscalation") is False, where
            assert ctx.get("privileged", False) is False, where
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), where
            assert not ctx.get("capabilities", {}).get("add"), where
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a writable /tmp"
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), doc["metadata"]["name"]


def test_only_the_controller_mounts_an_api_token(variant):
    name, _, docs = variant
    for doc, template in _pod_specs(docs):
        spec = template["spec"]
        if doc["metadata"]["name"] == f"{FULL}-controller":
            uses_api = (
                VARIANTS[name].get("controller", {}).get("deployer", {}).get("kind", "kubernetes")
                == "kubernetes"
                or name == "leader-election"
            )
            assert spec["automountServiceAccountToken"] is uses_api
        else:
            assert spec["automountServiceAccountToken"] is False, doc["metadata"]["name"]
    for account in _kind(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


@pytest.mark.parametrize("name", ["default", "external-everything", "plain"])
def test_no_literal_secret_values(chart, renders, name):
    """Every value of every Secret the chart renders is generated (it differs between two
    renders of the same values); no manifest carries a secret-looking literal. (Three variants:
    all generated, all supplied, no TLS; a render with generated keys takes about a second.)"""
    docs = renders[name][1]
    again = _docs(_render(chart, VARIANTS[name]))
    secrets = {d["metadata"]["name"]: d for d in _kind(docs, "Secret")}
    again_secrets = {d["metadata"]["name"]: d for d in _kind(again, "Secret")}
    assert secrets.keys() == again_secrets.keys()
    for secret_name, secret in secrets.items():
        assert "stringData" not in secret, secret_name
        for key, value in secret.get("data", {}).items():
            assert value != again_secrets[secret_name]["data"][key], f"{secret_name}.{key} is fixed"
    secretish = re.compile(r"(?i)(password|passwd|secret|token|api_?key|access_?key)")
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        for _, template in _pod_specs([doc]):
            for container in _containers(template["spec"]):
                for var in container.get("env", []):
                    if not secretish.search(var["name"]) or "valueFrom" in var:
                        continue
                    if var["name"] in NAMES_OF_SECRETS:
                        continue
                    # a literal is only ever a file path (the secret is in a mounted file)
                    assert str(var.get("value", "")).startswith("/"), (
                        f"{doc['metadata']['name']}: {var['name']}"
                    )
                for var in container.get("env", []):
                    for match in re.finditer(r"://[^:/@]+:([^@]+)@", str(var.get("value", ""))):
                        assert re.fullmatch(r"\$\([A-Z_]+\)", match.group(1)), var["name"]
        if doc["kind"] == "ConfigMap":
            for text in doc.get("data", {}).values():
                assert not re.search(r"(?i)(password|pwd)\s*[:=]\s*['\"]\w", text), doc


def test_deployer_role_is_namespaced_and_least_privilege(variant):
    name, _, docs = variant
    assert not _kind(docs, "ClusterRole") and not _kind(docs, "ClusterRoleBinding")
    roles = {d["metadata"]["name"]: d for d in _kind(docs, "Role")}
    deployer = roles.get(f"{FULL}-deployer")
    if VARIANTS[name].get("controller", {}).get("deployer", {}).get("kind") == "none":
        assert deployer is None
        return
    assert deployer is not None
    assert deployer["metadata"]["namespace"] == NAMESPACE
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in deployer["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == DEPLOYER_RULES
    binding = _one(docs, "RoleBinding", f"{FULL}-deployer")
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"{FULL}-deployer",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{FULL}-controller", "namespace": NAMESPACE}
    ]
    deployment, _ = _controller(docs)
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == f"{FULL}-controller"
    # every other Role is leader election's
    assert set(roles) <= {f"{FULL}-deployer", f"{FULL}-leader-election"}


def test_a_network_policy_selects_every_component(variant):
    name, _, docs = variant
    policies = _kind(docs, "NetworkPolicy")
    deny = _one(docs, "NetworkPolicy", f"{FULL}-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]

    def selecting(labels):
        return [
            p
            for p in policies
            if p is not deny
            and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
            and "app.kubernetes.io/component" in p["spec"]["podSelector"]["matchLabels"]
        ]

    pods = list(_pod_specs(docs))
    for doc, template in pods:
        labels = template["metadata"]["labels"]
        assert deny["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        assert selecting(labels), f"no NetworkPolicy for {doc['metadata']['name']}"
    # the deployer's task pods carry the labels the controller is told to put on them
    _, container = _controller(docs)
    task_labels = _env(container).get("FLAME_KUBERNETES_TASK_LABELS")
    if VARIANTS[name].get("controller", {}).get("deployer", {}).get("kind") == "none":
        assert task_labels is None
        return
    labels = json.loads(task_labels["value"])
    assert deny["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    (task_policy,) = selecting(labels)
    # tasks reach the apiserver and their peers, never the controller, notifier or stores
    reachable = {
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        for rule in task_policy["spec"]["egress"]
        for peer in rule.get("to", [])
    }
    assert {"apiserver", "task"} <= reachable
    assert not reachable & {"controller", "notifier", "mongodb", "postgresql"}


def test_leader_election_renders_a_lease_role(renders):
    _, docs = renders["leader-election"]
    role = _one(docs, "Role", f"{FULL}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    rules = [(tuple(r["apiGroups"]), tuple(r["resources"]), r) for r in role["rules"]]
    assert all(
        groups == ("coordination.k8s.io",) and res == ("leases",) for groups, res, _ in rules
    )
    verbs = {v for _, _, r in rules for v in r["verbs"]}
    assert verbs == set(LEADER_RBAC[("coordination.k8s.io", "leases")])  # what the code calls
    for _, _, rule in rules:
        if set(rule["verbs"]) & {"get", "update"}:
            assert rule["resourceNames"] == [f"{FULL}-controller"]
    binding = _one(docs, "RoleBinding", f"{FULL}-leader-election")
    assert binding["roleRef"]["name"] == f"{FULL}-leader-election"
    assert binding["subjects"][0]["name"] == f"{FULL}-controller"
    deployment, container = _controller(docs)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    env = _env(container)
    assert env["FLAME_CONTROLLER_LEADER_ELECTION"]["value"] == "true"
    assert env["FLAME_CONTROLLER_LEADER_ELECTION_LEASE_NAME"]["value"] == f"{FULL}-controller"
    assert "fieldRef" in env["FLAME_CONTROLLER_LEADER_ELECTION_IDENTITY"]["valueFrom"]


def test_without_leader_election_one_controller_recreated(renders):
    _, docs = renders["default"]
    assert not _kind(docs, "Role", f"{FULL}-leader-election")
    deployment, container = _controller(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(n.startswith("FLAME_CONTROLLER_LEADER") for n in _env(container))


# --- variants ---------------------------------------------------------------------------------


def test_external_mongodb(renders):
    _, docs = renders["external-mongodb"]
    assert not [d for d in docs if "mongodb" in d["metadata"]["name"]]
    _, container = _controller(docs)
    ref = _env(container)["FLAME_CONTROLLER_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "flame-store", "key": "uri"}
    assert "MONGODB_PASSWORD" not in _env(container)


def test_bundled_mongodb_uri_is_assembled_from_its_secret(renders):
    _, docs = renders["default"]
    _, container = _controller(docs)
    env = _env(container)
    assert env["MONGODB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULL}-mongodb"
    names = list(_env(container))
    assert names.index("MONGODB_PASSWORD") < names.index("FLAME_CONTROLLER_STORE_URI")
    assert "$(MONGODB_PASSWORD)@" in env["FLAME_CONTROLLER_STORE_URI"]["value"]
    statefulset = _one(docs, "StatefulSet", f"{FULL}-mongodb")
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_tls_from_cert_manager(renders):
    _, docs = renders["cert-manager"]
    certificates = {d["metadata"]["name"]: d for d in _kind(docs, "Certificate")}
    assert set(certificates) == {
        f"{FULL}-{c}" for c in ("apiserver", "controller", "notifier", "mqtt")
    }
    for name, cert in certificates.items():
        assert cert["spec"]["issuerRef"] == {
            "name": "flame-ca",
            "kind": "Issuer",
            "group": "cert-manager.io",
        }
        assert cert["spec"]["secretName"] == f"{name}-tls"
        assert f"{name}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
        assert {"server auth", "client auth"} <= set(cert["spec"]["usages"])
    assert not [s for s in _kind(docs, "Secret") if s.get("type") == "kubernetes.io/tls"]


def test_tls_generated_by_the_chart(renders):
    _, docs = renders["default"]
    tls = {
        s["metadata"]["name"]: s for s in _kind(docs, "Secret") if s["type"] == "kubernetes.io/tls"
    }
    assert set(tls) == {f"{FULL}-{c}-tls" for c in ("apiserver", "controller", "notifier", "mqtt")}
    cas = {s["data"]["ca.crt"] for s in tls.values()}
    assert len(cas) == 1, "one CA signs every component"
    for component in ("apiserver", "controller", "notifier"):
        deployment = _one(docs, "Deployment", f"{FULL}-{component}")
        spec = deployment["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "tls")
        assert volume["secret"]["secretName"] == f"{FULL}-{component}-tls"
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["/etc/flame/tls"]["readOnly"] is True


def test_mqtt_off(renders):
    _, docs = renders["mqtt-off"]
    assert not [d for d in docs if d["metadata"]["name"].startswith(f"{FULL}-mqtt")]
    policy = _one(docs, "NetworkPolicy", f"{FULL}-task")
    peers = json.dumps(policy["spec"]["egress"])
    assert '"mqtt"' not in peers


def test_external_everything(renders):
    _, docs = renders["external-everything"]
    assert not _kind(docs, "StatefulSet", f"{FULL}-postgresql")
    assert not _kind(docs, "Secret", f"{FULL}-credentials")
    assert not _kind(docs, "Secret", f"{FULL}-mongodb")
    mlflow = _one(docs, "Deployment", f"{FULL}-mlflow")["spec"]["template"]["spec"]
    env = _env(mlflow["containers"][0])
    assert env["MLFLOW_ARTIFACTS_DESTINATION"]["value"] == "s3://flame-artifacts/mlflow"
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio.minio.svc:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "minio-keys"
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    # no job runner and GenAI workers in the tracking server's pod (as `flamectl up`)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    _, controller = _controller(docs)
    cenv = _env(controller)
    assert cenv["FLAME_CONTROLLER_APISERVER_URL"]["value"] == "https://flame.example.com"
    assert cenv["FLAME_KUBERNETES_RUNNER_IMAGE"]["value"] == (
        "registry.example.com/flame/task-runner:1.2.3"
    )
    assert cenv["FLAME_KUBERNETES_IMAGE_PULL_SECRETS"]["value"] == "regcred"
    api = _one(docs, "Deployment", f"{FULL}-apiserver")["spec"]["template"]["spec"]
    assert _env(api["containers"][0])["FLAME_APISERVER_NOTIFIER_ADDRESS"]["value"] == (
        "notify.flame.example.com:443"
    )
    assert _one(docs, "Ingress", f"{FULL}-apiserver")["spec"]["tls"][0]["secretName"] == (
        "flame-public"
    )
    flamelet = _one(docs, "StatefulSet", f"{FULL}-flamelet")
    assert flamelet["spec"]["replicas"] == 2
    fspec = flamelet["spec"]["template"]["spec"]
    assert fspec["automountServiceAccountToken"] is False
    assert any(v.get("secret", {}).get("secretName") == "flamelet-tokens" for v in fspec["volumes"])
    assert flamelet["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "home"


# --- the env contract with the services -------------------------------------------------------

CONTROLLER_ENV = {
    "FLAME_CONTROLLER_DEPLOYER",
    "FLAME_KUBERNETES_NAMESPACE",
    "FLAME_KUBERNETES_RUNNER_IMAGE",
    "FLAME_KUBERNETES_SERVICE_ACCOUNT",
    "FLAME_CONTROLLER_TRACKING_URI",
    "FLAME_CONTROLLER_TLS_CA",
    "FLAME_CONTROLLER_TLS_CERT",
    "FLAME_CONTROLLER_TLS_KEY",
    "FLAME_SERVICE_TOKEN_FILE",
    "FLAME_CONTROLLER_STORE_URI",
    "FLAME_CONTROLLER_LISTEN",
}


def test_controller_env_contract(renders):
    _, docs = renders["default"]
    _, container = _controller(docs)
    env = _env(container)
    assert env.keys() >= CONTROLLER_ENV
    assert env["FLAME_CONTROLLER_DEPLOYER"]["value"] == "kubernetes"
    assert env["FLAME_KUBERNETES_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    assert env["FLAME_KUBERNETES_SERVICE_ACCOUNT"]["value"] == f"{FULL}-task"
    assert env["FLAME_CONTROLLER_TRACKING_URI"]["value"] == (
        f"http://{FULL}-mlflow.{NAMESPACE}.svc:5000"
    )
    assert env["FLAME_SERVICE_TOKEN_FILE"]["value"] == "/etc/flame/service/token"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/flame/tls", "/etc/flame/service"} <= mounts
    task_sa = _one(docs, "ServiceAccount", f"{FULL}-task")
    assert task_sa["automountServiceAccountToken"] is False
    bound = {s["name"] for b in _kind(docs, "RoleBinding") for s in b["subjects"]}
    assert f"{FULL}-task" not in bound, "task pods get no API access"
    probes = [container[p] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
    assert all("grpc" in p for p in probes)


@pytest.mark.parametrize("component", ["apiserver", "notifier"])
def test_service_tls_and_token_env(renders, component):
    _, docs = renders["default"]
    spec = _one(docs, "Deployment", f"{FULL}-{component}")["spec"]["template"]["spec"]
    env = _env(spec["containers"][0])
    prefix = f"FLAME_{component.upper()}_TLS_"
    assert {prefix + k for k in ("CA", "CERT", "KEY")} <= env.keys()
    assert "FLAME_SERVICE_TOKEN_FILE" in env


def test_probes(renders):
    _, docs = renders["default"]
    api = _one(docs, "Deployment", f"{FULL}-apiserver")["spec"]["template"]["spec"]["containers"][0]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    notifier = _one(docs, "Deployment", f"{FULL}-notifier")["spec"]["template"]["spec"]
    assert notifier["containers"][0]["readinessProbe"]["grpc"]["port"] == 10111
    for doc, template in _pod_specs(docs):
        for container in template["spec"]["containers"]:
            assert "livenessProbe" in container and "readinessProbe" in container, doc
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_every_env_var_is_documented(renders):
    names = set()
    for _, docs in renders.values():
        for _, template in _pod_specs(docs):
            for container in _containers(template["spec"]):
                names.update(_env(container))
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert not missing, f"README.md does not document {missing}"


MAP_VALUES = {"resources", "namespaceSelector", "podSelector"}  # documented as one row each


def _leaves(values: dict, prefix: str = ""):
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in MAP_VALUES:
            yield from _leaves(value, path + ".")
        else:
            yield path


def test_every_value_is_documented(chart):
    missing = [p for p in _leaves(chart.values) if f"`{p}`" not in README]
    assert not missing, f"README.md has no row for {missing}"


def test_notes_tell_how_to_log_in_and_enrol(renders):
    notes = renders["default"][0]["flame/templates/NOTES.txt"]
    assert f"get secret {FULL}-credentials" in notes
    assert "flamectl login --server" in notes
    assert "flamelet login --server" in notes
    assert "flamectl node create" in notes


def test_generated_certificates_work_for_mutual_tls(renders, tmp_path):
    """The chart's CA and certificates, used as the services will: the controller serves gRPC
    with its certificate and requires a client certificate; the apiserver's is accepted under
    the controller's in-cluster name."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    _, docs = renders["default"]
    secrets = {s["metadata"]["name"]: s["data"] for s in _kind(docs, "Secret")}

    def pem(component, key):
        return base64.b64decode(secrets[f"{FULL}-{component}-tls"][key])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = grpc.ssl_server_credentials(
        [(pem("controller", "tls.key"), pem("controller", "tls.crt"))],
        root_certificates=pem("controller", "ca.crt"),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        client = grpc.ssl_channel_credentials(
            root_certificates=pem("apiserver", "ca.crt"),
            private_key=pem("apiserver", "tls.key"),
            certificate_chain=pem("apiserver", "tls.crt"),
        )
        name = f"{FULL}-controller.{NAMESPACE}.svc"
        options = [("grpc.ssl_target_name_override", name)]
        with grpc.secure_channel(f"127.0.0.1:{port}", client, options=options) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # a client without a certificate is refused
        anonymous = grpc.ssl_channel_credentials(root_certificates=pem("apiserver", "ca.crt"))
        with (
            grpc.secure_channel(f"127.0.0.1:{port}", anonymous, options=options) as channel,
            pytest.raises(grpc.RpcError),
        ):
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
    finally:
        server.stop(None)


def test_metrics_ports_tokens_and_annotations(renders):
    _, docs = renders["default"]
    pods = {
        name: _one(docs, "Deployment", f"{FULL}-{name}")["spec"]["template"]
        for name in ("apiserver", "controller", "notifier")
    }
    for name, port in (("controller", 10122), ("notifier", 10121)):
        template = pods[name]
        container = template["spec"]["containers"][0]
        env = _env(container)
        prefix = f"FLAME_{name.upper()}_METRICS_"
        assert env[prefix + "PORT"]["value"] == str(port)
        assert env[prefix + "TOKEN_FILE"]["value"] == "/etc/flame/metrics/token"
        assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    api = pods["apiserver"]
    assert _env(api["spec"]["containers"][0])["FLAME_APISERVER_METRICS_TOKEN_FILE"]
    assert api["metadata"]["annotations"]["prometheus.io/scheme"] == "https"
    for template in pods.values():
        (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "metrics-token"]
        assert volume["secret"]["items"] == [{"key": "metrics-token", "path": "token"}]
    secret = _one(docs, "Secret", f"{FULL}-credentials")
    assert "metrics-token" in secret["data"]
    policy = _one(docs, "NetworkPolicy", f"{FULL}-controller")
    assert any(
        {"protocol": "TCP", "port": 10122} in rule.get("ports", [])
        for rule in policy["spec"]["ingress"]
    )

    _, off = renders["metrics-off"]
    for name in ("apiserver", "controller", "notifier"):
        template = _one(off, "Deployment", f"{FULL}-{name}")["spec"]["template"]
        assert not any("METRICS" in n for n in _env(template["spec"]["containers"][0]))
        assert "prometheus.io/scrape" not in template["metadata"].get("annotations", {})
