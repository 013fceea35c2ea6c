"""``Sandbox``: the one orchestrator. Every CLI command is one call to a method here.

Creating a workspace touches git, Docker, Postgres, storage and the registry. Each
finished step pushes its undo onto an ``ExitStack``; the stack is dropped on
success. The registry records ``creating → ready`` (or ``broken`` with the cause),
so ``gc`` can finish the job after a crash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from . import config as config_mod
from .checks import Check
from .config import Config
from .databases.base import ConnInfo, Strategy
from .envfile import write_block
from .errors import (CheckpointExists, ConfigError, DatabaseError, HookFailed, InvalidLabel, SandboxError,
                     ServiceUnavailable, UnknownWorkspace, UnsafeRemoval, UnsafeToTell, UsageError, WorkspaceError)
from .migrations.base import MigrationTool
from .disk import disk_full_translated
from .intents import Operation, Recovery, operation
from .names import AUTO_PREFIX, validate_label, validate_name
from .registry import Registry, WorkspaceRecord
from .runtime.base import Runtime, WorkspaceSpec, unprivileged_ids
from .runtime.none import HostRuntime
from .worktrees import IsolatedRepos, Worktrees, find_project_root

Progress = Callable[[str], None]
AUTO_CHECKPOINTS = 3       # automatic checkpoints kept per workspace (db reset and db restore make them)

# Where the managed block goes when the configured env file is tracked by git (credentials must
# never land in a tracked file).
ENV_FALLBACK = ".env.sandbox"


@dataclass
class UpResult:
    name: str
    ok: bool
    state: str
    created: bool = False
    error: str | None = None
    exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GcAction:
    kind: str
    id: str
    workspace: str | None
    action: str            # "remove", "mark-broken", "release", "kept"
    detail: str = ""
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _after(job: Future[Any], then: Callable[[], Any]) -> None:
    """Wait for ``job`` (whatever its outcome), then call ``then``: undo never races the work."""
    futures_wait([job])
    then()


def _results(jobs: Sequence[Future[Any]]) -> list[Any]:
    """Every job's result once all have finished; the first failure (in order) is raised."""
    futures_wait(jobs)
    for job in jobs:
        exc = job.exception()
        if exc is not None:
            raise exc
    return [job.result() for job in jobs]


