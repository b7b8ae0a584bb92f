"""A role's ``requirements.txt``: the packages its code needs beyond the SDK.

The node installs them (``flame_service.pyenv``) from its own configured package index, as
wheels only, so user input can name packages and versions but never where they come from or
how they are built. The accepted grammar is a strict subset of pip's requirements files, one
requirement per line (a trailing ``\\`` continues a line)::

    natsort==8.4.0 --hash=sha256:4732914fb471f56b5cce04d7bae6f164a592c7712e1c85f9ef585e197299521c
    humanize>=4,<5 ; python_version >= "3.11"
    # comments and blank lines

Refused: options (``-e``, ``-r``, ``-c``, ``--index-url``, ``--extra-index-url``,
``--find-links``, ``--trusted-host``, ...), URLs and direct references (``name @ url``),
local paths and archives. Hashes are optional; when one line has them, pip requires them on
every package it installs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flame_spec.errors import SpecError

FILE_NAME = "requirements.txt"
MAX_BYTES = 64 * 1024
MAX_LINES = 200

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_EXTRAS = rf"\[\s*{_NAME}(?:\s*,\s*{_NAME})*\s*\]"
_VERSION = r"[A-Za-z0-9._*+!-]+"
_SPEC = rf"(?:===|==|!=|~=|<=|>=|<|>)\s*{_VERSION}"
_SPECS = rf"{_SPEC}(?:\s*,\s*{_SPEC})*"
_MVAR = (
    r"(?:python_version|python_full_version|os_name|sys_platform|platform_release"
    r"|platform_system|platform_version|platform_machine|platform_python_implementation"
    r"|implementation_name|implementation_version|extra)"
)
_MVAL = rf"(?:{_MVAR}|'[^'\\]*'|\"[^\"\\]*\")"
_MATOM = rf"\(*\s*{_MVAL}\s*(?:===|==|!=|<=|>=|~=|<|>|not\s+in|in)\s*{_MVAL}\s*\)*"
_MARKER = rf"{_MATOM}(?:\s+(?:and|or)\s+{_MATOM})*"
_HASH = r"--hash=sha256:[0-9a-f]{64}"
_LINE = re.compile(
    rf"^(?P<name>{_NAME})\s*(?P<extras>{_EXTRAS})?\s*(?P<specs>\(?\s*{_SPECS}\s*\)?)?"
    rf"\s*(?:;\s*(?P<marker>{_MARKER}))?"
    rf"(?P<hashes>(?:\s+{_HASH})*)\s*$"
)


@dataclass(frozen=True)
class Requirement:
    name: str  # normalized (PEP 503)
    line: str  # the requirement as pip reads it (hashes included)
    hashes: tuple[str, ...] = ()


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            out.append((start, full))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def parse_requirements(text: str, where: str = FILE_NAME) -> list[Requirement]:
    """The requirements in ``text``, or :class:`SpecError` naming every bad line."""
    if len(text.encode()) > MAX_BYTES:
        raise SpecError(where, [("", f"larger than {MAX_BYTES} bytes")])
    problems: list[tuple[str, str]] = []
    found: list[Requirement] = []
    seen: set[str] = set()
    lines = _logical_lines(text)
    if len(lines) > MAX_LINES:
        raise SpecError(where, [("", f"more than {MAX_LINES} requirements")])
    for number, line in lines:
        loc = f"line {number}"
        if line.startswith("-"):
            option = line.split()[0].split("=", 1)[0]
            problems.append((loc, f"option {option} is not allowed (only packages and hashes)"))
            continue
        if "://" in line or " @ " in line or line.startswith(("/", ".", "~")):
            problems.append((loc, "URLs, direct references and paths are not allowed"))
            continue
        match = _LINE.match(line)
        if match is None:
            problems.append((loc, f"not a requirement: {line[:80]!r}"))
            continue
        name = normalize(match["name"])
        if name in seen:
            problems.append((loc, f"{name} is listed twice"))
            continue
        seen.add(name)
        hashes = tuple(h.removeprefix("--hash=") for h in match["hashes"].split())
        found.append(Requirement(name=name, line=" ".join(line.split()), hashes=hashes))
    if problems:
        raise SpecError(where, problems)
    hashed = [r for r in found if r.hashes]
    if hashed and len(hashed) != len(found):
        unhashed = ", ".join(r.name for r in found if not r.hashes)
        raise SpecError(where, [("", f"some lines have hashes, these do not: {unhashed}")])
    return found


def requirements_text(requirements: list[Requirement]) -> str:
    """The canonical file content pip is given (and what a cached environment is keyed by)."""
    return "".join(f"{r.line}\n" for r in sorted(requirements, key=lambda r: r.name))
