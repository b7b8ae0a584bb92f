"""Generate (or check) the Python code for proto/flame/v1/*.proto into proto/python/flame_proto.

The .proto package is ``flame.v1`` but the generated modules live in ``flame_proto.v1`` so they
never collide with the ``flame`` SDK package; imports in the output are rewritten accordingly.
Usage: python proto/generate.py [--check]
"""

from __future__ import annotations

import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "flame" / "v1"
OUT = ROOT / "python" / "flame_proto"


def generate(dest: Path) -> None:
    gen = dest / "gen"
    gen.mkdir(parents=True)
    include = Path(protoc.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(ROOT)) for p in SRC.glob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={gen}",
        f"--grpc_python_out={gen}",
        f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
        f"--mypy_out={gen}",
        f"--plugin=protoc-gen-mypy_grpc={Path(sys.executable).parent / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={gen}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    pkg = dest / "flame_proto"
    (pkg / "v1").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Generated wire contracts of Flame. Do not edit."""\n')
    (pkg / "py.typed").write_text("")
    (pkg / "v1" / "__init__.py").write_text("")
    for f in sorted((gen / "flame" / "v1").iterdir()):
        text = f.read_text()
        text = re.sub(r"\bfrom flame\.v1 import\b", "from flame_proto.v1 import", text)
        text = re.sub(r"\bimport flame\.v1\.", "import flame_proto.v1.", text)
        text = re.sub(r"\bflame\.v1\.(\w+_pb2)\b", r"flame_proto.v1.\1", text)
        (pkg / "v1" / f.name).write_text(text)


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "flame_proto"
        if check:
            if not OUT.exists() or not same_tree(fresh, OUT):
                print("generated code is out of date: run `make proto` and commit", file=sys.stderr)
                return 1
            print("generated code is up to date")
            return 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT, ignore=shutil.ignore_patterns("__pycache__"))
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
