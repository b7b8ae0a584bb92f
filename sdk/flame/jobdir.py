"""A job directory (also the layout of a job's code zip)::

design.json          the design (roles + channels)
job.json             the job spec (rounds, datasets per group, optimizer, selector, ...)
datasets.json        optional: dataset name -> uri for local runs (relative paths are
                     resolved against the job directory)
<role>/main.py       one folder per role, defining one Trainer/Aggregator/Coordinator subclass
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from flame.config import DesignSchema, JobSpec
from flame.errors import ConfigError
from flame_spec import SpecError, parse_design, parse_job_spec


@dataclass(frozen=True)
class JobDir:
    path: Path
    name: str
    design: DesignSchema
    spec: JobSpec
    datasets: dict[str, str] = field(default_factory=dict)

    def role_code(self, role: str) -> Path:
        return self.path / role / "main.py"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc


def load_job_dir(path: str | Path) -> JobDir:
    root = Path(path).resolve()
    if not root.is_dir():
        raise ConfigError(f"job directory {root} does not exist")
    try:
        design = parse_design(_read_json(root / "design.json"))
        spec = parse_job_spec(_read_json(root / "job.json"))
    except SpecError as exc:
        raise ConfigError(f"{root}: {exc}") from None
    datasets: dict[str, str] = {}
    ds_file = root / "datasets.json"
    if ds_file.exists():
        raw = _read_json(ds_file)
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise ConfigError(f"{ds_file} must map dataset names to uris")
        for name, uri in raw.items():
            local = root / uri
            datasets[str(name)] = str(local) if "://" not in uri and local.exists() else uri
    for role in design.roles:
        if not (root / role.name / "main.py").is_file():
            raise ConfigError(f"job directory {root} lacks {role.name}/main.py")
    return JobDir(path=root, name=root.name, design=design, spec=spec, datasets=datasets)
