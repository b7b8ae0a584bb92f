"""Print the in-repo package folders that the given package folders need: themselves and,
transitively, every dependency that is a package of this repository (found by reading each
``pyproject.toml`` of the repo's top-level folders and of ``services/*``).

    python deploy/docker/localdeps.py REPO_ROOT services/apiserver [sdk ...]

The image builds use it, so a package that the restructuring adds (as ``spec/`` was) goes into
every image that needs it without editing the Dockerfiles, and never comes from a package
index under the same name.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def packages(root: Path) -> dict[str, tuple[str, list[str]]]:
    """distribution name -> (folder relative to root, names of its dependencies)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for pyproject in sorted(
        [*root.glob("*/pyproject.toml"), *root.glob("services/*/pyproject.toml")]
    ):
        project = tomllib.loads(pyproject.read_text()).get("project")
        if not project:
            continue
        deps = [
            canonical(re.split(r"[\s<>=!~\[;@(]", d, maxsplit=1)[0])
            for d in project.get("dependencies", [])
        ]
        found[canonical(project["name"])] = (pyproject.parent.relative_to(root).as_posix(), deps)
    return found


def closure(root: Path, folders: list[str]) -> list[str]:
    known = packages(root)
    by_folder = {folder: name for name, (folder, _) in known.items()}
    missing = [f for f in folders if f not in by_folder]
    if missing:
        raise SystemExit(f"not package folders of {root}: {', '.join(missing)}")
    seen: set[str] = set()
    todo = [by_folder[f] for f in folders]
    while todo:
        name = todo.pop()
        if name in seen or name not in known:
            continue
        seen.add(name)
        todo.extend(known[name][1])
    return sorted(known[name][0] for name in seen)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    for folder in closure(Path(argv[1]), argv[2:]):
        print(f"./{folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
