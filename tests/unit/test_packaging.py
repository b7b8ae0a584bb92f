"""Package metadata gives ranges, and requirements.lock pins every third-party requirement.

Library metadata must not pin exact versions (it would break installs beside other packages);
CI installs from the lock with hashes, so the lock must satisfy every requirement of every
package and of requirements-dev.txt (run `make lock` when this fails).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "proto",
    "spec",
    "sdk",
    "services/common",
    "services/controller",
    "services/apiserver",
    "services/notifier",
    "services/flamelet",
)
EXACT_ON_PURPOSE = {"torch"}  # any other torch build pulls a multi-GB CUDA wheel


def _project(folder: str) -> dict[str, object]:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _own_names() -> set[str]:
    return {canonicalize_name(str(_project(f)["name"])) for f in PACKAGES}


def _requirements(folder: str) -> list[Requirement]:
    project = _project(folder)
    lines = list(project.get("dependencies", []))  # type: ignore[call-overload]
    for extra in project.get("optional-dependencies", {}).values():  # type: ignore[attr-defined]
        lines += extra
    return [Requirement(line) for line in lines]


def _dev_requirements() -> list[Requirement]:
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    stripped = (line.split("#", 1)[0].strip() for line in lines)
    return [Requirement(line) for line in stripped if line]


def _locked() -> dict[str, Version]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {canonicalize_name(name): Version(version) for name, version in pins}


@pytest.mark.parametrize("folder", PACKAGES)
def test_library_metadata_uses_ranges_not_exact_pins(folder: str) -> None:
    own = _own_names()
    for req in _requirements(folder):
        name = canonicalize_name(req.name)
        if name in own or name in EXACT_ON_PURPOSE:
            continue
        exact = [s for s in req.specifier if s.operator in ("==", "===")]
        assert not exact, f"{folder}: {req} pins an exact version; give a compatible range"


def test_the_lock_pins_every_requirement_with_hashes() -> None:
    text = (ROOT / "requirements.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text)
    pinned = [b for b in blocks if re.match(r"[A-Za-z0-9_.-]+==", b)]
    assert pinned and all("--hash=sha256:" in b for b in pinned)
    assert "file://" not in text and " @ " not in text  # the repo's packages are not locked

    locked = _locked()
    own = _own_names()
    wanted = [r for f in PACKAGES for r in _requirements(f)] + _dev_requirements()
    for req in wanted:
        name = canonicalize_name(req.name)
        if name in own:
            continue
        assert name in locked, f"{req} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock has {name}=={locked[name]}, outside {req}: run `make lock`"
        )


def test_the_locked_torch_is_the_cpu_build() -> None:
    assert str(_locked()["torch"]) == "2.13.0+cpu"
