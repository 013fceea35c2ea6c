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

from .config import STATE_DIR
from .errors import SandboxError, ServiceUnavailable
from .host import process_alive
from .results import GcAction
from .workspaces import stacks as workspace_stacks
from .workspaces.remove import teardown

if TYPE_CHECKING:
    from .core import Project as Sandbox
    from .registry import Registry, WorkspaceRecord

def collect(sb: "Sandbox", *, dry_run: bool = False, trust: bool = False) -> list["GcAction"]:
    """Compare what exists with the registry and repair it; every action taken (or, with
    ``dry_run``, that would be taken)."""
    reg = sb.registry
    reg.verify()                       # again, right before acting on it
    if trust and reg.restored and not dry_run:
        reg.trust()
    gc = _Collector(sb, dry_run)
    gc.operations()
    if not (sb.config.state_dir / "registry.db").exists():
        return gc.actions              # an interrupted deinit was finished: nothing is left to collect
    gc.half_done_rows()
    if gc.restored:
        _adopt(sb, dry_run, gc.act)
    names = gc.known()
    gc.runtime_objects(names)
    gc.compose_stacks(names)
    gc.database_objects(names)
    gc.worktrees(names)
    gc.ports(names)
    return gc.actions


class _Collector:
    """One ``gc`` run: the actions found so far, and how to act on them."""

    def __init__(self, sb: "Sandbox", dry_run: bool) -> None:
        self.sb = sb
        self.reg = sb.registry
        self.dry_run = dry_run
        self.actions: list[GcAction] = []
        self.restored = self.reg.restored
        self.keep_why = (f"the registry was restored from its backup ({self.restored}) and may miss it: "
                         "kept (check, then `sandbox gc --trust-registry`)") if self.restored else ""

    def act(self, action: "GcAction", fn: Callable[[], object] | None) -> None:
        self.actions.append(action)
        if self.dry_run or fn is None:
            return
        try:
            fn()
            action.done = True
        except SandboxError as exc:
            action.detail = (action.detail + "; " if action.detail else "") + f"failed: {exc}"

    def orphan(self, action: "GcAction", fn: Callable[[], object]) -> None:
        """Remove what the registry does not know, unless the registry may be missing it."""
        if self.restored:
            action.action, action.detail = "kept", self.keep_why
            self.actions.append(action)
        else:
            self.act(action, fn)

    def known(self) -> set[str]:
        """The registered workspaces (rows rolled back above are gone unless this is a dry run)."""
        names = {r.name for r in self.reg.all()}
        if self.dry_run:
            names -= {a.id for a in self.actions if a.kind == "workspace" and a.action == "remove"}
        return names

    def operations(self) -> None:
        """1a. operations left unfinished (their intents)."""
        for r in self.sb.recover(everything=True, dry_run=self.dry_run):
            it = r.intent
            self.actions.append(GcAction("operation", f"{it.op}#{it.id}", it.workspace, r.action,
                                         f"`{it.op}` interrupted at step {it.step}: {r.detail}", done=r.done))

    def half_done_rows(self) -> None:
        """1b. registry rows left half-done without an intent (their process is gone)."""
        for rec in self.reg.all():
            if rec.state == "creating" and not process_alive(rec.pid, rec.pid_start):
                action, detail, fn = settle_creating(self.sb, rec)
                self.act(GcAction("workspace", rec.name, rec.name, action, detail), fn)
            elif rec.state == "removing" and not process_alive(rec.pid, rec.pid_start):
                self.act(GcAction("workspace", rec.name, rec.name, "remove",
                                  "interrupted while removing: finished"),
                         partial(_rollback, self.sb, rec, keep_branch=True))
            elif rec.state in ("ready", "stopped") and not Path(rec.path).exists():
                self.act(GcAction("workspace", rec.name, rec.name, "mark-broken",
                                  f"worktree {rec.path} is missing"),
                         partial(self.reg.set_state, rec.name, "broken", "worktree missing"))

    def runtime_objects(self, names: set[str]) -> None:
        """2. runtime objects (containers, networks), and project code containers nobody runs."""
        sb = self.sb
        try:
            runtime = sb.runtime_for(sb.config.workspace.runtime)
            for res in runtime.owned(sb.config.project_id):
                if res.workspace not in names:
                    self.orphan(GcAction(res.kind, res.id, res.workspace, "remove",
                                         res.detail or "not in the registry"),
                                partial(runtime.remove_owned, res))
        except ServiceUnavailable as exc:
            self.actions.append(GcAction("runtime", sb.config.workspace.runtime, None, "skipped", str(exc)))
        if sb.config.workspace.runtime == "docker":
            _run_containers(self.act, sb.config.project_id)

    def compose_stacks(self, names: set[str]) -> None:
        """2b. the objects and generated files of compose stacks whose workspace is gone."""
        if self.sb.config.workspace.runtime != "docker":
            return
        try:
            for obj in workspace_stacks.orphans(self.sb, names):
                self.orphan(GcAction(f"compose-{obj.kind}", obj.id, obj.workspace, "remove", obj.detail),
                            partial(workspace_stacks.remove_object, obj))
        except ServiceUnavailable as exc:
            self.actions.append(GcAction("compose", "*", None, "skipped", str(exc)))

    def database_objects(self, names: set[str]) -> None:
        """3. databases, roles, schemas, clusters, snapshots. Transient copies (a gate's scratch
        clone, a baseline being built, a copy still without its label) are only collected while
        no merge or baseline build runs, i.e. when nobody can be using them."""
        try:
            db = self.sb.db
            with contextlib.ExitStack() as held:
                quiet = True
                for lock in ("merge", "baseline"):
                    try:
                        held.enter_context(self.reg.lock(lock, blocking=False))
                    except SandboxError:
                        quiet = False
                for res in db.owned():
                    unknown = res.workspace is not None and res.workspace not in names
                    transient = res.workspace is None and (res.kind == "leftover" or res.transient)
                    if unknown or (transient and quiet):
                        act = self.orphan if unknown else self.act
                        act(GcAction(res.kind, res.id, res.workspace, "remove",
                                     res.detail or "not in the registry"),
                            partial(db.remove_owned, res))
        except ServiceUnavailable as exc:
            self.actions.append(GcAction("database", "server", None, "skipped", str(exc)))

    def worktrees(self, names: set[str]) -> None:
        """4. worktrees and workspace repositories nobody owns (kept when they hold work)."""
        sb = self.sb
        wt_dir = sb.config.worktrees_dir
        paths = {Path(r.path).resolve() for r in self.reg.all() if r.name in names}
        for path, branch in sb.git.registered().items():
            if path.is_relative_to(wt_dir) and path not in paths:
                dirty = sb.git.find_unsaved(path)
                if dirty:
                    self.actions.append(GcAction("worktree", str(path), branch, "kept",
                                                 f"not in the registry but has {len(dirty)} uncommitted change(s)"))
                else:
                    self.orphan(GcAction("worktree", str(path), branch, "remove",
                                         "not in the registry (branch kept)"),
                                partial(sb.git.remove, path))
        for path in sb.repos.orphans(paths, wt_dir):
            self._orphan_repo(path)
        if not self.dry_run:
            sb.git.prune()

    def _orphan_repo(self, path: Path) -> None:
        sb = self.sb
        if path.name.startswith(".new-"):
            self.orphan(GcAction("worktree", str(path), None, "remove", "a half-made workspace repository"),
                        partial(shutil.rmtree, path))
            return
        try:
            work = [u.what for u in sb.repos.find_unsaved(path.name, path, path.name)]
        except SandboxError as exc:
            work = [str(exc)]
        if work:
            self.actions.append(GcAction("worktree", str(path), path.name, "kept",
                                         f"not in the registry but holds work ({work[0]})"))
        else:
            self.orphan(GcAction("worktree", str(path), path.name, "remove", "not in the registry (branch kept)"),
                        partial(sb.repos.remove, path.name, path))

    def ports(self, names: set[str]) -> None:
        """5. ports held by owners the registry does not know."""
        for owner, ports in self.reg.port_owners().items():
            shared = owner.startswith("_") or owner == ".baseline"   # the baseline's and shared servers' ports
            if owner.startswith(".scratch-") and not quiet_locks(self.reg):
                continue
            if owner not in names and not shared:
                self.orphan(GcAction("ports", f"{ports[0]}-{ports[-1]}", owner, "release",
                                     "owner not in the registry"),
                            partial(self.reg.release, owner))