class Sandbox:
    """A project (one main checkout holding ``sandbox.toml``) and its workspaces."""

    def __init__(self, config: Config, *, runtime: Runtime | None = None, strategy: Strategy | None = None,
                 tool: MigrationTool | None = None, progress: Progress | None = None) -> None:
        self.config = config
        self.root = config.root
        self.progress: Progress = progress or (lambda msg: None)
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
        self._runner: Any = None
        self._image: Any = None
        self._recovered: set[str | None] = set()     # what this process has checked for unfinished operations

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def open(cls, project: Path | None = None, *, progress: Progress | None = None,
             **kwargs: Any) -> "Sandbox":
        """Find the project from ``project`` or the current directory and load its config."""
        start = (project or Path.cwd()).resolve()
        if project is not None and not start.is_dir():
            raise UsageError(f"--project {project}: not a directory")
        root = find_project_root(start)
        if root is None:
            raise UsageError(f"{start} is not inside a git checkout")
        return cls(config_mod.load(root), progress=progress, **kwargs)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.config.state_dir)   # verified; not initialised: exit 2
        return self._registry

    @property
    def tool(self) -> MigrationTool:
        if self._tool is None:
            from .migrations.alembic import AlembicTool
            mc = self.config.migrations
            from .migrations.discover import LAYOUT_FILE
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
            self._runner = make_runner(self.config, self.config.workspace.runtime, progress=self.progress)
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
        if self.isolated(rec):
            found = self.repos.unsaved(rec.name, path, rec.branch, ignore=self._managed_files())
        else:
            found = self.git.dirty(path, ignore=self._managed_files())
        if found:
            reasons.append(f"{len(found)} uncommitted change(s) in {path} ({', '.join(found[:3])})")
        unmerged = self.git.unmerged(rec.branch)
        if unmerged:
            reasons.append(f"{len(unmerged)} commit(s) on {rec.branch!r} not on main")
        return reasons

    def _managed_files(self) -> tuple[str, ...]:
        return (self.env_file(),)

    def env_file(self) -> str:
        """The file the managed block goes to: ``env_file``, or ``.env.sandbox`` when that is tracked."""
        name = self.config.workspace.env_file
        return ENV_FALLBACK if self.git.tracked(name) else name

    def runtime_for(self, kind: str) -> Runtime:
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

    def _load_db(self) -> None:
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
        from .intents import recover
        if not dry_run:
            self._recovered.add(name)
            if everything:
                self._recovered.add(None)
        results = recover(self, workspace=name, everything=everything, dry_run=dry_run)
        if any(r.intent.op == "deinit" and r.done for r in results) and not everything:
            self._registry = None
            raise UsageError("an interrupted `sandbox deinit` was finished: the project is no longer initialised",
                             hint="run `sandbox init`")
        return results

    def _network(self, rec: WorkspaceRecord) -> str | None:
        return rec.data.get("network")

    def conninfo(self, name: str) -> ConnInfo:
        rec = self.record(name)
        return self.db.info(name, self._network(rec))

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
                db = self.db.info(rec.name, self._network(rec))
            except SandboxError:
                db = None
        if db is not None:
            env.update(db.env(container=container))
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

    def recopy(self, rec: WorkspaceRecord) -> list[str]:
        """``[workspace] copy`` again (``sync``, ``rebase``): git-ignored files the install generated
        in main's checkout since the workspace was made. A file the workspace has is kept."""
        owner = unprivileged_ids() if rec.runtime == "docker" else None
        return self.git.copy_ignored(Path(rec.path), self.config.workspace.copy, owner=owner,
                                     warn=lambda msg: self.progress(f"{rec.name}: {msg}"))

    def spec(self, rec: WorkspaceRecord, db: ConnInfo | None = None) -> WorkspaceSpec:
        ws = self.config.workspace
        env = {**self._git_identity(), **self.environment(rec, container=rec.runtime == "docker", db=db)}
        uid, gid = unprivileged_ids()
        return WorkspaceSpec(
            project=self.config.project_id, name=rec.name, worktree=Path(rec.path),
            git_common_dir=self.git.common_dir, image=self.image() if rec.runtime != "none" else ws.image,
            env=env, ports=self.registry.ports(rec.name, "workspace"), uid=uid, gid=gid,
            memory=ws.memory, cpus=ws.cpus, pids=ws.pids,
            labels={"dev.sandbox.project-name": self.config.project_name}, isolated=self.isolated(rec))

    def _log_path(self, name: str, what: str) -> Path:
        d = self.config.state_dir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{name}.{what}.log"

    def _run_hooks(self, rec: WorkspaceRecord, commands: Sequence[str], what: str,
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

    # -- init ---------------------------------------------------------------------------------
    def init(self, *, strategy: str | None = None, runtime: str | None = None,
             migrations: str | None = None) -> dict[str, Any]:
        """Write sandbox.toml if absent, create .sandbox/ and build the baseline."""
        cfg_path = self.root / config_mod.CONFIG_FILE
        wrote = False
        if not self.git.has_commits():
            raise UsageError("the repository has no commits yet: commit something first")
        if not cfg_path.exists():
            from .migrations.discover import find_configs
            mig = migrations or next(iter(find_configs(self.root)), "alembic.ini")
            seed = '"db/seed.sql"'
            text = config_mod.DEFAULT_TOML.format(runtime=runtime or "docker", strategy=strategy or "auto",
                                                  migrations=mig, seed=seed)
            # validate what we are about to write before writing anything
            import tomllib
            config_mod.parse(self.root, tomllib.loads(text))
            cfg_path.write_text(text)
            wrote = True
            self.config = config_mod.load(self.root)
        elif strategy or runtime or migrations:
            self.progress("sandbox.toml exists: using it as it is (flags ignored)")
        self.check_env_file()
        self.config.state_dir.mkdir(exist_ok=True)
        self.git.ensure_excluded("/.sandbox/")
        env_file = self.env_file()
        if env_file != self.config.workspace.env_file:
            self.progress(f"{self.config.workspace.env_file} is tracked by git: the workspace's credentials go to "
                          f"{env_file} instead (untracked, excluded)")
        if not self.git.ignored(env_file):
            # the managed block holds credentials: never let git pick it up
            self.git.ensure_excluded(env_file)
        self._registry = Registry(self.config.state_dir, create=True)
        self.registry.set_meta("project_id", self.config.project_id)
        if self.config.workspace.runtime == "docker":
            from .runtime.images import precedence
            self.progress(precedence(self.config))
        from .migrations.discover import discover
        found = discover(self.tool, self.root, env=self.base_env())
        if found is None:
            self.progress(f"no {self.config.migrations.config} and no other alembic config: no migrations to gate")
        self.build_baseline()
        return {"config": str(cfg_path), "wrote_config": wrote, "strategy": self.db.name,
                "state_dir": str(self.config.state_dir), "env_file": env_file,
                "baseline_head": self.registry.get_meta("baseline_head"),
                "baseline_verified": self.registry.get_meta("baseline_verified") == "1",
                "migrations": found.to_json() if found else None}

    # -- baseline ------------------------------------------------------------------------------
    def _populate(self, tree: Path) -> Callable[[ConnInfo], None]:
        def populate(conn: ConnInfo) -> None:
            if self.tool.available(tree):
                self.progress("baseline: running migrations to head (in the project's environment)")
                self.tool.upgrade(tree, conn, "heads", env=self.base_env(), what="the baseline database")
            self._run_seeds(tree, conn)
        return populate

    def _run_seeds(self, tree: Path, conn: ConnInfo) -> None:
        import psycopg
        dbc = self.config.database
        for seed in dbc.seed:
            path = tree / seed
            if not path.exists():
                if dbc.seed == config_mod.DatabaseConfig().seed:
                    continue  # the default seed file is optional
                raise ConfigError(f"sandbox.toml: [database] seed: {seed} does not exist", key="database.seed")
            self.progress(f"baseline: seeding {seed}")
            try:
                with psycopg.connect(**conn.kwargs(), autocommit=True, connect_timeout=10) as c:
                    c.execute(path.read_text())  # type: ignore[arg-type] # trusted project file
            except psycopg.Error as exc:
                raise DatabaseError(f"seed {seed} failed: {exc.diag.message_primary or exc}") from exc
        if dbc.seed_command:
            self.progress(f"baseline: seed command {' '.join(dbc.seed_command)}")
            res = self.runner.run(tree, list(dbc.seed_command), cwd=tree, env=self.base_env(), db=conn)
            if res.code != 0:
                from .migrations.alembic import scrub_secrets
                raise DatabaseError(f"seed command exited {res.code}: "
                                    f"{scrub_secrets(res.output[-500:], conn.url())}")

    def main_heads(self) -> list[str]:
        return self.tool.heads(self.root) if self.tool.available(self.root) else []

    def build_baseline(self) -> None:
        with self.registry.lock("baseline"):
            self.progress("building the baseline database")
            self.registry.set_meta("baseline_verified", "0")
            self.db.build_baseline(self._populate(self.root))
            heads = self.main_heads()
            self.registry.set_meta("baseline_head", heads[0] if heads else "")
            self.registry.set_meta("baseline_verified", "1")
            self.registry.set_meta("baseline_commit", self.git.rev("HEAD"))

    def db_baseline(self, *, refresh: bool = False, import_file: Path | None = None) -> dict[str, Any]:
        """Rebuild the baseline from main, or load a dump into it."""
        if import_file is not None:
            if not import_file.is_file():
                raise UsageError(f"--import {import_file}: no such file")
            with self.registry.lock("baseline"):
                self.progress(f"importing {import_file} as the baseline")
                self.db.import_baseline(import_file.resolve())
                self.registry.set_meta("baseline_head", "")
                self.registry.set_meta("baseline_source", str(import_file.resolve()))
        elif refresh or not self.db.has_baseline():
            self.build_baseline()
        return {"strategy": self.db.name, "baseline_head": self.registry.get_meta("baseline_head") or None,
                "baseline_commit": self.registry.get_meta("baseline_commit")}

    # -- up -----------------------------------------------------------------------------------
    def up(self, names: Sequence[str], *, from_ref: str | None = None,
           container: bool = True) -> list[UpResult]:
        """Create workspaces (or start them again); several are created concurrently."""
        for n in names:
            validate_name(n)
        if len(set(names)) != len(names):
            raise UsageError("a workspace name is given twice")
        main = self.git.main_branch()
        if main in names:
            raise UsageError(f"{main!r} is the main checkout's branch; pick another workspace name")
        if from_ref is not None:
            self._collect_source(from_ref)
            start = self.git.rev(from_ref)
            for n in names:   # --from makes a branch; it never silently means an existing one
                if self.git.branch_exists(n) and self.git.rev(f"refs/heads/{n}") != start:
                    raise UsageError(f"branch {n!r} already exists at another commit than {from_ref!r}: "
                                     f"--from only makes new branches (drop --from to use {n!r}, or pick "
                                     "another name)")
        self.check_env_file(from_ref)
        self.registry  # noqa: B018 - fails early when not initialised
        for n in names:                      # what interrupted operations left (a merge's baseline too)
            if self.registry.get(n) is not None:
                self.record(n)
        if None not in self._recovered:
            self.recover(None)
        self._warn_stale_baseline()
        runtime = self.config.workspace.runtime if container else "none"
        if runtime != "none":
            self.runtime_for(runtime)   # the Docker SDK first: the network is the first thing made
        # The database backend (psycopg, the strategy) loads while git and Docker make the worktree
        # and the network; whoever needs it first waits for it (a failure is raised to them).
        threading.Thread(target=self._load_db, name="sandbox-load-db", daemon=True).start()
        if len(names) == 1:
            return [self._up_safe(names[0], from_ref, runtime)]
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            return list(pool.map(lambda n: self._up_safe(n, from_ref, runtime), names))

    def _collect_source(self, ref: str) -> None:
        """``--from`` a workspace's branch means its latest commit: collect that workspace first
        (its branch in main is only as new as the last collect). A workspace that cannot be read
        safely is refused rather than silently used at an older commit."""
        import re
        branch = re.split(r"[~^@:]", ref.removeprefix("refs/heads/").removeprefix("heads/"), maxsplit=1)[0]
        try:
            recs = self.registry.all()
        except SandboxError:
            return                       # not initialised: `up` says so next
        for rec in recs:
            if rec.branch == branch and self.isolated(rec):
                try:
                    self.collect(rec)
                except SandboxError as exc:
                    raise WorkspaceError(f"--from {ref}: cannot read workspace {rec.name!r}'s latest commits: "
                                         f"{exc.message}") from exc

    def _up_safe(self, name: str, from_ref: str | None, runtime: str) -> UpResult:
        try:
            return self._up_one(name, from_ref, runtime)
        except SandboxError as exc:
            rec = self.registry.get(name)
            return UpResult(name, False, rec.state if rec else "absent", error=str(exc), exit_code=exc.exit_code)

    def _up_one(self, name: str, from_ref: str | None, runtime_kind: str) -> UpResult:
        with self.registry.lock(f"ws-{name}"):
            rec = self.registry.get(name)
            with self.operation("up", name, existed=rec is not None) as op:
                if rec is not None and rec.state in ("ready", "stopped"):
                    self.progress(f"{name}: starting")
                    self._start(rec)
                    op.step("started", dirty=False)
                    return UpResult(name, True, "ready")
                if rec is None:
                    path = self.config.worktrees_dir / name
                    rec = WorkspaceRecord(name=name, branch=name, path=str(path), state="creating",
                                          runtime=runtime_kind, base_ref=from_ref, pid=os.getpid())
                    if not self.registry.insert(rec):
                        raise WorkspaceError(f"workspace {name!r} appeared concurrently; retry")
                else:
                    self.registry.set_state(name, "creating", rec.cause)
                op.step("registered")
                try:
                    self._create(rec, from_ref, op)
                except BaseException as exc:  # a failed hook keeps everything; other failures were undone
                    self.registry.set_state(name, "broken", str(exc) or type(exc).__name__)
                    op.done()
                    raise
                self.registry.set_state(name, "ready")
                op.step("ready")
                return UpResult(name, True, "ready", created=True)

    def _create(self, rec: WorkspaceRecord, from_ref: str | None, op: Operation) -> None:
        """Worktree, ports, network, database and container; on failure nothing of it stays.

        Independent steps overlap: the network is created while git makes the worktree, and
        the database is cloned and started while the container starts (it is created with the
        database's :meth:`~Strategy.planned` connection info).
        """
        name, path = rec.name, Path(rec.path)
        runtime = self.runtime_for(rec.runtime)
        project = self.config.project_id
        with contextlib.ExitStack() as undo, ThreadPoolExecutor(max_workers=2) as pool:
            self.progress(f"{name}: worktree {path}")
            net_job = pool.submit(runtime.ensure_network, project, name)
            undo.callback(_after, net_job, lambda: runtime.remove(project, name))
            isolated = rec.runtime == "docker"
            owner = unprivileged_ids() if isolated else None
            existed = self.git.branch_exists(rec.branch)
            if isolated:
                # Docker workspaces are untrusted: a repository of their own (see worktrees.py)
                if not rec.data.get("isolated"):
                    self.registry.update(name, data={**rec.data, "isolated": True})
                    rec = self.registry.get(name) or rec
                had_worktree = (path / ".git").is_dir()
                created_branch = self.repos.add(path, rec.branch, from_ref or rec.base_ref,
                                                exclude=("/" + self.env_file(),), owner=owner)
            else:
                had_worktree = path.resolve() in self.git.registered()
                created_branch = self.git.add(path, rec.branch, from_ref or rec.base_ref)
            if created_branch:
                self.registry.update(name, branch_created=True)
                undo.callback(self.git.delete_branch, rec.branch)
            if not had_worktree:
                undo.callback(self.repos.remove, name, path) if isolated else undo.callback(self.git.remove, path)
                # made and handed to the container's user by descriptor: nothing the branch
                # committed there (a link to a host path) is followed
                self.git.copy_ignored(path, self.config.workspace.copy, owner=owner,
                                      warn=lambda msg: self.progress(f"{name}: {msg}"))
            op.step("worktree")
            if existed:
                self._warn_behind(rec)
            had_ports = bool(self.registry.ports(name, "workspace"))
            self.registry.allocate(name, "workspace", self.config.workspace.ports,
                                   base=self.config.workspace.port_base)
            if not had_ports:
                undo.callback(self.registry.release, name, "workspace")
            network = net_job.result()
            self.registry.update(name, data={**rec.data, "network": network})
            rec = self.registry.get(name) or rec

            self.progress(f"{name}: database ({self.db.name})")
            had_db = self.db.exists(name)
            if not had_db:
                undo.callback(self.db.drop, name)
            planned = self.db.planned(name, network)
            jobs: list[Future[Any]] = [pool.submit(self.db.create, name, network)]
            if rec.runtime != "none":
                if planned.container_host is None:
                    self.progress(f"{name}: warning: no address of the database is known inside the container "
                                  "(a local server listens on the host's 127.0.0.1 only); "
                                  "[database] server = \"docker\" gives one")
                self.progress(f"{name}: container")
                jobs.append(pool.submit(runtime.up, self.spec(rec, planned)))
            db = _results(jobs)[0]
            self.registry.update(name, strategy=self.db.name)
            if db.env(container=True) != planned.env(container=True):
                raise DatabaseError(f"{name}: the database of strategy {self.db.name} was made with other "
                                    "connection details than it announced (a bug in sandbox: please report it)")
            write_block(path / self.env_file(), self.managed_env(rec, db), owner=owner, root=path)
            undo.pop_all()
        op.step("database")
        self._run_hooks(rec, self.config.workspace.setup, "setup", db)
        op.step("setup")

    def advance(self, rec: WorkspaceRecord, commit: str) -> None:
        """Fast-forward the workspace's checkout to ``commit`` (made for it in main's repository):
        inside its container for a Docker workspace, so no git runs in its repository on the host."""
        if self.isolated(rec):
            runtime = self.runtime_for(rec.runtime)
            if runtime.status(self.config.project_id, rec.name) != "running":
                raise WorkspaceError(f"workspace {rec.name!r} is not running", hint=f"run `sandbox up {rec.name}` first")
            lines: list[str] = []
            # On the workspace's branch: fast-forward the checkout. Elsewhere (the agent checked
            # out another branch): move only the branch, leaving the agent's checkout alone.
            script = ('if [ "$(git symbolic-ref -q --short HEAD)" = "$1" ]; then exec git merge --ff-only -q "$2"; '
                      'else exec git update-ref "refs/heads/$1" "$2"; fi')
            code = runtime.exec(self.spec(rec), ["sh", "-c", script, "sh", rec.branch, commit],
                                output=lines.append)
            if code != 0:
                raise WorkspaceError(f"could not bring workspace {rec.name!r} to {commit[:12]}: "
                                     + (" | ".join(lines[-3:]) or f"git exited {code}"))
            self.collect(rec)
        else:
            res = subprocess.run(["git", "-C", rec.path, "merge", "--ff-only", "-q", commit], capture_output=True,
                                 text=True, env={**os.environ, "LC_ALL": "C"})
            if res.returncode != 0:
                raise WorkspaceError(f"could not bring workspace {rec.name!r} to {commit[:12]}: "
                                     f"{(res.stderr or res.stdout).strip()}")

    def behind(self, rec: WorkspaceRecord) -> int:
        """How many of main's commits the workspace's branch lacks (its last known state)."""
        return self.git.behind(rec.branch)

    def _warn_stale_baseline(self) -> None:
        """New workspaces start from the baseline: say so when it is not at main's head."""
        from .health import baseline_state
        try:
            problem = baseline_state(self).problem()
        except SandboxError:
            return
        if problem:
            self.progress(f"warning: {problem}")

    def _warn_behind(self, rec: WorkspaceRecord) -> None:
        n = self.behind(rec)
        if n:
            self.progress(f"{rec.name}: warning: branch {rec.branch!r} exists and lacks {n} of main's commits; "
                          f"`sandbox sync {rec.name}` brings them in")

    def _start(self, rec: WorkspaceRecord) -> None:
        """Start a stopped workspace: its database and its container at the same time."""
        network = self._network(rec)
        runtime = self.runtime_for(rec.runtime)
        if network:
            network = runtime.ensure_network(self.config.project_id, rec.name)
        with ThreadPoolExecutor(max_workers=2) as pool:
            jobs: list[Future[Any]] = [pool.submit(self.db.start, rec.name, network)]
            if rec.runtime != "none":
                known = self.db.planned(rec.name, network) if self.db.exists(rec.name) else None
                jobs.append(pool.submit(runtime.up, self.spec(rec, known)))
            _results(jobs)
        self.registry.set_state(rec.name, "ready")

    # -- inspection ------------------------------------------------------------------------------
    def ls(self) -> list[dict[str, Any]]:
        """Every workspace and its state (JSON shape of the contract; no secrets).

        ``state`` is the registry's, except that a ``ready`` workspace whose database does not
        answer, whose container is not running, or that an interrupted operation left behind is
        reported ``broken`` (``health`` says why; ``registry_state`` keeps the row's own).
        """
        from .health import baseline_state, check_all
        from .migrations.coordinator import Coordinator
        coord = Coordinator(self)
        out = []
        if None not in self._recovered:
            self.recover(None)            # a killed merge's baseline, a killed deinit (workspaces: only reported)
        recs = self.registry.all()
        statuses: list[str] = []
        for rec in recs:
            try:
                statuses.append(self.runtime_for(rec.runtime).status(self.config.project_id, rec.name)
                                if rec.runtime != "none" else "none")
            except ServiceUnavailable:
                statuses.append("unknown")
        healths = check_all(self, list(zip(recs, statuses)))
        baseline = baseline_state(self)
        for rec, status, health in zip(recs, statuses, healths):
            git_error, unsafe = None, None
            try:
                self.collect(rec)        # commits made inside are on its branch before it is read
            except UnsafeToTell as exc:  # a hostile or unreadable repository: reported, never followed
                git_error = unsafe = exc.message
            except SandboxError as exc:
                git_error = str(exc)
            url = None
            if rec.strategy:
                try:
                    url = self.db.info(rec.name, self._network(rec)).url(secret=False)
                except SandboxError:
                    url = None
            ports = self.registry.ports(rec.name, "workspace")
            state, cause = rec.state, rec.cause
            if not health.ok and state in ("ready", "stopped"):
                state, cause = "broken", "; ".join(health.problems)
            if unsafe:
                state, cause = "broken", f"unsafe: {unsafe}" + (f"; {cause}" if cause else "")
            out.append({"name": rec.name, "branch": rec.branch, "path": rec.path, "state": state,
                        "cause": cause, "registry_state": rec.state, "runtime": rec.runtime,
                        "ports": [ports[0], ports[-1]] if ports else None,
                        "container": {"status": status},
                        "database": {"strategy": rec.strategy, "url": url, "answers": health.database_answers,
                                     **({"error": health.database_error} if health.database_error else {})},
                        "health": {**health.to_json(), "baseline": baseline.to_json(),
                                   **({"baseline_problem": baseline.problem()} if baseline.problem() else {})},
                        "migrations": coord.workspace_summary(rec),
                        "git": {"behind_main": self.behind(rec), **({"error": git_error} if git_error else {}),
                                **({"unsafe": True} if unsafe else {})}})
        return out

    def env(self, name: str) -> dict[str, str]:
        """The workspace's environment as seen from the host."""
        return self.environment(self.record(name), container=False)

    def exec(self, name: str, argv: Sequence[str], *, interactive: bool = False) -> int:
        """Run argv in the workspace and return its exit code."""
        if not argv:
            raise UsageError("no command given: sandbox exec NAME -- CMD...")
        rec = self.record(name)
        if rec.state == "creating":
            raise WorkspaceError(f"workspace {name!r} is still being created")
        runtime = self.runtime_for(rec.runtime)
        if rec.runtime != "none" and runtime.status(self.config.project_id, name) != "running":
            raise WorkspaceError(f"workspace {name!r} is not running: run `sandbox up {name}`")
        spec = self.spec(rec)
        if rec.strategy and "DATABASE_URL" not in spec.env:
            # never run the command without its database: say why instead (removed meanwhile, lost secret)
            if self.registry.get(name) is None:
                raise UnknownWorkspace(name)
            self.db.info(name, self._network(rec))
        return runtime.exec(spec, argv, env=spec.env, interactive=interactive)

    def shell(self, name: str) -> int:
        return self.exec(name, ["bash", "-l"] if self.record(name).runtime != "none"
                         else [os.environ.get("SHELL", "/bin/bash")], interactive=True)

    # -- stop / rm --------------------------------------------------------------------------------
    def stop(self, name: str) -> None:
        """Stop the containers; keep everything."""
        self.record(name)
        with self.locked(name) as rec:
            if rec.runtime != "none":
                self.runtime_for(rec.runtime).stop(self.config.project_id, name)
            if rec.strategy:
                self.db.stop(name)
            if rec.state == "ready":
                self.registry.set_state(name, "stopped")

    def rm(self, name: str, *, force: bool = False, delete_branch: bool = False) -> dict[str, Any]:
        """Remove the container, database and worktree (refuses to lose work unless force)."""
        self.record(name)
        with self.locked(name) as rec, \
                self.operation("rm", name, force=force, delete_branch=delete_branch) as op:
            path = Path(rec.path)
            if not force:
                reasons = self.unsaved(rec)
                if reasons:
                    raise UnsafeRemoval(name, reasons)
            else:
                with contextlib.suppress(SandboxError):
                    self.collect(rec)      # its commits reach main's branch even when forced
            hook_error = None
            if self.config.workspace.teardown and rec.state in ("ready", "stopped", "broken") and path.exists():
                try:
                    if rec.state == "stopped":
                        self._start(rec)
                    self._run_hooks(rec, self.config.workspace.teardown, "teardown")
                except SandboxError as exc:
                    if not force:
                        raise WorkspaceError(f"teardown failed, nothing removed: {exc}",
                                             hint="fix it, or pass --force to remove anyway") from exc
                    hook_error = str(exc)
                    self.progress(f"{name}: teardown failed, continuing (--force): {exc}")
            op.step("teardown", dirty=False)
            self.registry.set_state(name, "removing")
            op.step("removing")
            self.remove_parts(rec, delete_branch=delete_branch, force=True, op=op)
        return {"name": name, "removed": True, "branch_deleted": delete_branch, "teardown_error": hook_error}

    def remove_parts(self, rec: WorkspaceRecord, *, delete_branch: bool = False, force: bool = False,
                     op: Operation | None = None) -> None:
        """Container, database, worktree, then the record (``rm`` after its checks; recovery of a killed ``rm``).

        Each part tolerates being gone already. ``delete_branch`` deletes an unmerged branch only with ``force``.
        """
        def step(name: str) -> None:
            if op is not None:
                op.step(name)

        name, path = rec.name, Path(rec.path)
        if rec.runtime != "none":
            try:
                self.runtime_for(rec.runtime).remove(self.config.project_id, name)
            except ServiceUnavailable:
                if op is not None:
                    raise
                self.progress(f"{name}: the container runtime is unavailable; `sandbox gc` removes the container later")
        step("container")
        self.db.drop(name)
        step("database")
        if self.isolated(rec):
            self.repos.remove(name, path)
        else:
            self.git.remove(path)
        step("worktree")
        if delete_branch and (force or not self.git.unmerged(rec.branch)):
            self.git.delete_branch(rec.branch)
        self.registry.delete(name)
        step("deleted")

    # -- database commands -------------------------------------------------------------------------
    def db_url(self, name: str) -> str:
        return self.conninfo(name).url()

    def db_reset(self, name: str) -> str:
        """The database becomes a fresh clone of the baseline; the state it replaces is kept
        as an automatic checkpoint (``auto-…``, the last :data:`AUTO_CHECKPOINTS` are kept)."""
        self.record(name)
        with self.locked(name) as rec, disk_full_translated(f"resetting the database of {name!r}"), \
                self.operation("db-reset", name) as op:
            kept = self._keep_current(name)
            op.step("checkpointed", checkpoint=kept)
            self.progress(f"{name}: resetting the database to the baseline")
            info = self.db.reset(name, self._network(rec))
            op.step("reset")
            self.prune_auto(name)
        return info.url()

    def db_checkpoint(self, name: str, label: str, *, force: bool = False) -> dict[str, Any]:
        """Save the database as checkpoint ``label``; an existing label is replaced only with ``force``."""
        validate_label(label)
        if label.startswith(AUTO_PREFIX):
            raise InvalidLabel(label, f"labels starting with {AUTO_PREFIX!r} belong to the automatic "
                                      "checkpoints of reset and restore")
        self.record(name)
        with self.locked(name), disk_full_translated(f"checkpoint {label!r} of {name!r}"), \
                self.operation("db-checkpoint", name, label=label) as op:
            if not force and label in {c.label for c in self.db.checkpoints(name)}:
                raise CheckpointExists(name, label)
            cp = self.db.checkpoint(name, label)
            op.step("taken")
        return dataclasses.asdict(cp)

    def db_restore(self, name: str, label: str) -> None:
        """The database becomes checkpoint ``label``; the state it replaces is kept as ``auto-…``."""
        validate_label(label)
        self.record(name)
        with self.locked(name) as rec, disk_full_translated(f"restoring {name!r} to {label!r}"), \
                self.operation("db-restore", name, label=label) as op:
            if label not in [c.label for c in self.db.checkpoints(name)]:
                raise UsageError(f"workspace {name!r} has no checkpoint {label!r}",
                                 hint=f"see `sandbox db checkpoints {name}`")
            kept = self._keep_current(name)
            op.step("checkpointed", checkpoint=kept)
            self.db.restore(name, label, self._network(rec))
            op.step("restored")
            self.prune_auto(name)

    def db_drop_checkpoint(self, name: str, label: str) -> None:
        """Delete checkpoint ``label`` and give its space back."""
        validate_label(label)
        self.record(name)
        with self.locked(name), disk_full_translated(f"dropping checkpoint {label!r} of {name!r}"):
            self.db.drop_checkpoint(name, label)

    def db_checkpoints(self, name: str) -> list[dict[str, Any]]:
        self.record(name)
        return [{**dataclasses.asdict(c), "auto": c.label.startswith(AUTO_PREFIX)}
                for c in self.db.checkpoints(name)]

    def _keep_current(self, name: str) -> str | None:
        """Checkpoint the current database as ``auto-<UTC time>`` before it is replaced."""
        if not self.db.exists(name):
            return None
        taken = {c.label for c in self.db.checkpoints(name)}
        stamp = datetime.now(timezone.utc)
        label = f"{AUTO_PREFIX}{stamp:%Y%m%d-%H%M%S}-{stamp.microsecond // 1000:03d}"
        n = 1
        while label in taken:
            n += 1
            label = f"{AUTO_PREFIX}{stamp:%Y%m%d-%H%M%S}-{stamp.microsecond // 1000:03d}-{n}"
        self.progress(f"{name}: keeping the current database as checkpoint {label}")
        self.db.checkpoint(name, label)
        return label

    def prune_auto(self, name: str) -> None:
        """Keep the newest :data:`AUTO_CHECKPOINTS` automatic checkpoints."""
        autos = sorted((c for c in self.db.checkpoints(name) if c.label.startswith(AUTO_PREFIX)),
                       key=lambda c: (c.created_at, c.label))
        for old in autos[:-AUTO_CHECKPOINTS]:
            self.progress(f"{name}: dropping the oldest automatic checkpoint {old.label}")
            self.db.drop_checkpoint(name, old.label)

    def db_psql(self, name: str) -> int:
        """Run psql against the workspace's database (the host's psql, else the workspace's); its exit code."""
        info = self.conninfo(name)
        if shutil.which("psql"):
            return subprocess.call(["psql"], env={**os.environ, **info.env()})
        return self.exec(name, ["psql"], interactive=True)

    # -- migrations -----------------------------------------------------------------------------------
    def coordinator(self) -> Any:
        from .migrations.coordinator import Coordinator
        return Coordinator(self)

    def migrate_status(self) -> dict[str, Any]:
        self.registry  # noqa: B018 - a damaged registry is an error here too, migrations or not
        if None not in self._recovered:
            self.recover(None)
        return self.coordinator().status()

    def migrate_check(self, name: str) -> Any:
        try:
            return self.coordinator().check(name)
        except SandboxError:
            if self.registry.get(name) is None:      # removed while it was being checked
                raise UnknownWorkspace(name) from None
            raise

    def migrate_rebase(self, name: str) -> dict[str, Any]:
        return self.coordinator().rebase(name)

    def merge(self, name: str, *, dry_run: bool = False, allow_destructive: str | None = None) -> Any:
        return self.coordinator().merge(name, dry_run=dry_run, allow_destructive=allow_destructive)

    def sync(self, name: str) -> dict[str, Any]:
        return self.coordinator().sync(name)

    # -- storage --------------------------------------------------------------------------------------
    def storage_init(self, size: str | None = None) -> dict[str, Any]:
        """Make the copy-on-write pool for snapshot clones (a loop-mounted btrfs image; needs root)."""
        from .databases.factory import data_home
        from .databases.storage import detect, parse_size, provision_pool
        size = size or self.config.database.pool_size
        try:
            parse_size(size)
        except (ValueError, SandboxError) as exc:
            raise UsageError(f"--size {size!r}: use a size such as 20G or 500M") from exc
        server = self.registry.get_meta("db.server") if (self.config.state_dir / "registry.db").exists() else None
        home = data_home(self.config, server or ("local" if self.config.database.server == "local" else "docker"))
        pool = home / "pool" if home != self.config.state_dir else self.root / self.config.database.pool
        self.git.ensure_excluded("/.sandbox/")
        current = detect(pool)
        if current.kind != "copy":
            return {"pool": str(pool), "kind": current.kind, "created": False}
        st = provision_pool(pool, size)
        return {"pool": str(pool), "kind": st.kind, "created": True, "size": size}

    def storage_grow(self, size: str) -> dict[str, Any]:
        """Grow the loop-mounted copy-on-write pool to SIZE (or by +SIZE); needs root."""
        from .databases.storage import grow_pool
        storage = getattr(self.db, "storage", None)
        if storage is None:
            raise UsageError(f"the {self.db.name} strategy keeps no copy-on-write pool: grow the filesystem "
                             "that holds the database server's data instead")
        return grow_pool(storage.root, size)

    # -- deinit ---------------------------------------------------------------------------------------
    def deinit(self, *, force: bool = False, resume: str | None = None) -> dict[str, Any]:
        """Remove every workspace, the baseline, the servers, the storage pool and ``.sandbox/``.

        Refuses (before touching anything) while a workspace holds uncommitted changes or
        unmerged commits, unless ``force``. ``sandbox.toml`` and branches are kept.
        ``resume`` (recovery of a killed deinit, under its lock) is the step it had reached.
        """
        if resume is None:
            with self.registry.lock("deinit", blocking=False):
                self.recover(None)
                with self.operation("deinit", None, force=force) as op:
                    return self._deinit(force, op, "begin")
        return self._deinit(force, None, resume)

    def _deinit(self, force: bool, op: Operation | None, reached: str) -> dict[str, Any]:
        from .intents import STEPS
        order = STEPS["deinit"]

        def step(name: str) -> bool:
            """Record ``name`` as done; False when a killed deinit had done it already (skip it)."""
            if order.index(reached) >= order.index(name):
                return False
            if op is not None:
                op.step(name)
            return True

        def pending(name: str) -> bool:
            return order.index(reached) < order.index(name)

        recs = self.registry.all()
        if not force:
            for rec in recs:
                reasons = self.unsaved(rec)
                if reasons:
                    raise UnsafeRemoval(rec.name, reasons)
        if pending("workspaces"):
            for rec in recs:
                self.rm(rec.name, force=True)
            step("workspaces")
        from .databases.factory import data_home, destroy_storage
        server_kind = self.registry.get_meta("db.server") or "local"
        if pending("databases"):
            strategy = self.db
            for res in strategy.owned():
                if res.kind != "baseline":
                    try:
                        strategy.remove_owned(res)
                    except SandboxError as exc:
                        self.progress(f"could not remove {res.kind} {res.id}: {exc}")
            server = getattr(strategy, "server", None)
            if server is not None and hasattr(server, "stop"):
                server.stop()
            step("databases")
        if pending("runtime"):
            try:
                runtime = self.runtime_for(self.config.workspace.runtime)
                for res in runtime.owned(self.config.project_id):
                    runtime.remove_owned(res)
                if self.config.workspace.runtime == "docker":
                    from .project import remove_run_containers
                    remove_run_containers(self.config.project_id)     # live ones too: the project goes
            except ServiceUnavailable:
                pass
            step("runtime")
        if pending("storage"):
            destroy_storage(self.config, self._strategy, data_home(self.config, server_kind))
            step("storage")
        self.git.prune()
        shutil.rmtree(self.config.state_dir, ignore_errors=True)
        self._registry = None
        self._strategy = None
        if op is not None:
            op.settled = True               # its intent went with the registry
        kept = [r.branch for r in recs if self.git.branch_exists(r.branch)]
        if kept:
            self.progress(f"kept branches: {', '.join(kept)} (delete with `git branch -D`)")
        return {"removed_workspaces": [r.name for r in recs], "kept_branches": kept}

    # -- gc and doctor ---------------------------------------------------------------------------------
    def gc(self, *, dry_run: bool = False, trust_registry: bool = False) -> list[GcAction]:
        """Find what the registry does not know, and repair what a crash left half-done.

        ``trust_registry`` lifts the caution that follows a restore from the registry's backup.
        """
        from .gc import collect
        return collect(self, dry_run=dry_run, trust=trust_registry)

    def doctor(self, *, repair: bool = False) -> list[Check]:
        from .doctor import run_checks
        return run_checks(self, repair=repair)


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return str(os.getuid())

