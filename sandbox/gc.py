"""``sandbox gc``: compare what exists with the registry, and repair.

* workspaces left ``creating`` by a killed ``up`` are rolled back (or marked
  ``broken`` when the worktree already holds work), ``removing`` ones are finished;
* labelled containers and networks, databases, roles, schemas, clusters and
  snapshots that no registered workspace owns are removed: only things sandbox
  created (labels, name prefixes, its own storage pool);
* worktrees under the worktrees folder that no workspace owns are removed when clean,
  and kept (and reported) when they hold uncommitted work;
* ports held by unknown owners are released.

Nothing is removed on the strength of a registry that is not known good: opening it
verifies it (see :mod:`sandbox.registry`), and a registry restored from its backup
may miss the last operation, so until the user trusts it again
(``gc --trust-registry``) orphans are reported, and worktrees it does not know are
adopted as ``broken`` workspaces (``up`` restarts them, ``rm`` removes them).
"""

from __future__ import annotations

import contextlib
import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import SandboxError, ServiceUnavailable
from .results import GcAction

if TYPE_CHECKING:
    from .core import Project as Sandbox
    from .registry import Registry, WorkspaceRecord

# database objects that only exist while an operation runs; left behind, they are a crash's debris
TRANSIENT = {"scratch", "baseline-building", "unlabelled", "stale", "interrupted"}


