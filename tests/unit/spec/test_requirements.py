"""A role's requirements.txt: packages and versions only, never where they come from."""

from __future__ import annotations

import pytest

from flame_spec import SpecError
from flame_spec.requirements import parse_requirements, requirements_text

HASH = "4732914fb471f56b5cce04d7bae6f164a592c7712e1c85f9ef585e197299521c"


def test_packages_versions_markers_extras_and_hashes_are_read() -> None:
    text = f"""
# what the trainer needs
natsort==8.4.0 \\
    --hash=sha256:{HASH}
Humanize[extra]>=4,<5 ; python_version >= "3.11"  --hash=sha256:{"0" * 64}
"""
    found = parse_requirements(text)
    assert [r.name for r in found] == ["natsort", "humanize"]
    assert found[0].hashes == (f"sha256:{HASH}",)
    assert requirements_text(found).splitlines()[0].startswith("Humanize[extra]>=4,<5")


@pytest.mark.parametrize(
    "line",
    [
        "--index-url https://evil.example/simple",
        "-i https://evil.example/simple",
        "--extra-index-url https://x",
        "--find-links /tmp",
        "-e .",
        "-r other.txt",
        "-c constraints.txt",
        "--trusted-host x",
        "pkg @ https://evil.example/pkg.whl",
        "https://evil.example/pkg.tar.gz",
        "./local/pkg",
        "/abs/pkg.whl",
        "pkg==1.0; import os",
        "pkg==1.0 --install-option=--prefix=/",
        "not a requirement at all",
    ],
)
def test_options_urls_paths_and_junk_are_refused(line: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_requirements(f"ok==1.0\n{line}\n")
    assert err.value.fields == ["line 2"]


def test_hashes_on_some_lines_only_or_a_name_twice_are_refused() -> None:
    with pytest.raises(SpecError, match="these do not: b"):
        parse_requirements(f"a==1 --hash=sha256:{HASH}\nb==2\n")
    with pytest.raises(SpecError, match="listed twice"):
        parse_requirements("My_Pkg==1\nmy-pkg==2\n")
