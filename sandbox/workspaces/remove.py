"""Removing workspaces: ``rm``, ``deinit``, and :func:`teardown`, the one teardown that ``rm``,
recovery of a killed ``rm`` and ``gc`` all use."""

from __future__ import annotations

import contextlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from ..core import Project
from ..errors import SandboxError, ServiceUnavailable, UnsafeRemoval, WorkspaceError
from ..faults import STEPS
from ..intents import Operation
from ..registry import WorkspaceRecord
from ..results import DeinitResult, RmResult
from . import stacks
from .lifecycle import results_of, start

# How many workspaces ``deinit`` tears down at once (Docker and Postgres calls, mostly waiting).
PARALLEL_TEARDOWNS = 8


def rm(p: Project, name: str, *, force: bool = False, delete_branch: bool = False) -> RmResult:
    """Remove the container, database and worktree (refuses to lose work unless force)."""
    p.record(name)
    with p.locked(name) as rec, \
            p.operation("rm", name, force=force, delete_branch=delete_branch) as op:
        path = Path(rec.path)
        if not force:
            reasons = p.unsaved(rec)
            if reasons:
                raise UnsafeRemoval(name, reasons)
        else:
            with contextlib.suppress(SandboxError):
                p.collect(rec)      # its commits reach main's branch even when forced
        hook_error = None
        if p.config.workspace.teardown and rec.state in ("ready", "stopped", "broken") and path.exists():
            try:
                if rec.state == "stopped":
                    start(p, rec)
                p.run_hooks(rec, p.config.workspace.teardown, "teardown")
            except SandboxError as exc:
                if not force:
                    raise WorkspaceError(f"teardown failed, nothing removed: {exc}",
                                         hint="fix it, or pass --force to remove anyway") from exc
                hook_error = str(exc)
                p.progress(f"{name}: teardown failed, continuing (--force): {exc}")
        op.step("teardown", dirty=False)
        p.registry.set_state(name, "removing")
        op.step("removing")
        teardown(p, rec, delete_branch=delete_branch, force=True, op=op)
    return RmResult(name, True, delete_branch, hook_error)


