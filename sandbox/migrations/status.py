"""``migrate status``: every workspace's new revisions, how far behind main it is, and the conflicts
between workspaces, read from main's repository.

Batched for many workspaces: the branches are resolved in one git call, and workspaces whose
branches carry the same migrations (the same git trees of the migration folders) share one export
and one reading of their revisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import SandboxError
from ..registry import WorkspaceRecord
from .context import GateContext
from .trees import behind_count, chain_order, roots


@dataclass
class MigrationSummary:
    """One workspace's migrations compared with main's (``ls``'s and ``migrate status``'s row)."""

    head: str | None = None
    base_head: str | None = None
    new: list[str] = field(default_factory=list)
    behind: int = 0
    heads: list[str] | None = None            # None: the branch has no migrations to read
    root_revises: str | None = None
    error: str | None = None
    name: str | None = None
    conflicts: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"head": self.head, "base_head": self.base_head, "new": list(self.new),
                             "behind": self.behind}
        if self.heads is not None:
            d.update(heads=list(self.heads), root_revises=self.root_revises)
        if self.error is not None:
            d["error"] = self.error
        if self.name is not None:
            d["name"] = self.name
        if self.conflicts is not None:
            d["conflicts"] = list(self.conflicts)
        return d


@dataclass
class MigrateStatus:
    """``migrate status``: main's heads, the baseline's head, and every workspace's summary."""

    main_head: str | None
    main_heads: list[str]
    baseline_head: str | None
    workspaces: list[MigrationSummary]
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"main_head": self.main_head, "main_heads": list(self.main_heads),
                             "baseline_head": self.baseline_head, "workspaces": [w.to_json() for w in self.workspaces]}
        if self.message is not None:
            d["message"] = self.message
        return d


def workspace_summary(ctx: GateContext, rec: WorkspaceRecord,
                      memo: dict[Path, MigrationSummary] | None = None) -> MigrationSummary:
    """``rec``'s committed migrations compared with main's (errors become the summary's ``error``).
    ``memo``: summaries by the tree read, shared by workspaces whose branches carry the same migrations."""
    try:
        if not ctx.enabled():
            return MigrationSummary()
        main_revs, main_heads = ctx.trees.main()
        main_head = main_heads[0] if len(main_heads) == 1 else None
        tree = ctx.trees.revisions_tree(rec)
        if memo is not None and tree in memo:       # the same migrations, read already
            return replace(memo[tree])
        if tree is None or not tree.exists() or not ctx.tool.available(tree):
            return MigrationSummary(base_head=main_head)
        ws_heads = ctx.tool.heads(tree)
        new = chain_order({k: v for k, v in ctx.tool.revisions(tree).items() if k not in main_revs})
        starts = roots(new)
        if starts:
            base = starts[0].down_revisions[0] if starts[0].down_revisions else None
        else:
            base = ws_heads[0] if len(ws_heads) == 1 else None
        summary = MigrationSummary(head=ws_heads[0] if len(ws_heads) == 1 else None, heads=ws_heads,
                                   base_head=main_head, new=[r.id for r in new], root_revises=base,
                                   behind=behind_count(main_revs, main_head, base))
        if memo is not None:
            memo[tree] = replace(summary)
        return summary
    except SandboxError as exc:
        return MigrationSummary(error=str(exc))


def summaries(ctx: GateContext, recs: list[WorkspaceRecord]) -> dict[str, MigrationSummary]:
    """Every workspace's summary (``ls``), batched: call after collecting them (their branches are
    read in one git call, and the same migrations are read once)."""
    ctx.trees.read_branches([rec.branch for rec in recs])
    memo: dict[Path, MigrationSummary] = {}
    return {rec.name: workspace_summary(ctx, rec, memo) for rec in recs}


def status(ctx: GateContext) -> MigrateStatus:
    """Every workspace's summary and its conflicts with main and with the other workspaces."""
    if not ctx.enabled():
        return MigrateStatus(None, [], None, [],
                             message=f"no {ctx.config.migrations.config}: migrations are not coordinated")
    main_revs, main_heads = ctx.trees.main()
    recs = ctx.registry.all()
    # batched (only repositories whose refs main lacks are fetched); a workspace that cannot be
    # read keeps its summary of what it can: its branch is read as it was
    ctx.repos.collect_many([(rec.name, Path(rec.path), rec.branch) for rec in recs
                            if ctx.isolated(rec) and Path(rec.path).exists()])
    rows = []
    by_base: dict[str, list[str]] = {}
    by_rev: dict[str, list[str]] = {}
    for rec, s in zip(recs, summaries(ctx, recs).values()):
        s.name = rec.name
        rows.append(s)
        if s.new:
            by_base.setdefault(str(s.root_revises), []).append(rec.name)
            for rid in s.new:
                by_rev.setdefault(rid, []).append(rec.name)
    for s in rows:
        s.conflicts = _conflicts(s, main_revs, by_base, by_rev)
    return MigrateStatus(main_head=main_heads[0] if len(main_heads) == 1 else None, main_heads=main_heads,
                         baseline_head=ctx.registry.get_meta("baseline_head") or None, workspaces=rows)


def _conflicts(s: MigrationSummary, main_revs: Any, by_base: dict[str, list[str]],
               by_rev: dict[str, list[str]]) -> list[str]:
    conflicts: list[str] = []
    heads = s.heads or []
    if len(heads) > 1:
        conflicts.append(f"{len(heads)} heads in the workspace")
    parent = s.root_revises
    if s.new and parent and parent not in main_revs and parent not in s.new:
        conflicts.append(f"its first revision revises {parent}, which neither main nor the workspace "
                         f"defines: run `sandbox migrate rebase {s.name}`")
    elif s.new and s.behind:
        conflicts.append(f"behind main by {s.behind}: run `sandbox migrate rebase {s.name}`")
    peers = [n for n in by_base.get(str(s.root_revises), []) if n != s.name]
    if s.new and peers:
        conflicts.append(f"builds on the same head as {', '.join(peers)}: whoever merges second must rebase")
    for rid in s.new:
        dup = [n for n in by_rev.get(rid, []) if n != s.name]
        if dup:
            conflicts.append(f"revision id {rid} also created in {', '.join(dup)}")
    return conflicts
