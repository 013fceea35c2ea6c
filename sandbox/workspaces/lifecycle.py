"""Create, start and stop workspaces (``up``, ``stop``), and bring a checkout forward (``advance``).

Creating a workspace touches git, Docker, Postgres, storage and the registry. Each finished
step pushes its undo onto an ``ExitStack``; the stack is dropped on success. The registry
records ``creating → ready`` (or ``broken`` with the cause), and the intent journal the step
reached, so recovery (:mod:`.recover`) and ``gc`` can finish the job after a crash.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any, Callable, Sequence

from ..core import Project
from ..envfile import write_block
from ..errors import DatabaseError, SandboxError, UsageError, WorkspaceError
from ..git import fast_forward, fast_forward_in
from ..intents import Operation
from ..names import validate_name
from ..registry import WorkspaceRecord
from ..results import UpResult
from ..runtime.base import unprivileged_ids
from . import stacks


def _after(job: Future[Any], then: Callable[[], Any]) -> None:
    """Wait for ``job`` (whatever its outcome), then call ``then``: undo never races the work."""
    futures_wait([job])
    then()


def results_of(jobs: Sequence[Future[Any]]) -> list[Any]:
    """Every job's result once all have finished; the first failure (in order) is raised."""
    futures_wait(jobs)
    for job in jobs:
        exc = job.exception()
        if exc is not None:
            raise exc
    return [job.result() for job in jobs]


def up(p: Project, names: Sequence[str], *, from_ref: str | None = None,
       container: bool = True) -> list[UpResult]:
    """Create workspaces (or start them again); several are created concurrently."""
    for n in names:
        validate_name(n)
    if len(set(names)) != len(names):
        raise UsageError("a workspace name is given twice")
    main = p.git.main_branch()
    if main in names:
        raise UsageError(f"{main!r} is the main checkout's branch; pick another workspace name")
    if from_ref is not None:
        _collect_source(p, from_ref)
        start = p.git.rev(from_ref)
        for n in names:   # --from makes a branch; it never silently means an existing one
            if p.git.branch_exists(n) and p.git.rev(f"refs/heads/{n}") != start:
                raise UsageError(f"branch {n!r} already exists at another commit than {from_ref!r}: "
                                 f"--from only makes new branches (drop --from to use {n!r}, or pick "
                                 "another name)")
    p.check_env_file(from_ref)
    p.registry  # noqa: B018 - fails early when not initialised
    for n in names:                      # what interrupted operations left (a merge's baseline too)
        if p.registry.get(n) is not None:
            p.record(n)
    p.recover_project()
    _warn_stale_baseline(p)
    runtime = p.config.workspace.runtime if container else "none"
    if runtime != "none":
        p.runtime_for(runtime)   # the Docker SDK first: the network is the first thing made
    # The database backend (psycopg, the strategy) loads while git and Docker make the worktree
    # and the network; whoever needs it first waits for it (a failure is raised to them).
    threading.Thread(target=p.load_db_quietly, name="sandbox-load-db", daemon=True).start()
    if len(names) == 1:
        return [_up_safe(p, names[0], from_ref, runtime)]
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return list(pool.map(lambda n: _up_safe(p, n, from_ref, runtime), names))


def _collect_source(p: Project, ref: str) -> None:
    """``--from`` a workspace's branch means its latest commit: collect that workspace first
    (its branch in main is only as new as the last collect). A workspace that cannot be read
    safely is refused rather than silently used at an older commit."""
    import re
    branch = re.split(r"[~^@:]", ref.removeprefix("refs/heads/").removeprefix("heads/"), maxsplit=1)[0]
    try:
        recs = p.registry.all()
    except SandboxError:
        return                       # not initialised: `up` says so next
    for rec in recs:
        if rec.branch == branch and p.isolated(rec):
            try:
                p.collect(rec)
            except SandboxError as exc:
                raise WorkspaceError(f"--from {ref}: cannot read workspace {rec.name!r}'s latest commits: "
                                     f"{exc.message}") from exc