def collect(sb: "Sandbox", *, dry_run: bool = False, trust: bool = False) -> list["GcAction"]:
    from .host import process_alive

    actions: list[GcAction] = []
    reg = sb.registry
    reg.verify()                       # again, right before acting on it
    if trust and reg.restored and not dry_run:
        reg.trust()
    restored = reg.restored
    keep_why = (f"the registry was restored from its backup ({restored}) and may miss it: kept "
                "(check, then `sandbox gc --trust-registry`)") if restored else ""

    def act(action: GcAction, fn: Callable[[], object] | None) -> None:
        actions.append(action)
        if dry_run or fn is None:
            return
        try:
            fn()
            action.done = True
        except SandboxError as exc:
            action.detail = (action.detail + "; " if action.detail else "") + f"failed: {exc}"

    def orphan(action: GcAction, fn: Callable[[], object]) -> None:
        """Remove what the registry does not know, unless the registry may be missing it."""
        if restored:
            action.action, action.detail = "kept", keep_why
            actions.append(action)
        else:
            act(action, fn)

    project = sb.config.project_id

    # 1. operations left unfinished (their intents), then half-done registry rows without one
    for r in sb.recover(everything=True, dry_run=dry_run):
        it = r.intent
        actions.append(GcAction("operation", f"{it.op}#{it.id}", it.workspace, r.action,
                               f"`{it.op}` interrupted at step {it.step}: {r.detail}", done=r.done))
    if not (sb.config.state_dir / "registry.db").exists():
        return actions                 # an interrupted deinit was finished: nothing is left to collect
    for rec in reg.all():
        if rec.state == "creating" and not process_alive(rec.pid):
            action, detail, fn = settle_creating(sb, rec)
            act(GcAction("workspace", rec.name, rec.name, action, detail), fn)
        elif rec.state == "removing" and not process_alive(rec.pid):
            act(GcAction("workspace", rec.name, rec.name, "remove", "interrupted while removing: finished"),
                partial(_rollback, sb, rec, keep_branch=True))
        elif rec.state in ("ready", "stopped") and not Path(rec.path).exists():
            act(GcAction("workspace", rec.name, rec.name, "mark-broken", f"worktree {rec.path} is missing"),
                partial(reg.set_state, rec.name, "broken", "worktree missing"))

    if restored:
        _adopt(sb, dry_run, act)

    def known() -> set[str]:
        # rows rolled back above are gone unless this is a dry run
        names = {r.name for r in reg.all()}
        if dry_run:
            names -= {a.id for a in actions if a.kind == "workspace" and a.action == "remove"}
        return names

    names = known()

    # 2. runtime objects (containers, networks)
    try:
        runtime = sb.runtime_for(sb.config.workspace.runtime)
        for res in runtime.owned(project):
            if res.workspace not in names:
                orphan(GcAction(res.kind, res.id, res.workspace, "remove", res.detail or "not in the registry"),
                       partial(runtime.remove_owned, res))
    except ServiceUnavailable as exc:
        actions.append(GcAction("runtime", sb.config.workspace.runtime, None, "skipped", str(exc)))
    if sb.config.workspace.runtime == "docker":
        _run_containers(act, sb.config.project_id)

    # 3. databases, roles, schemas, clusters, snapshots. Transient copies (a gate's scratch
    #    clone, a baseline being built, a copy still without its label) are only collected
    #    while no merge or baseline build runs, i.e. when nobody can be using them.
    try:
        db = sb.db
        with contextlib.ExitStack() as held:
            quiet = True
            for lock in ("merge", "baseline"):
                try:
                    held.enter_context(reg.lock(lock, blocking=False))
                except SandboxError:
                    quiet = False
            for res in db.owned():
                unknown = res.workspace is not None and res.workspace not in names
                transient = res.workspace is None and (
                    res.kind == "leftover" or res.detail.split(" ")[0] in TRANSIENT)
                if unknown:
                    orphan(GcAction(res.kind, res.id, res.workspace, "remove", res.detail or "not in the registry"),
                           partial(db.remove_owned, res))
                elif transient and quiet:
                    act(GcAction(res.kind, res.id, res.workspace, "remove", res.detail or "not in the registry"),
                        partial(db.remove_owned, res))
    except ServiceUnavailable as exc:
        actions.append(GcAction("database", "server", None, "skipped", str(exc)))

    # 4. worktrees nobody owns
    wt_dir = sb.config.worktrees_dir
    paths = {Path(r.path).resolve() for r in reg.all() if r.name in names}
    for path, branch in sb.git.registered().items():
        if path.is_relative_to(wt_dir) and path not in paths:
            dirty = sb.git.dirty(path)
            if dirty:
                actions.append(GcAction("worktree", str(path), branch, "kept",
                                        f"not in the registry but has {len(dirty)} uncommitted change(s)"))
            else:
                orphan(GcAction("worktree", str(path), branch, "remove", "not in the registry (branch kept)"),
                       partial(sb.git.remove, path))
    for path in sb.repos.orphans(paths, wt_dir):
        if path.name.startswith(".new-"):
            orphan(GcAction("worktree", str(path), None, "remove", "a half-made workspace repository"),
                   partial(shutil.rmtree, path))
            continue
        try:
            work = sb.repos.unsaved(path.name, path, path.name)
        except SandboxError as exc:
            work = [str(exc)]
        if work:
            actions.append(GcAction("worktree", str(path), path.name, "kept",
                                    f"not in the registry but holds work ({work[0]})"))
        else:
            orphan(GcAction("worktree", str(path), path.name, "remove", "not in the registry (branch kept)"),
                   partial(sb.repos.remove, path.name, path))
    if not dry_run:
        sb.git.prune()

    # 5. ports
    for owner, ports in reg.port_owners().items():
        shared = owner.startswith("_") or owner == ".baseline"   # the baseline's and shared servers' ports
        if owner.startswith(".scratch-") and not quiet_locks(reg):
            continue
        if owner not in names and not shared:
            orphan(GcAction("ports", f"{ports[0]}-{ports[-1]}", owner, "release", "owner not in the registry"),
                   partial(reg.release, owner))
    return actions


def _run_containers(act: Callable[..., None], project: str) -> None:
    """Containers that ran project code (``role=run``) whose starting process is gone: of any
    project on this engine, so those of a deinit'ed or deleted project are found too."""
    from .project import LABEL_PROJECT_PATH, run_containers, run_owner_alive
    from .runtime.base import LABEL_PROJECT, LABEL_WORKSPACE
    from .runtime.docker import shared_client
    from .runtime.errors import translated

    try:
        with translated("listing run containers"):
            client = shared_client()
            found = run_containers(client)
    except SandboxError as exc:
        act(GcAction("run-container", "*", None, "skipped", str(exc)), None)
        return
    for c in found:
        labels = c.labels or {}
        if run_owner_alive(labels):
            continue
        if LABEL_PROJECT_PATH not in labels and labels.get(LABEL_PROJECT) != project:
            continue        # made by an older sandbox for another project: that project's gc decides
        where = labels.get(LABEL_PROJECT_PATH) or labels.get(LABEL_PROJECT, "?")
        act(GcAction("run-container", str(c.name), labels.get(LABEL_WORKSPACE) or None, "remove",
                     f"project code container of {where} ({c.status}) whose sandbox process is gone"),
            partial(_remove_container, c))