def _run_containers(act: Callable[..., None], project: str) -> None:
    """Containers that ran project code (``role=run``) whose starting process is gone: this
    project's, and those of a project that no longer exists (deleted, or deinit'ed), which no gc
    of its own will ever see. Another live project's are its own gc's to judge."""
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
        if labels.get(LABEL_PROJECT) != project and not _project_gone(labels.get(LABEL_PROJECT_PATH)):
            continue        # another project's (or an older sandbox's, without a path): its gc decides
        where = labels.get(LABEL_PROJECT_PATH) or labels.get(LABEL_PROJECT, "?")
        act(GcAction("run-container", str(c.name), labels.get(LABEL_WORKSPACE) or None, "remove",
                     f"project code container of {where} ({c.status}) whose sandbox process is gone"),
            partial(_remove_container, c))


def _project_gone(path: str | None) -> bool:
    """Whether the project at ``path`` is gone: its folder, or its state (``deinit`` removes it)."""
    return path is not None and path != "" and not (Path(path) / STATE_DIR).is_dir()


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
            found = sb.repos.find_unsaved(rec.name, path, rec.branch) if (path / ".git").is_dir() else []
        else:
            found = sb.git.find_unsaved(path)
        work = found or (sb.git.unmerged(rec.branch, main) if rec.branch_created else [])
    except SandboxError as exc:        # cannot tell: keep it (fail closed)
        work = [str(exc)]
    if work:
        return ("mark-broken", "interrupted while creating; its worktree holds work, kept for `sandbox up` to retry",
                partial(sb.registry.set_state, rec.name, "broken", "interrupted while creating"))
    return "remove", "interrupted while creating: rolled back", partial(_rollback, sb, rec)


def _rollback(sb: "Sandbox", rec: "WorkspaceRecord", keep_branch: bool = False) -> None:
    """The one teardown (``rm``'s); the branch goes only if creating it made it and it holds nothing unmerged."""
    teardown(sb, rec, delete_branch=rec.branch_created and not keep_branch)


def quiet_locks(reg: "Registry") -> bool:
    """True when no merge or baseline build is running (their transient resources are debris)."""
    try:
        with reg.lock("merge", blocking=False), reg.lock("baseline", blocking=False):
            return True
    except SandboxError:
        return False
