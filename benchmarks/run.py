"""Run every benchmark in this folder (``make bench``); each writes JSON (+ PNG) to results/.

A benchmark is a module ``benchmarks/<name>.py`` with ``main() -> dict``; its result is written to
``results/<name>.json``. A result with a ``table_row`` (one markdown row: benchmark, figures as
ratios to a limit measured in the same run, target) also gets it in ``results/<name>.md``, and
``results/table.md`` gathers every benchmark's row (the README's table). Targets are reported,
never asserted: timing lives here, not in tests.
Usage: python -m benchmarks.run [NAME ...]
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.py") if p.stem not in {"run", "__init__"})


def main(argv: list[str]) -> int:
    names = argv or discover()
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        if not hasattr(module, "main"):
            continue
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            result = module.main()
        except Exception as exc:
            print(f"   failed: {exc!r}", flush=True)
            failed.append(name)
            continue
        save(name, result, time.perf_counter() - started)
    write_table()
    return 1 if failed else 0


def save(name: str, result: dict[str, object], seconds: float) -> None:
    """Write ``results/<name>.json`` and print it."""
    result = {"benchmark": name, "seconds": round(seconds, 3), **result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    row = result.get("table_row")
    if isinstance(row, str):
        (RESULTS / f"{name}.md").write_text(row + "\n")
    print(json.dumps(result, indent=2, default=str), flush=True)


TABLE_HEADER = (
    "| benchmark | measured (ratio to a limit in the same run) | target |\n|---|---|---|\n"
)


def write_table() -> None:
    """``results/table.md``: the markdown row of every benchmark that wrote one."""
    rows = [p.read_text().strip() for p in sorted(RESULTS.glob("*.md")) if p.name != "table.md"]
    if rows:
        (RESULTS / "table.md").write_text(TABLE_HEADER + "\n".join(rows) + "\n")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