def teardown(p: Project, rec: WorkspaceRecord, *, delete_branch: bool = False, force: bool = False,
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
            stacks.remove(p, name)
            p.runtime_for(rec.runtime).remove(p.config.project_id, name)
        except ServiceUnavailable:
            if op is not None:
                raise
            p.progress(f"{name}: the container runtime is unavailable; `sandbox gc` removes the container later")
    step("container")
    p.db.drop(name)
    step("database")
    if p.isolated(rec):
        p.repos.remove(name, path)
    else:
        p.git.remove(path)
    step("worktree")
    if delete_branch and (force or not p.git.unmerged(rec.branch)):
        p.git.delete_branch(rec.branch)
    p.registry.delete(name)
    step("deleted")


def deinit(p: Project, *, force: bool = False, resume: str | None = None,
           keep_images: bool = False) -> DeinitResult:
    """Remove every workspace, the baseline, the servers, the storage pool, ``.sandbox/`` and the
    project images sandbox built (unless ``keep_images``).

    Refuses (before touching anything) while a workspace holds uncommitted changes or
    unmerged commits, unless ``force``. ``sandbox.toml`` and branches are kept.
    ``resume`` (recovery of a killed deinit, under its lock) is the step it had reached.
    """
    if resume is None:
        with p.registry.lock("deinit", blocking=False):
            p.recover(None)
            with p.operation("deinit", None, force=force, keep_images=keep_images) as op:
                return _deinit(p, force, op, "begin", keep_images)
    return _deinit(p, force, None, resume, keep_images)


def _remove_images(p: Project) -> list[str]:
    """The project images sandbox built (their tags); a failure is a warning: the images stay."""
    if p.config.workspace.runtime != "docker":
        return []
    from ..runtime.images import remove_project_images   # the Docker SDK: loaded when used
    try:
        return remove_project_images(p.config.project_id)
    except SandboxError as exc:
        p.warn(f"the project's images were kept: {exc}")
        return []


def _deinit(p: Project, force: bool, op: Operation | None, reached: str, keep_images: bool) -> DeinitResult:
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

    from ..databases.factory import (  # the backends: loaded when used
        data_home,
        destroy_storage,
    )
    from ..project import remove_run_containers
    recs = p.registry.all()
    if not force:
        for rec in recs:
            reasons = p.unsaved(rec)
            if reasons:
                raise UnsafeRemoval(rec.name, reasons)
    if pending("workspaces"):
        remove_all(p, [rec.name for rec in recs], everything=True)   # every check passed: all goes
        step("workspaces")
    server_kind = p.registry.get_meta("db.server") or "local"
    if pending("databases"):
        strategy = p.db
        for res in strategy.owned():
            if res.kind != "baseline":
                try:
                    strategy.remove_owned(res)
                except SandboxError as exc:
                    p.progress(f"could not remove {res.kind} {res.id}: {exc}")
        server = getattr(strategy, "server", None)
        if server is not None and hasattr(server, "stop"):
            server.stop()
        step("databases")
    if pending("runtime"):
        try:
            runtime = p.runtime_for(p.config.workspace.runtime)
            if p.config.workspace.runtime == "docker":
                stacks.remove_everything(p)
            for res in runtime.owned(p.config.project_id):
                runtime.remove_owned(res)
            if p.config.workspace.runtime == "docker":
                remove_run_containers(p.config.project_id)     # live ones too: the project goes
        except ServiceUnavailable:
            pass
        step("runtime")
    if pending("storage"):
        destroy_storage(p.config, p.built_strategy(), data_home(p.config, server_kind))
        step("storage")
    images = [] if keep_images else _remove_images(p)
    p.git.prune()
    shutil.rmtree(p.config.state_dir, ignore_errors=True)
    p.forget_state()
    if op is not None:
        op.settled = True               # its intent went with the registry
    kept = [r.branch for r in recs if p.git.branch_exists(r.branch)]
    if kept:
        p.progress(f"kept branches: {', '.join(kept)} (delete with `git branch -D`)")
    return DeinitResult([r.name for r in recs], kept, images)



@runtime_checkable
class RemovesEverything(Protocol):
    """A runtime that removes every workspace's containers and networks at once (``deinit``)."""

    def remove_every_workspace(self, project: str, parallel: int = ...) -> None: ...


def remove_all(p: Project, names: Sequence[str], *, everything: bool = False) -> list[RmResult]:
    """``rm --force`` of every one of ``names``, several at once (a bounded pool); the first
    failure is raised once all have finished. ``everything`` (``deinit``, after its checks): the project's
    workspace and database containers are killed and removed first, all together, unless
    teardown hooks must still run in them."""
    if everything and names and not p.config.workspace.teardown and p.config.workspace.runtime != "none":
        try:
            runtime = p.runtime_for(p.config.workspace.runtime)
            if isinstance(runtime, RemovesEverything):
                runtime.remove_every_workspace(p.config.project_id, PARALLEL_TEARDOWNS)
        except SandboxError as exc:          # each workspace's teardown below removes what is left
            p.progress(f"could not remove the workspaces' containers at once: {exc}")
    with _reclaiming_once(p) if everything and names else contextlib.nullcontext():
        if len(names) <= 1:
            return [rm(p, n, force=True) for n in names]
        with ThreadPoolExecutor(max_workers=min(PARALLEL_TEARDOWNS, len(names))) as pool:
            return results_of([pool.submit(rm, p, n, force=True) for n in names])


@runtime_checkable
class ReclaimsOnce(Protocol):
    """A database strategy whose drops can share one wait for the freed space (``deinit``)."""

    def reclaiming_once(self) -> contextlib.AbstractContextManager[None]: ...


def _reclaiming_once(p: Project) -> contextlib.AbstractContextManager[None]:
    try:
        db = p.db
    except SandboxError:
        return contextlib.nullcontext()        # each teardown says what is wrong with it
    return db.reclaiming_once() if isinstance(db, ReclaimsOnce) else contextlib.nullcontext()