def _up_safe(p: Project, name: str, from_ref: str | None, runtime: str) -> UpResult:
    try:
        return _up_one(p, name, from_ref, runtime)
    except SandboxError as exc:
        rec = p.registry.get(name)
        return UpResult(name, False, rec.state if rec else "absent", error=str(exc), exit_code=exc.exit_code)


def _up_one(p: Project, name: str, from_ref: str | None, runtime_kind: str) -> UpResult:
    with p.registry.lock(f"ws-{name}"):
        rec = p.registry.get(name)
        with p.operation("up", name, existed=rec is not None) as op:
            if rec is not None and rec.state in ("ready", "stopped"):
                p.progress(f"{name}: starting")
                start(p, rec)
                op.step("started", dirty=False)
                return stacks.up(p, rec, UpResult(name, True, "ready"))
            if rec is None:
                path = p.config.worktrees_dir / name
                rec = WorkspaceRecord(name=name, branch=name, path=str(path), state="creating",
                                      runtime=runtime_kind, base_ref=from_ref, pid=os.getpid())
                if not p.registry.insert(rec):
                    raise WorkspaceError(f"workspace {name!r} appeared concurrently; retry")
            else:
                p.registry.set_state(name, "creating", rec.cause)
            op.step("registered")
            try:
                create(p, rec, from_ref, op)
            except BaseException as exc:  # a failed hook keeps everything; other failures were undone
                p.registry.set_state(name, "broken", str(exc) or type(exc).__name__)
                op.done()
                raise
            p.registry.set_state(name, "ready")
            op.step("ready")
            return stacks.up(p, p.registry.get(name) or rec, UpResult(name, True, "ready", created=True))


def create(p: Project, rec: WorkspaceRecord, from_ref: str | None, op: Operation) -> None:
    """Worktree, ports, network, database and container; on failure nothing of it stays.

    Independent steps overlap: the network is created while git makes the worktree, and
    the database is cloned and started while the container starts (it is created with the
    database's :meth:`~Strategy.planned` connection info).
    """
    name, path = rec.name, Path(rec.path)
    runtime = p.runtime_for(rec.runtime)
    project = p.config.project_id
    with contextlib.ExitStack() as undo, ThreadPoolExecutor(max_workers=2) as pool:
        p.progress(f"{name}: worktree {path}")
        net_job = pool.submit(runtime.ensure_network, project, name)
        undo.callback(_after, net_job, lambda: runtime.remove(project, name))
        isolated = rec.runtime == "docker"
        owner = unprivileged_ids() if isolated else None
        existed = p.git.branch_exists(rec.branch)
        if isolated:
            # Docker workspaces are untrusted: a repository of their own (see worktrees.py)
            if not rec.data.get("isolated"):
                p.registry.update(name, data={**rec.data, "isolated": True})
                rec = p.registry.get(name) or rec
            had_worktree = (path / ".git").is_dir()
            created_branch = p.repos.add(path, rec.branch, from_ref or rec.base_ref,
                                            exclude=("/" + p.env_file(),), owner=owner)
        else:
            had_worktree = path.resolve() in p.git.registered()
            created_branch = p.git.add(path, rec.branch, from_ref or rec.base_ref)
        if created_branch:
            p.registry.update(name, branch_created=True)
            undo.callback(p.git.delete_branch, rec.branch)
        if not had_worktree:
            undo.callback(p.repos.remove, name, path) if isolated else undo.callback(p.git.remove, path)
            # made and handed to the container's user by descriptor: nothing the branch
            # committed there (a link to a host path) is followed
            p.git.copy_ignored(path, p.config.workspace.copy, owner=owner,
                                  warn=lambda msg: p.progress(f"{name}: {msg}"))
        op.step("worktree")
        if existed:
            _warn_behind(p, rec)
        had_ports = bool(p.registry.ports(name, "workspace"))
        p.registry.allocate(name, "workspace", p.config.workspace.ports,
                               base=p.config.workspace.port_base)
        if not had_ports:
            undo.callback(p.registry.release, name, "workspace")
        network = net_job.result()
        p.registry.update(name, data={**rec.data, "network": network})
        rec = p.registry.get(name) or rec

        p.progress(f"{name}: database ({p.db.name})")
        had_db = p.db.exists(name)
        if not had_db:
            undo.callback(p.db.drop, name)
        planned = p.db.planned(name, network)
        jobs: list[Future[Any]] = [pool.submit(p.db.create, name, network)]
        if rec.runtime != "none":
            if planned.container_host is None:
                p.warn("no address of the database is known inside the container "
                       "(a local server listens on the host's 127.0.0.1 only); "
                       "[database] server = \"docker\" gives one", name)
            p.progress(f"{name}: container")
            jobs.append(pool.submit(runtime.up, p.spec(rec, planned)))
        db = results_of(jobs)[0]
        p.registry.update(name, strategy=p.db.name)
        if db.env(container=True) != planned.env(container=True):
            raise DatabaseError(f"{name}: the database of strategy {p.db.name} was made with other "
                                "connection details than it announced (a bug in sandbox: please report it)")
        write_block(path / p.env_file(), p.managed_env(rec, db), owner=owner, root=path)
        undo.pop_all()
    op.step("database")
    p.run_hooks(rec, p.config.workspace.setup, "setup", db)
    op.step("setup")


