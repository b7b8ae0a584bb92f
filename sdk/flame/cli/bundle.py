"""What ``flamectl code build`` (and ``code push``, before it uploads) checks in a job's code
folder, without running any of it:

- the design (``design.json``, or the design's schema on the server) parses;
- every role of the design has ``<role>/main.py``, valid Python that defines exactly one class
  deriving from a Flame role (``Trainer``, ``Aggregator``, ``Coordinator``, ...);
- ``job.json`` (if present) is a valid job spec, ``datasets.json`` (if present) maps names to
  strings;
- ``<role>/requirements.txt`` (if present) is what a node accepts
  (:mod:`flame_spec.requirements`);
- the zip is within the size limit.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flame.cli.code import load_code  # the zip format and its size limit
from flame.errors import ConfigError
from flame_spec import DesignSchema, SpecError, parse_design, parse_job_spec
from flame_spec.requirements import FILE_NAME as REQUIREMENTS
from flame_spec.requirements import Requirement, parse_requirements

# Flame's role classes a user's class may derive from (flame.roles and the job kinds).
ROLE_BASES = frozenset(
    {
        "Trainer",
        "Aggregator",
        "Coordinator",
        "AsyncAggregator",
        "FeatureParty",
        "LabelParty",
        "LogisticFeatureParty",
        "LogisticLabelParty",
        "StatisticsSite",
        "StatisticsServer",
        "CrossSiteTrainer",
        "CrossSiteEvaluator",
    }
)


@dataclass(frozen=True)
class RoleCheck:
    role: str
    entry: str  # the role class found in main.py
    files: int
    requirements: list[Requirement] = field(default_factory=list)


@dataclass(frozen=True)
class BuildReport:
    roles: list[RoleCheck]
    zip_bytes: bytes
    sha256: str
    files: int


def _base_names(node: ast.ClassDef) -> set[str]:
    names = set()
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def role_entry(main_py: Path) -> str:
    """The one role class ``main_py`` defines (read with ``ast``, never imported)."""
    try:
        tree = ast.parse(main_py.read_bytes(), filename=str(main_py))
    except SyntaxError as exc:
        raise ConfigError(f"{main_py}: line {exc.lineno}: {exc.msg}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {main_py}: {exc}") from None
    found = [
        node.name
        for node in tree.body
        if isinstance(node, ast.ClassDef) and _base_names(node) & ROLE_BASES
    ]
    if len(found) != 1:
        names = ", ".join(found) or "none"
        raise ConfigError(
            f"{main_py} must define exactly one class deriving from a Flame role "
            f"({', '.join(sorted(ROLE_BASES)[:3])}, ...); found {names}"
        )
    return found[0]


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


def check_folder(
    folder: Path, design: DesignSchema | dict[str, Any] | None = None
) -> list[RoleCheck]:
    """Every check of the module docstring; raises :class:`ConfigError` listing all problems."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder")
    problems: list[str] = []
    schema: DesignSchema | None = None
    try:
        if design is None:
            if not (folder / "design.json").is_file():
                raise ConfigError(f"{folder} has no design.json (or pass the design)")
            design = _load_json(folder / "design.json")
        schema = design if isinstance(design, DesignSchema) else parse_design(design)
    except (ConfigError, SpecError) as exc:
        problems.append(str(exc))
    if (folder / "job.json").is_file():
        try:
            parse_job_spec(_load_json(folder / "job.json"))
        except (ConfigError, SpecError) as exc:
            problems.append(f"job.json: {exc}")
    if (folder / "datasets.json").is_file():
        try:
            mapping = _load_json(folder / "datasets.json")
            if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
            ):
                problems.append("datasets.json must map dataset names to strings")
        except ConfigError as exc:
            problems.append(str(exc))
    checks: list[RoleCheck] = []
    for role in schema.roles if schema is not None else []:
        role_dir = folder / role.name
        main_py = role_dir / "main.py"
        if not main_py.is_file():
            problems.append(f"role {role.name!r} has no {role.name}/main.py")
            continue
        requirements: list[Requirement] = []
        req_file = role_dir / REQUIREMENTS
        if req_file.is_file():
            try:
                requirements = parse_requirements(
                    req_file.read_text(), f"{role.name}/{REQUIREMENTS}"
                )
            except (SpecError, UnicodeDecodeError) as exc:
                problems.append(str(exc))
        try:
            entry = role_entry(main_py)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        files = sum(1 for p in role_dir.rglob("*") if p.is_file())
        checks.append(RoleCheck(role.name, entry, files, requirements))
    if problems:
        raise ConfigError("the code is not ready:\n  " + "\n  ".join(problems))
    return checks


def build(folder: Path, design: DesignSchema | dict[str, Any] | None = None) -> BuildReport:
    """Check ``folder`` and make its code zip (the bytes ``code push`` uploads)."""
    roles = check_folder(folder, design)
    data = load_code(folder)
    files = len(zipfile.ZipFile(io.BytesIO(data)).infolist())
    return BuildReport(roles, data, hashlib.sha256(data).hexdigest(), files)
