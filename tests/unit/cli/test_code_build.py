"""`flamectl code build`: a code folder is checked without running it, and its zip written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from flame.cli.code import zip_folder
from flame.cli.main import app

EXAMPLES = Path(__file__).parents[3] / "examples"
HASH = "4732914fb471f56b5cce04d7bae6f164a592c7712e1c85f9ef585e197299521c"


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "central"
    shutil.copytree(EXAMPLES / "central-numpy", folder)
    return folder


def test_build_writes_the_zip_push_would_send_and_names_entries_and_needs(tmp_path) -> None:
    folder = _copy(tmp_path)
    (folder / "trainer" / "requirements.txt").write_text(f"natsort==8.4.0 --hash=sha256:{HASH}\n")
    out = tmp_path / "out" / "bundle.zip"
    result = CliRunner().invoke(app, ["code", "build", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data == zip_folder(folder)
    assert hashlib.sha256(data).hexdigest() in result.stdout
    trainer = next(line for line in result.stdout.splitlines() if line.startswith("trainer"))
    assert "NumpyDigitsTrainer" in trainer and "natsort==8.4.0" in trainer


def test_build_lists_every_problem_and_writes_nothing(tmp_path) -> None:
    folder = _copy(tmp_path)
    (folder / "aggregator" / "main.py").write_text("def broken(:\n")
    (folder / "trainer" / "main.py").write_text("import os\nos.system('echo ran')\n")
    (folder / "trainer" / "requirements.txt").write_text("--index-url https://evil.example\n")
    spec = json.loads((folder / "job.json").read_text())
    spec["rounds"] = -1
    (folder / "job.json").write_text(json.dumps(spec))
    out = tmp_path / "bundle.zip"
    result = CliRunner().invoke(app, ["code", "build", str(folder), "--out", str(out)])
    assert result.exit_code == 1
    err = result.stderr
    assert "aggregator/main.py: line 1" in err  # a syntax error, found without importing
    assert "exactly one class deriving from a Flame role" in err and "ran" not in result.output
    assert "option --index-url is not allowed" in err
    assert "job.json" in err and "rounds" in err
    assert not out.exists()


def test_a_role_of_the_design_without_code_is_named(tmp_path) -> None:
    folder = _copy(tmp_path)
    shutil.rmtree(folder / "aggregator")
    result = CliRunner().invoke(app, ["code", "build", str(folder), "--out", str(tmp_path / "z")])
    assert result.exit_code == 1 and "role 'aggregator' has no aggregator/main.py" in result.stderr


def test_every_example_builds(tmp_path) -> None:
    for folder in sorted(p for p in EXAMPLES.iterdir() if (p / "design.json").is_file()):
        out = tmp_path / f"{folder.name}.zip"
        result = CliRunner().invoke(app, ["code", "build", str(folder), "--out", str(out)])
        assert result.exit_code == 0, (folder.name, result.output)
