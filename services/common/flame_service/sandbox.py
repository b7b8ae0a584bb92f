"""Run user code (a task's roles) without the powers of the process that starts it.

A task runs inside a `bubblewrap <https://github.com/containers/bubblewrap>`_ sandbox that sees
only what it needs: the system's programs and libraries and the Python environment, read-only;
its own work dir, read-write; a private ``/tmp``, ``/proc`` (its own processes only) and
``/dev``. Everything else on the host is simply not there: the control plane's home and
identity, its store and blobs, other tasks' work dirs, other users' files. It keeps the network
(it must reach its peers, the broker and the apiserver) and nothing else: new user, pid, ipc,
uts and cgroup namespaces, every capability dropped. It does not die with its starter: a task
outlives a crashed controller or flamelet, which adopts it when it comes back.

Why bubblewrap and not only a separate uid (also when running as root): the uid alone would
need every directory on the way to the interpreter to be open to that uid (``/root/.pyenv``,
a checkout in a 0700 temporary folder) and would still show every world-readable file on the
host; a mount namespace shows only what is bound in. The same mechanism then serves root (CI,
``flamectl up`` in a container) and unprivileged users (user namespaces).

``mode="none"`` runs user code with the starter's powers. It exists for development on
machines without bubblewrap, is never chosen automatically, and is logged loudly every time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

log = structlog.get_logger(__name__)

SandboxMode = Literal["auto", "bubblewrap", "none"]
SANDBOX_TMP = "/tmp"  # noqa: S108 - a fresh tmpfs that only the sandbox sees

#: System folders bound read-only (a merged-/usr symlink such as /bin -> usr/bin is recreated).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")
#: What of /etc a Python task needs: name resolution, CA certificates, users, time zone, ld.so.
ETC_ENTRIES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/mime.types",
)


class SandboxUnavailable(RuntimeError):
    """No sandbox can be used here, and running unsandboxed was not asked for."""


@dataclass(frozen=True)
class Sandbox:
    """How to wrap a task's command. ``kind == "none"``: not at all."""

    kind: Literal["bubblewrap", "none"]
    program: str = ""
    python_dirs: tuple[str, ...] = ()

    def wrap(self, argv: Sequence[str], workdir: Path, read_only: Sequence[str] = ()) -> list[str]:
        """``argv`` as it runs in the sandbox, in ``workdir`` (bound read-write, same path);
        ``read_only`` paths (a node's dataset) are visible too, read-only."""
        if self.kind == "none":
            return list(argv)
        opts = self.options(workdir)
        for path in read_only:
            opts += ["--ro-bind", path, path]
        return [self.program, *opts, "--chdir", str(workdir), "--", *argv]

    def options(self, workdir: Path) -> list[str]:
        opts = [
            "--unshare-all",
            "--share-net",
            "--cap-drop",
            "ALL",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            SANDBOX_TMP,
            "--ro-bind-try",
            "/sys",
            "/sys",
        ]
        for name in SYSTEM_DIRS:
            path = Path(name)
            if path.is_symlink():
                opts += ["--symlink", str(path.readlink()), name]
            elif path.is_dir():
                opts += ["--ro-bind", name, name]
        for entry in ETC_ENTRIES:
            opts += ["--ro-bind-try", entry, entry]
        for folder in self.python_dirs:
            opts += ["--ro-bind", folder, folder]
        opts += ["--bind", str(workdir), str(workdir)]
        return opts


def python_dirs(python: str | None = None) -> tuple[str, ...]:
    """The folders the interpreter and its packages live in: its prefixes and every folder on
    its import path (editable installs included), outermost first, none inside another."""
    exe = python or sys.executable
    out = subprocess.run(
        [
            exe,
            "-c",
            "import sys, os; print('\\n'.join([sys.prefix, sys.base_prefix, "
            "os.path.dirname(os.path.realpath(sys.executable)), *sys.path]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split("\n")
    found = sorted({str(Path(p).resolve()) for p in out if p and Path(p).is_dir()})
    kept: list[str] = []
    for folder in found:  # sorted: a parent comes before what is inside it
        if not any(folder == k or folder.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(folder)
    return tuple(k for k in kept if k != "/")


def choose_sandbox(mode: SandboxMode, python: str | None = None) -> Sandbox:
    """The sandbox for ``mode``: ``auto`` and ``bubblewrap`` need a working bubblewrap
    (:class:`SandboxUnavailable` says how to get one); ``none`` runs unsandboxed, loudly."""
    if mode == "none":
        log.warning(
            "sandbox.disabled",
            warning="user code runs with the powers of the control plane (development only)",
        )
        return Sandbox("none")
    program = shutil.which("bwrap")
    if program is None:
        raise SandboxUnavailable(
            "user code runs in a bubblewrap sandbox and bwrap is not installed: install it "
            "(Debian/Ubuntu: apt-get install bubblewrap), or, for development only, run tasks "
            "unsandboxed with FLAME_SANDBOX=none"
        )
    sandbox = Sandbox("bubblewrap", program, python_dirs(python))
    with tempfile.TemporaryDirectory(prefix="flame-sandbox-probe-") as folder:
        probe = subprocess.run(
            sandbox.wrap(["/bin/true"], Path(folder)),
            capture_output=True,
            text=True,
            timeout=120,
        )
    if probe.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot create a sandbox here ({probe.stderr.strip() or probe.returncode}"
            "): allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) "
            "or run as root, or, for development only, set FLAME_SANDBOX=none"
        )
    return sandbox