def _remove_container(container: object) -> None:
    import docker.errors

    from .runtime.errors import translated
    with translated(f"removing container {getattr(container, 'name', '?')}"):
        try:
            container.remove(force=True)  # type: ignore[attr-defined]
        except docker.errors.NotFound:
            pass


def _adopt(sb: "Sandbox", dry_run: bool, act: Callable[..., None]) -> None:
    """Worktrees of workspaces a restored registry does not know become ``broken`` records."""
    from .names import validate_name
    from .registry import WorkspaceRecord

    reg = sb.registry
    known_paths = {Path(r.path).resolve() for r in reg.all()}
    known_names = {r.name for r in reg.all()}
    for path, branch in sb.git.registered().items():
        if not path.is_relative_to(sb.config.worktrees_dir) or path in known_paths:
            continue
        try:
            name = validate_name(path.name)
        except SandboxError:
            continue
        if name in known_names or branch is None:
            continue
        cause = "adopted by gc after the registry was restored: `sandbox up` restarts it, `sandbox rm` removes it"
        rec = WorkspaceRecord(name=name, branch=branch, path=str(path), state="broken", cause=cause,
                              runtime=sb.config.workspace.runtime, data={"adopted": True})
        try:
            rec.strategy = sb.db.name if sb.db.exists(name) else None
        except SandboxError:
            pass
        act(GcAction("workspace", name, name, "adopt", f"worktree {path} on branch {branch!r}"),
            partial(reg.insert, rec))


def settle_creating(sb: "Sandbox", rec: "WorkspaceRecord") -> tuple[str, str, Callable[[], object]]:
    """What to do with a workspace whose creation was interrupted: (action, why, do it).

    It is rolled back (everything made for it removed) unless its worktree already holds work
    (or git cannot say): then it is kept as ``broken`` for ``sandbox up`` to retry.
    """
    path = Path(rec.path)
    main = sb.git.main_branch()
    try:
        if sb.isolated(rec):
            found = sb.repos.unsaved(rec.name, path, rec.branch) if (path / ".git").is_dir() else []
        else:
            found = sb.git.dirty(path)
        work = found or (sb.git.unmerged(rec.branch, main) if rec.branch_created else [])
    except SandboxError as exc:        # cannot tell: keep it (fail closed)
        work = [str(exc)]
    if work:
        return ("mark-broken", "interrupted while creating; its worktree holds work, kept for `sandbox up` to retry",
                partial(sb.registry.set_state, rec.name, "broken", "interrupted while creating"))
    return "remove", "interrupted while creating: rolled back", partial(_rollback, sb, rec)


def _rollback(sb: "Sandbox", rec: "WorkspaceRecord", keep_branch: bool = False) -> None:
    if rec.runtime != "none":
        try:
            sb.runtime_for(rec.runtime).remove(sb.config.project_id, rec.name)
        except ServiceUnavailable:
            pass
    sb.db.drop(rec.name)
    if sb.isolated(rec):
        sb.repos.remove(rec.name, Path(rec.path))
    else:
        sb.git.remove(Path(rec.path))
    if rec.branch_created and not keep_branch and not sb.git.unmerged(rec.branch):
        sb.git.delete_branch(rec.branch)
    sb.registry.delete(rec.name)


def quiet_locks(reg: "Registry") -> bool:
    """True when no merge or baseline build is running (their transient resources are debris)."""
    try:
        with reg.lock("merge", blocking=False), reg.lock("baseline", blocking=False):
            return True
    except SandboxError:
        return False
