"""Where the project's own code runs: never in sandbox's process.

alembic, ``env.py``, revision files, ``seed_command`` and the gate's tests are the project's
code, and a workspace's copy of them is untrusted. sandbox runs them as subprocesses in the
project's environment and reads only their effect:

- :class:`DockerProjectRunner` (``runtime = "docker"``): a throwaway container of the project's
  image (:mod:`sandbox.runtime.images`), as an unprivileged user with every capability dropped,
  with only the tree it works on mounted (main's checkout without its ``.sandbox/`` state:
  secrets and other workspaces stay out of reach). Its network reaches only the target
  database: a fresh *internal* Docker network to which the database's container is attached
  as host ``db``. A ``env.py`` that aims somewhere else fails to connect instead of finding
  another server. A server outside Docker (``local``, ``url``) is reachable only through the
  host's network: a workspace's code is refused there unless ``[migrations] allow_host_network
  = true``; main's own code (baseline builds) runs there with a warning.
- :class:`HostProjectRunner` (``runtime = "none"``): the project's interpreter (``[migrations]
  python``, else a ``.venv`` beside the alembic config or at the root, else ``python3``), as
  you, on the host. This cannot hold the untrusted-workspace rule, and ``doctor`` says so.

Both give the project the same environment: the workspace's values (``SANDBOX_*``,
``DATABASE_URL``, ``PG*``) and ``[workspace.env]``'s mapping of the project's own names.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from .config import Config
from .databases.base import ConnInfo
from .errors import ServiceUnavailable, WorkspaceError
from .runtime.base import LABEL_PROJECT, LABEL_ROLE, LABEL_WORKSPACE, unprivileged_ids
from .runtime.labels import LABEL_OWNER_PID, LABEL_OWNER_START, LABEL_PROJECT_PATH, ROLE_RUN

RUNNER_SCRIPT = Path(__file__).resolve().parent / "migrations" / "runner.py"
RUNNER_IN_CONTAINER = "/opt/sandbox/runner.py"
KILL_GRACE = 5            # seconds between the deadline's SIGTERM and its SIGKILL
TIMED_OUT = (124, 137)    # timeout(1)'s codes: the deadline's SIGTERM worked, or SIGKILL was needed


@dataclass(frozen=True)
class RunResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


class ProjectRunner(Protocol):
    """Runs one command of the project's, in the project's environment."""

    kind: str

    def python(self, tree: Path) -> list[str]:
        """The project's interpreter, as argv."""

    def runner_script(self) -> str:
        """The path of :mod:`sandbox.migrations.runner` as the project's interpreter sees it."""

    def run(self, tree: Path, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
            db: ConnInfo | None, workspace: str | None = None, network: bool = True,
            writable: bool = False, timeout: float = 900) -> RunResult:
        """Run ``argv`` with ``tree`` (a checkout) available, ``cwd`` inside it, and ``db`` the
        one database it can reach (its ``DATABASE_URL``/``PG*``, and ``SANDBOX_DATABASE_URL``).
        ``network=False``: ``db`` only fills the environment and nothing is reachable."""


def project_env(config: Config, base: Mapping[str, str], db: ConnInfo | None, *,
                container: bool) -> dict[str, str]:
    """``base`` plus the database's variables, plus ``[workspace.env]`` expanded over them."""
    env = dict(base)
    if db is not None:
        env.update(db.env(container=container))
    env.update(config.workspace.mapped_env(env))
    if db is not None:
        env["SANDBOX_DATABASE_URL"] = db.url(container=container)
    return env


