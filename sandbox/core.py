"""The project and its collaborators: what every command works with.

A :class:`Project` is one main checkout holding ``sandbox.toml``: its config, its registry,
the container runtime, the database strategy, the migration tool, the project runner and the
sink of progress events. Each collaborator is built lazily (or injected: see
:mod:`sandbox.testing`). The helpers here are the ones several commands share: a workspace's
record (after recovery), its lock, its intent, its environment and its container spec.

The commands themselves live in :mod:`sandbox.workspaces` (one module per job) and in the gate
(:mod:`sandbox.migrations`); :class:`sandbox.api.Sandbox` is the facade over all of them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import config as config_mod
from .config import Config
from .databases.base import ConnInfo, Strategy
from .errors import ConfigError, HookFailed, SandboxError, UnknownWorkspace, UsageError
from .git import IsolatedRepos, Unsaved, Worktrees, find_project_root
from .intents import Operation, Recovery, operation
from .migrations.base import MigrationTool
from .names import validate_name
from .registry import Registry, WorkspaceRecord
from .results import Event, EventKind, EventSink
from .runtime.base import Runtime, WorkspaceSpec, unprivileged_ids
from .runtime.labels import LABEL_PROJECT_NAME
from .runtime.none import HostRuntime

Progress = Callable[[str], None]
Recoverer = Callable[["Project", "str | None", bool, bool], list[Recovery]]

# Where the managed block goes when the configured env file is tracked by git (credentials must
# never land in a tracked file).
ENV_FALLBACK = ".env.sandbox"


class Project:
    """A project (one main checkout holding ``sandbox.toml``) and its collaborators."""

    def __init__(self, config: Config, *, runtime: Runtime | None = None, strategy: Strategy | None = None,
                 tool: MigrationTool | None = None, runner: Any = None, progress: Progress | None = None,
                 events: EventSink | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self.root = config.root
        self._sink = events
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(timezone.utc))
        self._legacy = progress
        self._runtime = runtime
        self._strategy = strategy
        self._tool = tool
        self._registry: Registry | None = None
        # Backends are built once, even when up runs threads; one lock each, so the database
        # backend can load in the background while the runtime is in use.
        self._runtime_lock = threading.Lock()
        self._db_lock = threading.Lock()
        self.git = Worktrees(self.root)
        self.repos = IsolatedRepos(self.git)
        self._runner: Any = runner
        self._image: Any = None
        self._recovered: set[str | None] = set()     # what this process has checked for unfinished operations
        self._recoverer: Recoverer | None = None      # set by the facade (sandbox.workspaces.recover)

    @classmethod
    def find_root(cls, project: Path | None) -> Path:
        """The main checkout holding ``project`` (or the current directory)."""
        start = (project or Path.cwd()).resolve()
        if project is not None and not start.is_dir():
            raise UsageError(f"--project {project}: not a directory")
        root = find_project_root(start)
        if root is None:
            raise UsageError(f"{start} is not inside a git checkout")
        return root

    # -- events -----------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)
        elif self._legacy is not None:
            self._legacy(event.text())

    def progress(self, message: str) -> None:
        """A progress line (backends call this with text; it is never parsed)."""
        self.emit(Event(EventKind.PROGRESS, message))

    def note(self, workspace: str | None, message: str) -> None:
        self.emit(Event(EventKind.PROGRESS, message, workspace))

    def warn(self, message: str, workspace: str | None = None) -> None:
        self.emit(Event(EventKind.WARNING, message, workspace))

    # -- collaborators ----------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.config.state_dir)   # verified; not initialised: exit 2
        return self._registry

    @property
    def tool(self) -> MigrationTool:
        if self._tool is None:
            from .migrations.alembic import AlembicTool
            from .migrations.discover import LAYOUT_FILE
            mc = self.config.migrations
            self._tool = AlembicTool(mc.config, runner=self.runner, version_table=mc.version_table,
                                     version_table_schema=mc.version_table_schema,
                                     cache_dir=self.config.state_dir / "cache" / "offline-sql",
                                     app=mc.app, wrap=mc.wrap, layout_file=self.config.state_dir / LAYOUT_FILE,
                                     main_root=self.root)
        return self._tool

    @property
    def runner(self) -> Any:
        """Runs the project's code (alembic, seed_command, the gate's tests) in its environment."""
        if self._runner is None:
            from .project import make_runner
            self._runner = make_runner(self.config, self.config.workspace.runtime, progress=self.progress,
                                       warn=self.warn)
        return self._runner

    def image(self) -> str:
        """The project's image (built from its Dockerfile when it has one)."""
        if self._image is None:
            from .runtime.images import ProjectImage
            self._image = ProjectImage(self.config, progress=self.progress)
        return str(self._image.tag())

    @staticmethod
    def isolated(rec: WorkspaceRecord) -> bool:
        """Whether the workspace's checkout is a repository of its own (Docker workspaces)."""
        return bool(rec.data.get("isolated"))

    def collect(self, rec: WorkspaceRecord) -> None:
        """Bring an isolated workspace's commits into main's repository (before reading its branch)."""
        if self.isolated(rec) and Path(rec.path).exists():
            self.repos.collect(rec.name, Path(rec.path), rec.branch)

    def unsaved(self, rec: WorkspaceRecord) -> list[str]:
        """Why removing the workspace would lose work (empty: nothing). Fails closed."""
        path = Path(rec.path)
        reasons: list[str] = []
        found = self.unsaved_work(rec)
        if found:
            reasons.append(f"{len(found)} uncommitted change(s) in {path} ({', '.join(u.what for u in found[:3])})")
        unmerged = self.git.unmerged(rec.branch)
        if unmerged:
            reasons.append(f"{len(unmerged)} commit(s) on {rec.branch!r} not on main")
        return reasons

    def unsaved_work(self, rec: WorkspaceRecord) -> list[Unsaved]:
        """What the workspace's checkout holds beyond its branch (typed; fails closed)."""
        if self.isolated(rec):
            return self.repos.find_unsaved(rec.name, Path(rec.path), rec.branch, ignore=self.managed_files())
        return self.git.find_unsaved(Path(rec.path), ignore=self.managed_files())

    def managed_files(self) -> tuple[str, ...]:
        """Files sandbox writes into a checkout (never counted as the workspace's work)."""
        return (self.env_file(),)


    def env_file(self) -> str:
        """The file the managed block goes to: ``env_file``, or ``.env.sandbox`` when that is tracked."""
        name = self.config.workspace.env_file
        return ENV_FALLBACK if self.git.tracked(name) else name

    def runtime_for(self, kind: str) -> Runtime:
        injected = self._runtime
        if injected is not None and injected.name == kind:
            return injected                  # given to the constructor (sandbox.testing's fakes)
        if kind == "none":
            return HostRuntime()
        with self._runtime_lock:
            if self._runtime is None or self._runtime.name != kind:
                from .runtime.docker import DockerRuntime
                self._runtime = DockerRuntime(images=(self.config.workspace.image, self.config.database.image),
                                              subnet_pool=self.config.workspace.subnet_pool)
            return self._runtime

    @property
    def db(self) -> Strategy:
        with self._db_lock:
            if self._strategy is None:
                from .databases.factory import make_strategy
                self._strategy = make_strategy(self.config, self.registry, progress=self.progress)
            return self._strategy

    def load_db_quietly(self) -> None:
        """Build the database backend now if it can be (``up`` does it in the background)."""
        with contextlib.suppress(Exception):
            self.db  # noqa: B018

    # -- helpers --------------------------------------------------------------------------------
    def record(self, name: str) -> WorkspaceRecord:
        """The workspace's record, after finishing (or undoing) what an interrupted operation left on it."""
        validate_name(name)
        rec = self.registry.get(name)
        if rec is None:
            raise UnknownWorkspace(name)
        if name not in self._recovered:
            self.recover(name)
            rec = self.registry.get(name)
            if rec is None:
                raise UnknownWorkspace(name)     # an interrupted rm was finished
        return rec

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[WorkspaceRecord]:
        """The workspace's lock, held; its record as it is once the lock is held (a concurrent ``rm``
        may have removed it meanwhile: then :class:`UnknownWorkspace`, and nothing is touched)."""
        with self.registry.lock(f"ws-{name}"):
            rec = self.registry.get(name)
            if rec is None:
                raise UnknownWorkspace(name)
            yield rec

    def operation(self, op: str, workspace: str | None, **data: Any) -> contextlib.AbstractContextManager[Operation]:
        """Record the intent to run ``op`` before acting (see :mod:`sandbox.intents`)."""
        return operation(self.registry, op, workspace, **data)

    def recover(self, name: str | None = None, *, everything: bool = False,
                dry_run: bool = False) -> list[Recovery]:
        """Roll forward or back what interrupted operations left on ``name`` and on the project
        (merge, deinit); ``everything``: on every workspace (gc). Done once per process and name."""
        if self._recoverer is None:
            return []
        return self._recoverer(self, name, everything, dry_run)

    def recover_project(self) -> None:
        """Finish what interrupted project-wide operations (merge, deinit) left, once per process."""
        if None not in self._recovered:
            self.recover(None)

    def mark_recovered(self, name: str | None, *, everything: bool = False) -> None:
        """``name`` (None: the project-wide operations) was checked for unfinished operations."""
        self._recovered.add(name)
        if everything:
            self._recovered.add(None)

    def forget_registry(self) -> None:
        self._registry = None

    def forget_state(self) -> None:
        """The project's state is gone (deinit): the registry and the strategy are made again if needed."""
        self._registry = None
        self._strategy = None

    def built_strategy(self) -> Strategy | None:
        """The database strategy if it was built (or injected), without building it."""
        return self._strategy

    def open_registry(self, *, create: bool = False) -> Registry:
        """Open (``create``: make) the registry in the state folder; the project uses it from now on."""
        self._registry = Registry(self.config.state_dir, create=create)
        return self._registry

    def network(self, rec: WorkspaceRecord) -> str | None:
        """The workspace's Docker network (None: none)."""
        return rec.data.get("network")

    def conninfo(self, name: str) -> ConnInfo:
        rec = self.record(name)
        return self.db.info(name, self.network(rec))

    def _git_identity(self) -> dict[str, str]:
        """Who commits inside a container: the user's git identity (config, else GIT_* variables)."""
        env: dict[str, str] = {}
        for key, value in self.git.identity().items():
            for who in ("AUTHOR", "COMMITTER"):
                env[f"GIT_{who}_{key.upper()}"] = value
        for who in ("AUTHOR", "COMMITTER"):
            for key in ("NAME", "EMAIL"):
                var = f"GIT_{who}_{key}"
                if var not in env and os.environ.get(var):
                    env[var] = os.environ[var]
        return env

    def environment(self, rec: WorkspaceRecord, *, container: bool = False,
                    db: ConnInfo | None = None) -> dict[str, str]:
        env = self.base_env(rec)
        if db is None:
            try:
                db = self.db.info(rec.name, self.network(rec))
            except SandboxError:
                db = None
        if db is not None:
            env.update(db.env(container=container))
            env.update(self.db.test_env(rec.name, db, container=container))
        env.update(self.config.workspace.mapped_env(env))
        return env

    def managed_env(self, rec: WorkspaceRecord, db: ConnInfo | None) -> dict[str, str]:
        """What the managed block of the workspace's env file holds.

        Everything (``DATABASE_URL``, ``PG*``, ``SANDBOX_*`` and the mapped names), except when
        the block goes into the project's own ``.env`` and ``[workspace.env]`` maps the project's
        names: then only those. Settings loaders such as pydantic-settings read that file and
        refuse keys they do not know. The container's environment and ``sandbox env`` always
        carry everything.
        """
        env = self.environment(rec, container=rec.runtime == "docker", db=db)
        mapped = self.config.workspace.env
        if mapped and self.env_file() == self.config.workspace.env_file:
            return {k: env[k] for k in mapped if k in env}
        return env

    def base_env(self, rec: WorkspaceRecord | None = None) -> dict[str, str]:
        """What project code gets besides the database: the workspace's SANDBOX_* values."""
        env = {"SANDBOX_PROJECT": self.config.project_name}
        if rec is not None:
            ports = self.registry.ports(rec.name, "workspace")
            env.update({"SANDBOX_WORKSPACE": rec.name, "SANDBOX_PATH": rec.path, "SANDBOX_BRANCH": rec.branch,
                        "SANDBOX_PORT": str(ports[0]) if ports else "",
                        "SANDBOX_PORTS": f"{ports[0]}-{ports[-1]}" if ports else ""})
        return env

    def spec(self, rec: WorkspaceRecord, db: ConnInfo | None = None) -> WorkspaceSpec:
        ws = self.config.workspace
        env = {**self._git_identity(), **self.environment(rec, container=rec.runtime == "docker", db=db)}
        uid, gid = unprivileged_ids()
        return WorkspaceSpec(
            project=self.config.project_id, name=rec.name, worktree=Path(rec.path),
            git_common_dir=self.git.common_dir, image=self.image() if rec.runtime != "none" else ws.image,
            env=env, ports=self.registry.ports(rec.name, "workspace"), uid=uid, gid=gid,
            memory=ws.memory, cpus=ws.cpus, pids=ws.pids,
            labels={LABEL_PROJECT_NAME: self.config.project_name}, isolated=self.isolated(rec))

    def _log_path(self, name: str, what: str) -> Path:
        d = self.config.state_dir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{name}.{what}.log"

    def run_hooks(self, rec: WorkspaceRecord, commands: Sequence[str], what: str,
                   db: ConnInfo | None = None) -> None:
        if not commands:
            return
        runtime = self.runtime_for(rec.runtime)
        spec = self.spec(rec, db)
        log = self._log_path(rec.name, what)
        # O_NOFOLLOW: a link planted at the log's path is refused, not written through
        with os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600),
                       "a") as fh:
            for command in commands:
                self.progress(f"{rec.name}: {what}: {command}")
                fh.write(f"$ {command}\n")

                def sink(line: str) -> None:
                    fh.write(line + "\n")
                    fh.flush()
                    self.progress(f"{rec.name}| {line}")

                # Hook commands come from the committed config and are meant for a shell,
                # like `npm ci && npm run build`; names never reach it.
                code = runtime.exec(spec, ["sh", "-c", command], output=sink)
                if code != 0:
                    fh.write(f"[exit {code}]\n")
                    raise HookFailed(rec.name, command, code, str(log))

    def check_env_file(self, ref: str | None = None) -> None:
        """``[workspace] env_file`` receives credentials: a file named in sandbox.toml must not be
        one git tracks (in the main checkout, or in ``ref`` that a new branch starts from). The
        default ``.env`` may be tracked (some templates commit it): the block then goes to
        ``.env.sandbox`` instead (:meth:`env_file`)."""
        env_file = self.config.workspace.env_file
        if env_file == config_mod.WorkspaceConfig().env_file:
            return
        for where in (None, ref):
            if self.git.tracked(env_file, where):
                raise ConfigError(f"sandbox.toml: [workspace] env_file {env_file!r} is tracked by git"
                                  + (f" (in {ref})" if where else "") + ": it would receive PGPASSWORD; "
                                  "name a git-ignored or untracked file such as \".env\"",
                                  file="sandbox.toml", key="workspace.env_file")
            if ref is None:
                break

    def behind(self, rec: WorkspaceRecord) -> int:
        """How many of main's commits the workspace's branch lacks (its last known state)."""
        return self.git.behind(rec.branch)

    def main_heads(self) -> list[str]:
        return self.tool.heads(self.root) if self.tool.available(self.root) else []