def advance(p: Project, rec: WorkspaceRecord, commit: str) -> None:
    """Fast-forward the workspace's checkout to ``commit`` (made for it in main's repository):
    inside its container for a Docker workspace, so no git runs in its repository on the host."""
    if p.isolated(rec):
        runtime = p.runtime_for(rec.runtime)
        if runtime.status(p.config.project_id, rec.name) != "running":
            raise WorkspaceError(f"workspace {rec.name!r} is not running", hint=f"run `sandbox up {rec.name}` first")
        spec = p.spec(rec)
        fast_forward_in(lambda argv, output: runtime.exec(spec, argv, output=output), rec.name, rec.branch, commit)
        p.collect(rec)
    else:
        fast_forward(rec.path, rec.name, commit)


def recopy(p: Project, rec: WorkspaceRecord) -> list[str]:
    """``[workspace] copy`` again (``sync``, ``rebase``): git-ignored files the install generated
    in main's checkout since the workspace was made. A file the workspace has is kept; what is
    copied is made and handed to the container's user by descriptor, as on ``up``."""
    owner = unprivileged_ids() if rec.runtime == "docker" else None
    return p.git.copy_ignored(Path(rec.path), p.config.workspace.copy, owner=owner,
                              warn=lambda msg: p.progress(f"{rec.name}: {msg}"))


def _warn_stale_baseline(p: Project) -> None:
    """New workspaces start from the baseline: say so when it is not at main's head."""
    from ..health import baseline_state  # psycopg: loaded in the background by `up`
    try:
        problem = baseline_state(p).problem()
    except SandboxError:
        return
    if problem:
        p.warn(problem)


def _warn_behind(p: Project, rec: WorkspaceRecord) -> None:
    n = p.behind(rec)
    if n:
        p.warn(f"branch {rec.branch!r} exists and lacks {n} of main's commits; "
               f"`sandbox sync {rec.name}` brings them in", rec.name)


def start(p: Project, rec: WorkspaceRecord) -> None:
    """Start a stopped workspace: its database and its container at the same time."""
    network = p.network(rec)
    runtime = p.runtime_for(rec.runtime)
    if network:
        network = runtime.ensure_network(p.config.project_id, rec.name)
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs: list[Future[Any]] = [pool.submit(p.db.start, rec.name, network)]
        if rec.runtime != "none":
            known = p.db.planned(rec.name, network) if p.db.exists(rec.name) else None
            jobs.append(pool.submit(runtime.up, p.spec(rec, known)))
        results_of(jobs)
    p.registry.set_state(rec.name, "ready")


def stop(p: Project, name: str) -> None:
    """Stop the containers; keep everything."""
    p.record(name)
    with p.locked(name) as rec:
        if rec.runtime != "none":
            stacks.stop(p, name)
            p.runtime_for(rec.runtime).stop(p.config.project_id, name)
        if rec.strategy:
            p.db.stop(name)
        if rec.state == "ready":
            p.registry.set_state(name, "stopped")