def _host_python(config: Config, tree: Path, workdir: Path) -> list[str]:
    configured = config.migrations.python
    if configured:
        p = Path(configured)
        if not p.is_absolute() and ("/" in configured or configured.startswith(".")):
            # relative to main's root (the trusted checkout), never to a workspace's files
            p = config.root / configured
            if not (p.is_file() and os.access(p, os.X_OK)):
                raise WorkspaceError(f"sandbox.toml: [migrations] python = {configured!r}: {p} is not an executable "
                                     "file", hint="point it at the project's interpreter (e.g. \".venv/bin/python\")")
            return [str(p)]
        if not shutil.which(configured):
            raise WorkspaceError(f"sandbox.toml: [migrations] python = {configured!r}: not found on PATH",
                                 hint="point it at the project's interpreter")
        return [configured]
    # A .venv is git-ignored: a fresh worktree has none, main's checkout has it (beside the same
    # alembic config, or at the root). Main's is the project's own, trusted interpreter.
    try:
        main_workdir = config.root / Path(workdir).resolve().relative_to(Path(tree).resolve())
    except ValueError:
        main_workdir = config.root
    for candidate in dict.fromkeys((workdir / ".venv" / "bin" / "python", tree / ".venv" / "bin" / "python",
                                    main_workdir / ".venv" / "bin" / "python", config.root / ".venv" / "bin" / "python")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    if shutil.which("python3") is None:
        raise WorkspaceError("no interpreter for the project: no .venv beside the alembic config or at the root "
                             "(in the workspace or in main's checkout), and no python3 on PATH",
                             hint="set [migrations] python in sandbox.toml to the project's interpreter")
    return ["python3"]


class HostProjectRunner:
    """``runtime = "none"``: the project's interpreter, on the host, as the user."""

    kind = "none"

    def __init__(self, config: Config) -> None:
        self.config = config

    def python(self, tree: Path) -> list[str]:
        from .migrations.scan import read_layout
        try:
            layout = read_layout(tree, self.config.migrations.config)
        except Exception:  # noqa: BLE001 - no layout: the root's interpreter
            layout = None
        return _host_python(self.config, tree, layout.workdir if layout else tree)

    def runner_script(self) -> str:
        return str(RUNNER_SCRIPT)

    def run(self, tree: Path, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
            db: ConnInfo | None, workspace: str | None = None, network: bool = True,
            writable: bool = False, timeout: float = 900) -> RunResult:
        full = {k: v for k, v in os.environ.items()
                if k not in ("DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE",
                             "PGOPTIONS", "PGSERVICE", "PGPASSFILE")}
        full.update(project_env(self.config, env, db, container=False))
        full["PYTHONDONTWRITEBYTECODE"] = "1"     # no __pycache__ in a worktree
        try:
            res = subprocess.run(list(argv), cwd=cwd, env=full, capture_output=True, text=True,
                                 errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise WorkspaceError(f"cannot run {argv[0]}: not found",
                                 hint="set [migrations] python in sandbox.toml to the project's interpreter") from exc
        except subprocess.TimeoutExpired as exc:
            raise WorkspaceError(f"{' '.join(argv[:3])} did not finish within {timeout:.0f} s") from exc
        return RunResult(res.returncode, res.stdout, res.stderr)


class DockerProjectRunner:
    """``runtime = "docker"``: a throwaway container of the project's image per command."""

    kind = "docker"

    def __init__(self, config: Config, image: Callable[[], str], *,
                 progress: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._image = image
        self.progress = progress or (lambda msg: None)
        self.warn = warn or (lambda msg: self.progress(f"warning: {msg}"))

    def python(self, tree: Path) -> list[str]:
        return ["python3"]

    def runner_script(self) -> str:
        return RUNNER_IN_CONTAINER

    @property
    def client(self) -> Any:
        from .runtime.docker import shared_client
        return shared_client()

    @contextlib.contextmanager
    def _network(self, db: ConnInfo | None, workspace: str | None) -> Iterator[tuple[dict[str, Any], ConnInfo | None]]:
        """Container network settings that reach only ``db`` (and ``db`` as seen from there)."""
        if db is None:
            yield {"network_mode": "none"}, None
            return
        if db.container is None:
            # A server sandbox does not run in Docker (server = "local" or "url"): the only way
            # to it is the host's network, where the code also reaches every host service (a
            # 127.0.0.1-only listener included). A workspace's code (the gate, migrate up, rebase,
            # sync) may not run there unless the user opted in; main's own (baseline builds,
            # seed_command) is trusted and only warned about.
            if workspace and not self.config.migrations.allow_host_network:
                raise WorkspaceError(
                    f"refusing to run {workspace}'s code on the host's network: the database is not in a "
                    "container, so nothing would keep that code to the target database",
                    hint="use [database] server = \"docker\", or accept the risk with "
                         "[migrations] allow_host_network = true in sandbox.toml")
            self.warn("the database is not in a container, so project code runs on the "
                          "host's network ([database] server = \"docker\" keeps it to the target database)")
            yield {"network_mode": "host"}, replace(db, container_host=None, container_port=None)
            return
        import docker.errors

        from .runtime.errors import translated
        client = self.client
        name = f"sandbox-{self.config.project_id}-run-{secrets.token_hex(4)}"
        labels = {LABEL_PROJECT: self.config.project_id, LABEL_WORKSPACE: workspace or "", LABEL_ROLE: ROLE_RUN}
        with translated(f"creating network {name}"):
            net = client.networks.create(name, driver="bridge", internal=True, labels=labels)
        try:
            with translated(f"attaching the database to {name}"):
                net.connect(db.container, aliases=["db"])
            try:
                yield {"network": name}, replace(db, container_host="db", container_port=5432)
            finally:
                with contextlib.suppress(docker.errors.DockerException):
                    net.disconnect(db.container, force=True)
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                net.remove()

    def _mounts(self, tree: Path, writable: bool) -> list[Any]:
        import docker.types
        tree = tree.resolve()
        mounts = [docker.types.Mount(target=str(tree), source=str(tree), type="bind", read_only=not writable),
                  docker.types.Mount(target=RUNNER_IN_CONTAINER, source=str(RUNNER_SCRIPT), type="bind",
                                     read_only=True)]
        state = tree / ".sandbox"
        if state.exists():
            # main's checkout: its state (secrets, registry, other workspaces) is not the project's
            mounts.append(docker.types.Mount(target=str(state), source=None, type="tmpfs",
                                             tmpfs_size=1024 * 1024))
        return mounts

    def run(self, tree: Path, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
            db: ConnInfo | None, workspace: str | None = None, network: bool = True,
            writable: bool = False, timeout: float = 900) -> RunResult:
        import docker.errors
        import requests.exceptions

        from .runtime.errors import BUILD_HINT, translated
        image = self._image()
        uid, gid = unprivileged_ids()
        ws = self.config.workspace
        # The deadline lives inside the container (timeout(1) under the init process), so it holds
        # even when this process is killed and nobody waits for the container any more.
        deadline = max(1, int(min(timeout, self.config.migrations.run_timeout_seconds)))
        wrapped = ["timeout", "-k", str(KILL_GRACE), str(deadline), *argv]
        with _terminated_as_exit(), self._network(db if network else None, workspace) as (net, seen):
            if not network:
                seen = db
            full = project_env(self.config, env, seen, container=seen is not None and seen.container_host is not None)
            full.update({"HOME": "/tmp", "PYTHONDONTWRITEBYTECODE": "1"})
            labels = run_labels(self.config, workspace)
            container = None
            try:
                with translated(f"running {argv[0]} in {image}"):
                    try:
                        container = self.client.containers.create(
                            image, wrapped, user=f"{uid}:{gid}", working_dir=str(cwd), environment=full,
                            mounts=self._mounts(tree, writable), labels=labels, cap_drop=["ALL"],
                            security_opt=["no-new-privileges"], pids_limit=ws.pids, mem_limit=ws.memory,
                            init=True, **net)
                    except docker.errors.ImageNotFound as exc:
                        raise ServiceUnavailable(f"Docker image {image} is missing", hint=BUILD_HINT) from exc
                with translated(f"running {argv[0]} in {image}"):
                    started = time.monotonic()
                    container.start()
                    try:
                        # the in-container deadline ends it first; this only guards a stuck engine
                        status = container.wait(timeout=deadline + KILL_GRACE + 30)
                    except requests.exceptions.ConnectionError as exc:
                        raise WorkspaceError(f"{' '.join(argv[:3])} did not finish within {deadline} s "
                                             "([migrations] run_timeout)") from exc
                    code = int(status.get("StatusCode", 1))
                    if code in TIMED_OUT and time.monotonic() - started >= deadline:
                        raise WorkspaceError(f"{' '.join(argv[:3])} did not finish within {deadline} s: "
                                             "stopped by the deadline ([migrations] run_timeout)")
                    out = container.logs(stdout=True, stderr=False).decode("utf-8", errors="replace")
                    err = container.logs(stdout=False, stderr=True).decode("utf-8", errors="replace")
            finally:
                if container is not None:
                    with contextlib.suppress(docker.errors.DockerException, requests.exceptions.RequestException):
                        container.remove(force=True)
        return RunResult(code, out, err)


def run_labels(config: Config, workspace: str | None) -> dict[str, str]:
    """Labels of a run container: its project (id and path) and the process that owns it."""
    from .host import process_start
    pid = os.getpid()
    return {LABEL_PROJECT: config.project_id, LABEL_WORKSPACE: workspace or "", LABEL_ROLE: ROLE_RUN,
            LABEL_PROJECT_PATH: str(config.root), LABEL_OWNER_PID: str(pid),
            LABEL_OWNER_START: process_start(pid) or ""}


def run_owner_alive(labels: Mapping[str, str]) -> bool:
    """Whether the process that started a run container still runs (pid reuse does not count).
    A container without owner labels (an older sandbox made it) has no known owner: dead."""
    from .host import process_alive
    try:
        pid = int(labels.get(LABEL_OWNER_PID, ""))
    except ValueError:
        return False
    return process_alive(pid, labels.get(LABEL_OWNER_START) or None)


def run_containers(client: Any, project: str | None = None) -> list[Any]:
    """Every run container on the engine (``project``: only that project's), running or not."""
    labels = [f"{LABEL_ROLE}={ROLE_RUN}"] + ([f"{LABEL_PROJECT}={project}"] if project else [])
    return list(client.containers.list(all=True, ignore_removed=True, filters={"label": labels}))


def remove_run_containers(project: str) -> None:
    """Remove every run container of ``project``, running or not (``deinit``)."""
    import docker.errors

    from .runtime.docker import shared_client
    from .runtime.errors import translated
    with translated("removing the project's run containers"):
        for c in run_containers(shared_client(), project):
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


@contextlib.contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """While a run container lives, SIGTERM unwinds (so ``finally`` removes it) instead of killing
    the process outright. Only in the main thread, and only where nobody handles SIGTERM already."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def make_runner(config: Config, runtime: str, *, progress: Callable[[str], None] | None = None,
                warn: Callable[[str], None] | None = None) -> ProjectRunner:
    """The runner for ``runtime`` (``docker`` or ``none``)."""
    if runtime == "none":
        return HostProjectRunner(config)
    from .runtime.images import ProjectImage
    image = ProjectImage(config, progress=progress)
    return DockerProjectRunner(config, image.tag, progress=progress, warn=warn)
