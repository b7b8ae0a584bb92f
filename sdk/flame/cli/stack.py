"""The embedded control plane on one machine: start, health-check and stop its processes.

``flamectl up`` starts the controller (SQLite store), the notifier, the apiserver, an MLflow
tracking server and N local flamelets as detached processes, records their pids in
``<home>/stack.json`` and waits until each one is healthy; ``flamectl down`` stops them by pid.
Services are started through their console scripts (the SDK never imports a service).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil
import structlog

from flame.connect import Security, sync_http_client
from flame.errors import FlameError
from flame.paths import flame_home
from flame.ports import free_ports
from flame_spec.pki import Authority, write_private
from flame_spec.privacy import without_telemetry
from flame_spec.retry import Backoff

log = structlog.get_logger(__name__)


Env = dict[str, str]
# the ports a stack keeps in its identity (flamelets add flamelet-<name>-metrics)
STACK_PORTS = ("controller", "notifier", "api", "mlflow", "controller-metrics", "notifier-metrics")
# MLflow's server starts a job runner and seven huey workers for its GenAI features (online
# scoring, trace archival), each importing MLflow: ~2 GB and ~25 s of CPU after every `up`, and
# periodic work after that. Flame uses none of them.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _check_sandbox() -> None:
    """Refuse to start a stack whose tasks could not be sandboxed, before anything starts
    (the controller runs aggregators in bubblewrap; see flame_service.sandbox)."""
    if os.environ.get("FLAME_SANDBOX") == "none":
        print("warning: FLAME_SANDBOX=none: jobs' code runs with the stack's powers", flush=True)
    elif shutil.which("bwrap") is None:
        raise StackError(
            "the stack runs jobs' code in a bubblewrap sandbox and bwrap is not installed: "
            "install it (Debian/Ubuntu: apt-get install bubblewrap), or, for development only, "
            "set FLAME_SANDBOX=none"
        )


class StackError(FlameError):
    """The embedded stack could not be started or stopped."""


@dataclass
class Proc:
    name: str
    pid: int
    log: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # only what the stack sets


@dataclass
class StackState:
    home: str
    api_url: str
    admin_token: str
    mlflow_url: str
    controller: str
    notifier: str
    ca_file: str = ""  # the stack CA's certificate; "" when the stack runs in plaintext
    procs: list[Proc] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)  # node name -> flamelet home
    # Prometheus endpoints: apiserver, controller, notifier, flamelet-<node> -> URL; every one
    # asks for the bearer token in ``metrics_token_file`` (the apiserver also takes the admin's)
    metrics: dict[str, str] = field(default_factory=dict)
    metrics_token_file: str = ""

    def save(self) -> None:
        _write_private(Path(self.home) / "stack.json", json.dumps(asdict(self), indent=2))

    def security(self) -> Security:
        """What a client of this stack's apiserver trusts."""
        return Security.from_files(self.ca_file or None)

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client for the apiserver (as the admin unless ``token`` is given)."""
        return sync_http_client(
            self.api_url, self.security(), token=token or self.admin_token, timeout=timeout
        )

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        path = home / "stack.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        raw["procs"] = [Proc(**p) for p in raw.get("procs", [])]
        return cls(**raw)


def _write_private(path: Path, text: str) -> None:
    write_private(path, text.encode())


def default_home() -> Path:
    return flame_home() / "stack"


def _script(name: str) -> str:
    """A console script of this environment (services are installed next to flamectl)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} is not installed in this environment (run `make install`)")
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(what: str, check: Callable[[], bool], procs: list[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    backoff = Backoff(0.05, 0.5)
    while True:
        for p in procs:
            if not _alive(p.pid):
                tail = _tail(Path(p.log))
                raise StackError(f"{p.name} exited while waiting for {what}; its log ends:\n{tail}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(backoff.next())


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Stack:
    """Starts and stops the embedded stack rooted at ``home``.

    Every hop is TLS: on first start the stack makes a CA in ``<home>/pki`` (kept across
    ``up``s) and, on each start, one certificate for its services on the loopback addresses.
    The controller admits only clients holding that certificate (the apiserver and the
    notifier); flamectl, flamelets and tasks check the services against the CA. ``tls=False``
    is for development only.
    """

    def __init__(self, home: Path | None = None, *, tls: bool = True) -> None:
        self.home = (home or default_home()).resolve()
        self.logs = self.home / "logs"
        self.tls = tls

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        full_env = without_telemetry({**os.environ, **env})
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=self.home,
                start_new_session=True,  # survives the shell that ran `flamectl up`
            )
        log.info("stack.started", process=name, pid=proc.pid, log=str(log_path))
        return Proc(name=name, pid=proc.pid, log=str(log_path), argv=argv, env=env)

    def up(
        self,
        nodes: int = 0,
        timeout: float = 90.0,
        mlflow: bool = True,
        progress: Callable[[str], None] | None = None,
    ) -> StackState:
        """Start everything and wait until it is healthy; ``progress`` is told each step as it
        is reached (``flamectl up`` prints them)."""
        say = progress or (lambda _msg: None)
        started = time.monotonic()

        def done(what: str) -> None:
            say(f"{what} ({time.monotonic() - started:.1f}s)")

        existing = StackState.load(self.home)
        if existing and any(_alive(p.pid) for p in existing.procs):
            raise StackError(f"a stack is already running from {self.home}; run `flamectl down`")
        _check_sandbox()
        if not self.tls:
            print("warning: the stack runs in plaintext: development only", flush=True)
        self.home.mkdir(parents=True, exist_ok=True)
        ports, token = self._identity()
        scheme = "https" if self.tls else "http"
        state = StackState(
            home=str(self.home),
            api_url=f"{scheme}://127.0.0.1:{ports['api']}",
            admin_token=token,
            mlflow_url=f"http://127.0.0.1:{ports['mlflow']}" if mlflow else "",
            controller=f"127.0.0.1:{ports['controller']}",
            notifier=f"127.0.0.1:{ports['notifier']}",
            ca_file=str(self._pki() / "ca.pem") if self.tls else "",
        )
        state.metrics = {
            "apiserver": f"{state.api_url}/metrics",
            "controller": f"http://127.0.0.1:{ports['controller-metrics']}/metrics",
            "notifier": f"http://127.0.0.1:{ports['notifier-metrics']}/metrics",
        }
        try:
            for name, argv, env in self._services(state, ports):
                state.procs.append(self._spawn(name, argv, env))
            state.save()
            done(f"started {', '.join(p.name for p in state.procs)} in {self.home}")
            with state.client(timeout=5) as api:
                _wait(
                    "the apiserver and controller",
                    lambda: api.get("/readyz").status_code == 200,
                    state.procs,
                    timeout,
                )
                done(f"apiserver and controller ready at {state.api_url}")
                for i in range(nodes):
                    self._add_node(state, api, f"node-{i}")
                    done(f"node-{i} enrolled, its flamelet started")
                state.save()
                if nodes:
                    _wait(
                        f"{nodes} flamelet(s) online",
                        lambda: _online(api) >= nodes,
                        state.procs,
                        timeout,
                    )
                    done(f"{nodes} node(s) online")
            if state.mlflow_url:
                with sync_http_client(state.mlflow_url, timeout=2) as tracking:
                    _wait(
                        "the MLflow server",
                        lambda: tracking.get("/health").status_code == 200,
                        state.procs,
                        timeout,
                    )
                done(f"MLflow ready at {state.mlflow_url}")
        except BaseException:
            self.down(state)
            raise
        return state

    def _services(
        self, state: StackState, ports: dict[str, int]
    ) -> list[tuple[str, list[str], Env]]:
        """What runs the control plane: (name, argv, the environment the stack sets)."""
        data = self.home / "data"
        data.mkdir(exist_ok=True)
        secrets_dir = self._secrets(state)
        api_port = ports["api"]

        def metrics(prefix: str, port: int) -> Env:
            # loopback only, and only for whoever holds the stack's metrics token
            return {
                f"{prefix}METRICS_PORT": str(port),
                f"{prefix}METRICS_HOST": "127.0.0.1",
                f"{prefix}METRICS_TOKEN_FILE": state.metrics_token_file,
            }

        # secrets travel as files only they can read, never in the environment or argv
        common = {
            "FLAME_LOG_JSON": "true",
            "FLAME_SERVICE_TOKEN_FILE": str(secrets_dir / "service.token"),
        }

        def tls(prefix: str) -> Env:
            if not self.tls:
                return {}
            pki = self.home / "pki"
            return {
                f"{prefix}TLS_CA": str(pki / "ca.pem"),
                f"{prefix}TLS_CERT": str(pki / "services.pem"),
                f"{prefix}TLS_KEY": str(pki / "services.key"),
            }

        controller = {
            **common,
            **tls("FLAME_CONTROLLER_"),
            "FLAME_CONTROLLER_STORE_URI": f"sqlite:///{data / 'flame.db'}",
            "FLAME_CONTROLLER_DATA_DIR": str(data),
            "FLAME_CONTROLLER_LISTEN": state.controller,
            "FLAME_CONTROLLER_NOTIFIER_ADDRESS": state.notifier,
            "FLAME_CONTROLLER_APISERVER_URL": state.api_url,
            "FLAME_CONTROLLER_ADMIN_TOKEN_FILE": str(secrets_dir / "admin.token"),
            **metrics("FLAME_CONTROLLER_", ports["controller-metrics"]),
        }
        if state.mlflow_url:  # jobs log to the stack's MLflow, each as its own account
            controller["FLAME_CONTROLLER_TRACKING_URI"] = state.mlflow_url
            controller["FLAME_CONTROLLER_TRACKING_ADMIN_PASSWORD_FILE"] = str(
                secrets_dir / "mlflow-admin.password"
            )
        services: list[tuple[str, list[str], Env]] = [
            ("controller", [_script("flame-controller")], controller),
            (
                "notifier",
                [_script("flame-notifier")],
                {
                    **common,
                    **tls("FLAME_NOTIFIER_"),
                    "FLAME_NOTIFIER_LISTEN": state.notifier,
                    "FLAME_NOTIFIER_CONTROLLER_ADDRESS": state.controller,
                    **metrics("FLAME_NOTIFIER_", ports["notifier-metrics"]),
                },
            ),
            (
                "apiserver",
                [_script("flame-apiserver")],
                {
                    **common,
                    **tls("FLAME_APISERVER_"),
                    "FLAME_APISERVER_CONTROLLER_ADDRESS": state.controller,
                    "FLAME_APISERVER_NOTIFIER_ADDRESS": state.notifier,
                    "FLAME_APISERVER_LISTEN_HOST": "127.0.0.1",
                    "FLAME_APISERVER_PORT": str(api_port),
                    "FLAME_APISERVER_METRICS_TOKEN_FILE": state.metrics_token_file,
                },
            ),
        ]
        if state.mlflow_url:
            host, port = state.mlflow_url.removeprefix("http://").rsplit(":", 1)
            argv = [sys.executable, "-m", "mlflow", "server", "--workers", "1"]
            argv += ["--host", host, "--port", port]
            argv += ["--backend-store-uri", f"sqlite:///{self.home / 'mlflow.db'}"]
            argv += ["--artifacts-destination", str(self.home / "mlartifacts")]
            argv += ["--app-name", "basic-auth"]  # nothing without an account
            env = {**self._mlflow_auth(secrets_dir), **MLFLOW_SERVER_ENV}
            services.append(("mlflow", argv, env))
        return services

    def kill(
        self, state: StackState, name: str, sig: int = signal.SIGKILL, tree: bool = False
    ) -> list[int]:
        """Signal one process of the stack (chaos tests), with its descendants when ``tree``
        (a node dying takes its tasks with it); returns the pids signalled."""
        proc = self._proc(state, name)
        pids = _tree(proc.pid) if tree else [proc.pid]
        for pid in pids:
            _signal(pid, sig)
        deadline = time.monotonic() + 10
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.02)
        return pids

    def respawn(self, state: StackState, name: str) -> Proc:
        """Start a stopped process of the stack again with the same command and settings."""
        old = self._proc(state, name)
        if _alive(old.pid):
            raise StackError(f"{name} (pid {old.pid}) is still running")
        new = self._spawn(name, old.argv, old.env)
        state.procs[state.procs.index(old)] = new
        state.save()
        return new

    @staticmethod
    def _proc(state: StackState, name: str) -> Proc:
        for p in state.procs:
            if p.name == name:
                return p
        raise StackError(f"no process named {name} in this stack")

    def _pki(self) -> Path:
        """``<home>/pki``: the stack CA (made once) and a fresh certificate for the services."""
        folder = self.home / "pki"
        ca = Authority.in_folder(folder, f"Flame stack CA ({socket.gethostname()})")
        pair = ca.issue("flame-services", ["127.0.0.1", "localhost", "::1"])
        write_private(folder / "services.key", pair.key_pem)
        (folder / "services.pem").write_bytes(pair.cert_pem)
        return folder

    def _mlflow_auth(self, secrets_dir: Path) -> Env:
        """MLflow's basic-auth app: nobody reads anything by default; the admin (whose password
        only the controller reads) makes an account per job and per user (see
        flame_controller.tracking_accounts)."""
        password = secrets_dir / "mlflow-admin.password"
        if not password.exists():
            _write_private(password, secrets.token_urlsafe(24))
        key = secrets_dir / "mlflow-flask.key"
        if not key.exists():
            _write_private(key, secrets.token_urlsafe(32))
        ini = secrets_dir / "mlflow-auth.ini"
        _write_private(
            ini,
            "[mlflow]\n"
            "default_permission = NO_PERMISSIONS\n"
            f"database_uri = sqlite:///{self.home / 'mlflow-auth.db'}\n"
            "admin_username = flame-admin\n"
            f"admin_password = {password.read_text().strip()}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 300\n",  # a password hash per request costs ~0.2 s
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": key.read_text().strip(),
        }

    def _secrets(self, state: StackState) -> Path:
        """``<home>/secrets`` (0700): the admin's token and the service credential the three
        services share, each a file only this user reads (kept across `up`s)."""
        folder = self.home / "secrets"
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
        _write_private(folder / "admin.token", state.admin_token)
        service = folder / "service.token"
        if not service.exists():
            _write_private(service, secrets.token_urlsafe(32))
        scrape = folder / "metrics.token"
        if not scrape.exists():
            _write_private(scrape, secrets.token_urlsafe(32))
        state.metrics_token_file = str(scrape)
        return folder

    def _identity(self) -> tuple[dict[str, int], str]:
        """Ports and admin token of this home: made on the first `up`, reused by later ones, so
        the store's admin and every enrolled flamelet (which keeps the apiserver URL) stay valid."""
        path = self.home / "identity.json"
        saved = json.loads(path.read_text()) if path.exists() else None
        # Earlier versions could pick one port twice; such a stack never started, so nothing
        # (no flamelet) can depend on its ports: choose new ones.
        if saved is not None and len(set(saved["ports"].values())) == len(saved["ports"]):
            token = str(saved["admin_token"])
            ports = {n: self._port(n) for n in STACK_PORTS}  # adds what an older `up` lacked
            for name, port in ports.items():
                with socket.socket() as sock:
                    # as the servers do: connections of the last run in TIME_WAIT are no conflict
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        sock.bind(("127.0.0.1", port))
                    except OSError as exc:
                        raise StackError(
                            f"port {port} ({name}) of the stack in {self.home} is taken; "
                            "stop what uses it or start with a fresh --home"
                        ) from exc
            return ports, token
        ports = dict(zip(STACK_PORTS, free_ports(len(STACK_PORTS)), strict=True))
        token = str(saved["admin_token"]) if saved else f"flm_user_{secrets.token_urlsafe(32)}"
        _write_private(path, json.dumps({"ports": ports, "admin_token": token}))
        return ports, token

    def _port(self, name: str) -> int:
        """The port ``name`` keeps in this home's identity, chosen (and kept) the first time."""
        path = self.home / "identity.json"
        saved = json.loads(path.read_text())
        ports = {k: int(v) for k, v in saved["ports"].items()}
        if name not in ports:
            taken = set(ports.values())
            ports[name] = next(p for p in free_ports(len(taken) + 1) if p not in taken)
            _write_private(path, json.dumps({**saved, "ports": ports}))
        return ports[name]

    def add_node(self, state: StackState, name: str) -> None:
        """Enrol and start one more flamelet in a running stack (stopped with the stack)."""
        with state.client(timeout=5) as api:
            self._add_node(state, api, name)
        state.save()

    def _add_node(self, state: StackState, api: httpx.Client, name: str) -> None:
        node_home = self.home / "nodes" / name
        flamelet = _script("flamelet")
        if not (node_home / "identity.json").exists():  # not enrolled by an earlier `up`
            _enroll(state, api, name, node_home, flamelet)
        port = self._port(f"flamelet-{name}-metrics")
        env = {
            "FLAME_FLAMELET_METRICS_PORT": str(port),
            "FLAME_FLAMELET_METRICS_HOST": "127.0.0.1",
            "FLAME_FLAMELET_METRICS_TOKEN_FILE": state.metrics_token_file,
        }
        state.procs.append(
            self._spawn(f"flamelet-{name}", [flamelet, "run", "--home", str(node_home)], env)
        )
        state.nodes[name] = str(node_home)
        state.metrics[f"flamelet-{name}"] = f"http://127.0.0.1:{port}/metrics"

    def down(self, state: StackState | None = None, grace: float = 10.0) -> list[str]:
        state = state or StackState.load(self.home)
        if state is None:
            return []
        stopped: list[str] = []
        # Task processes run in their own sessions (they survive agent restarts), so collect
        # every descendant before anything is signalled.
        pids: list[int] = []
        for p in state.procs:
            pids.extend(_tree(p.pid))
        for p in sorted(state.procs, key=lambda p: not p.name.startswith("flamelet")):
            if _alive(p.pid):
                stopped.append(p.name)
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
            _reap(pid)
        (Path(state.home) / "stack.json").unlink(missing_ok=True)
        return stopped


def _enroll(
    state: StackState, api: httpx.Client, name: str, node_home: Path, flamelet: str
) -> None:
    resp = api.post("/v1/nodes", json={"name": name}, timeout=10)
    if resp.status_code not in (200, 201):
        raise StackError(f"cannot create node {name}: {resp.status_code} {resp.text}")
    enrolment = resp.json()["enrolment_token"]
    node_home.mkdir(parents=True, exist_ok=True)
    argv = [flamelet, "login", "--server", state.api_url, "--token-file", "-"]
    if state.ca_file:
        argv += ["--ca-file", state.ca_file]
    login = subprocess.run(  # the token on stdin: argv is visible to every local user
        [*argv, "--home", str(node_home)],
        input=enrolment + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if login.returncode != 0:
        raise StackError(f"flamelet login for {name} failed: {login.stderr or login.stdout}")


def _online(api: httpx.Client) -> int:
    resp = api.get("/v1/nodes", params={"limit": 500})
    resp.raise_for_status()
    return sum(
        1 for n in resp.json()["items"] if n.get("presence") in ("online", "PRESENCE_ONLINE")
    )


def _tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants, children first."""
    try:
        proc = psutil.Process(pid)
        return [c.pid for c in proc.children(recursive=True)] + [pid]
    except psutil.Error:
        return []


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
