"""``Sandbox``: the library's facade. Every CLI command is one call to a method here.

The methods are thin: each one calls the function that does the job, in
:mod:`sandbox.workspaces` (the lifecycle) or in :mod:`sandbox.migrations` (the gate), with the
:class:`~sandbox.core.Project` that holds the collaborators. Each returns a typed result from
:mod:`sandbox.results` whose ``to_json()`` is the ``--json`` output.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from . import config as config_mod
from .checks import Check
from .core import ENV_FALLBACK, Progress, Project
from .databases.base import ConnInfo
from .doctor import run_checks
from .errors import SandboxError, UnknownWorkspace
from .gc import collect as gc_collect
from .intents import Recovery
from .migrations.up import MigrateUpResult, migrate_up
from .registry import IntentRecord, WorkspaceRecord
from .requests import MergeRequest, MergeRequestResult, Requests, open_requests, request_merge
from .results import (
    BaselineResult,
    CheckpointInfo,
    DeinitResult,
    EventSink,
    GcAction,
    GrowResult,
    InitResult,
    ResetResult,
    RmResult,
    StorageResult,
    UpResult,
    WorkspaceInfo,
)
from .workspaces import baseline, checkpoints, inspection, lifecycle, recover, remove, stacks
from .runtime.base import OutputSink
from .workspaces.checkpoints import AUTO_CHECKPOINTS

if TYPE_CHECKING:     # the gate (pglast, the catalog readers) is loaded by the commands that use it
    from .migrations.context import GateContext
    from .migrations.findings import Report
    from .migrations.status import MigrateStatus
    from .migrations.sync import RebaseResult, SyncResult
    from .overview.model import Overview

__all__ = ["AUTO_CHECKPOINTS", "ENV_FALLBACK", "GcAction", "Sandbox", "UpResult", "user_name"]


class Sandbox(Project):
    """A project (one main checkout holding ``sandbox.toml``) and its workspaces."""

    def __init__(self, config: config_mod.Config, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._recoverer = self._recover_with_gate

    @classmethod
    def open(cls, project: Path | None = None, *, progress: Progress | None = None,
             events: EventSink | None = None, **kwargs: Any) -> "Sandbox":
        """Find the project from ``project`` or the current directory and load its config."""
        return cls(config_mod.load(cls.find_root(project)), progress=progress, events=events, **kwargs)

    def _recover_with_gate(self, p: Project, name: str | None, everything: bool, dry_run: bool) -> list[Recovery]:
        return recover.recover_once(p, name, everything, dry_run, self._finish_coordinated)

    def _finish_coordinated(self, it: IntentRecord) -> tuple[str, str]:
        from .migrations import queue
        return queue.finish(self.gate_context(), it)

    def gate_context(self) -> "GateContext":
        """What the migration gate works with (never this whole object)."""
        from .migrations.context import GateContext
        return GateContext.from_project(self, advance=self.advance)

    # -- the lifecycle --------------------------------------------------------------------------
    def init(self, *, strategy: str | None = None, runtime: str | None = None,
             migrations: str | None = None) -> InitResult:
        """Write sandbox.toml if absent, create .sandbox/ and build the baseline."""
        return baseline.init(self, strategy=strategy, runtime=runtime, migrations=migrations)

    def build_baseline(self) -> None:
        baseline.build_baseline(self)

    def db_baseline(self, *, refresh: bool = False, import_file: Path | None = None) -> BaselineResult:
        """Rebuild the baseline from main, or load a dump into it."""
        return baseline.db_baseline(self, refresh=refresh, import_file=import_file)

    def up(self, names: Sequence[str], *, from_ref: str | None = None, container: bool = True,
           brief: str | None = None) -> list[UpResult]:
        """Create workspaces (or start them again); several are created concurrently; ``brief``: each one's."""
        results = lifecycle.up(self, names, from_ref=from_ref, container=container)
        if brief is not None:
            self.set_brief([r.name for r in results if r.ok], brief)
        return results

    def advance(self, rec: WorkspaceRecord, commit: str) -> None:
        """Fast-forward the workspace's checkout to ``commit`` (made for it in main's repository)."""
        lifecycle.advance(self, rec, commit)

    def recopy(self, rec: WorkspaceRecord) -> list[str]:
        """``[workspace] copy`` again (``sync``, ``rebase``): generated, git-ignored files of main's checkout."""
        return lifecycle.recopy(self, rec)

    def stop(self, name: str) -> None:
        """Stop the containers; keep everything."""
        lifecycle.stop(self, name)

    def rm(self, name: str, *, force: bool = False, delete_branch: bool = False) -> RmResult:
        """Remove the container, database and worktree (refuses to lose work unless force)."""
        result = remove.rm(self, name, force=force, delete_branch=delete_branch)
        Requests(self.registry).forget(name)
        return result

    def deinit(self, *, force: bool = False, resume: str | None = None, keep_images: bool = False) -> DeinitResult:
        """Remove every workspace, the baseline, the servers, the storage pool, ``.sandbox/`` and the
        project images sandbox built (unless ``keep_images``)."""
        return remove.deinit(self, force=force, resume=resume, keep_images=keep_images)

    # -- reading ----------------------------------------------------------------------------------
    def ls(self) -> list[WorkspaceInfo]:
        """Every workspace and its state (JSON shape of the contract; no secrets)."""
        return inspection.ls(self, self._summaries, briefs=Requests(self.registry).briefs())

    def _summaries(self, recs: list[WorkspaceRecord]) -> list[dict[str, Any]]:
        """The gate's migration summary of each workspace, batched (one git call for every branch)."""
        from .migrations import status
        found = status.summaries(self.gate_context(), recs)
        return [found[rec.name].to_json() for rec in recs]

    def env(self, name: str) -> dict[str, str]:
        """The workspace's environment as seen from the host."""
        return inspection.env(self, name)

    def compose(self, name: str, args: Sequence[str]) -> int:
        """``docker compose ARGS`` for the workspace's own stack ([compose]); compose's exit code."""
        return stacks.passthrough(self, name, args)

    def exec(self, name: str, argv: Sequence[str], *, interactive: bool = False,
             output: OutputSink | None = None, errors: OutputSink | None = None) -> int:
        """Run argv in the workspace and return its exit code (``output``/``errors``: where its streams go)."""
        return inspection.exec_in(self, name, argv, interactive=interactive, output=output, errors=errors)

    def git_command(self, name: str, args: Sequence[str]) -> int:
        """git ARGS in the workspace's checkout (inside its container for a Docker workspace); git's exit code."""
        return inspection.git_in(self, name, args)

    def shell(self, name: str) -> int:
        return inspection.shell(self, name)

    def conninfo(self, name: str) -> ConnInfo:
        return super().conninfo(name)

    def db_url(self, name: str) -> str:
        return inspection.db_url(self, name)

    def db_psql(self, name: str) -> int:
        """Run psql against the workspace's database (the host's psql, else the workspace's); its exit code."""
        return inspection.db_psql(self, name)

    # -- a workspace's database over time ------------------------------------------------------------
    def db_reset(self, name: str) -> ResetResult:
        """The database becomes a fresh clone of the baseline (what it replaces is kept as ``auto-…``)."""
        return checkpoints.reset(self, name)

    def db_checkpoint(self, name: str, label: str, *, force: bool = False) -> CheckpointInfo:
        """Save the database as checkpoint ``label``; an existing label is replaced only with ``force``."""
        return checkpoints.checkpoint(self, name, label, force=force)

    def db_restore(self, name: str, label: str) -> None:
        """The database becomes checkpoint ``label``; the state it replaces is kept as ``auto-…``."""
        checkpoints.restore(self, name, label)

    def db_drop_checkpoint(self, name: str, label: str) -> None:
        checkpoints.drop_checkpoint(self, name, label)

    def db_checkpoints(self, name: str) -> list[CheckpointInfo]:
        return checkpoints.checkpoints(self, name)

    def prune_auto(self, name: str) -> None:
        checkpoints.prune_auto(self, name)

    # -- migrations (the gate) -----------------------------------------------------------------------
    def migrate_status(self) -> "MigrateStatus":
        from .migrations import status
        self.registry  # noqa: B018 - a damaged registry is an error here too, migrations or not
        if None not in self._recovered:
            self.recover(None)
        return status.status(self.gate_context())

    def migrate_check(self, name: str) -> "Report":
        from .migrations import gate
        try:
            report = gate.check(self.gate_context(), name)
        except SandboxError:
            if self.registry.get(name) is None:      # removed while it was being checked
                raise UnknownWorkspace(name) from None
            raise
        self._remember_gate(name, report)
        return report

    def _remember_gate(self, name: str, report: "Report") -> None:
        """The gate's verdict on the commit it judged, for ``overview`` (pass/fail/stale)."""
        from .overview import gates
        gates.record(self.registry, name, report.judged, report.to_json())

    def migrate_rebase(self, name: str) -> "RebaseResult":
        from .migrations import sync
        return sync.rebase(self.gate_context(), name)

    def merge(self, name: str, *, dry_run: bool = False, allow_destructive: str | None = None) -> "Report":
        from .migrations import queue
        report = queue.merge(self.gate_context(), name, dry_run=dry_run, allow_destructive=allow_destructive)
        self._remember_gate(name, report)
        if report.merged:
            Requests(self.registry).close(name, f"merged {report.commit or ''}".strip())
        return report

    def sync(self, name: str) -> "SyncResult":
        from .migrations import sync
        return sync.sync(self.gate_context(), name)

    # -- agents: migrate up, briefs, merge requests (sandbox/migrations/up.py, sandbox/requests.py) ------
    def migrate_up(self, name: str, to: str | None = None) -> MigrateUpResult:
        """Apply the workspace's own revisions to its own database (verified)."""
        return migrate_up(self, name, to)

    def set_brief(self, names: Sequence[str], text: str | None) -> None:
        """Set (blank: clear) the brief of each workspace."""
        for n in names:
            self.record(n)
        for n in names:
            Requests(self.registry).set_brief(n, text)

    def brief(self, name: str) -> str | None:
        self.record(name)
        return Requests(self.registry).brief(name)

    def merge_request(self, name: str, note: str | None = None) -> MergeRequestResult:
        """Run the gate and record a request for a person to merge; never moves main."""
        return request_merge(self, name, note)

    def merge_requests(self) -> list[MergeRequest]:
        """The open merge requests, marked stale once their branch moved."""
        def current(rec: WorkspaceRecord) -> str | None:
            self.collect(rec)
            return self.git.rev(f"refs/heads/{rec.branch}")
        return open_requests(self.registry, current)

    # -- the bird's-eye view (sandbox/overview/) -------------------------------------------------------
    def overview(self, *, workspace: str | None = None) -> "Overview":
        """Every workspace against main and every pair against each other; ``workspace``: only the
        pairs that involve it (the MCP tool's view)."""
        from .overview import sources
        return sources.overview(self, workspace=workspace)

    def review(self, name: str) -> dict[str, Any]:
        """What a reviewer needs before merging ``name`` (the dashboard's workspace page)."""
        from .overview import sources
        return sources.review(self, name)

    def watched_paths(self) -> list[Path]:
        """What the overview reads: main's refs and index, the registry, every worktree."""
        from .overview import sources
        return sources.watched_paths(self)

    # -- storage, gc, doctor -----------------------------------------------------------------------
    def storage_init(self, size: str | None = None) -> StorageResult:
        """Make the copy-on-write pool for snapshot clones (a loop-mounted btrfs image; needs root)."""
        return baseline.storage_init(self, size)

    def storage_grow(self, size: str) -> GrowResult:
        """Grow the loop-mounted copy-on-write pool to SIZE (or by +SIZE); needs root."""
        return baseline.storage_grow(self, size)

    def gc(self, *, dry_run: bool = False, trust_registry: bool = False) -> list[GcAction]:
        """Find what the registry does not know, and repair what a crash left half-done."""
        return gc_collect(self, dry_run=dry_run, trust=trust_registry)

    def doctor(self, *, repair: bool = False) -> list[Check]:
        return run_checks(self, repair=repair)


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return str(os.getuid())
