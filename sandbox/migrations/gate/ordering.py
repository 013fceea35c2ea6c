"""The gate's first check: main has one head, and the new revisions form one linear chain whose
root revises main's head, with ids no other workspace also created."""

from __future__ import annotations

from typing import Mapping, Protocol

from ...errors import SandboxError
from ...registry import WorkspaceRecord
from ..base import Revision
from ..context import GateContext
from ..findings import Finding
from ..trees import behind_count, roots


class _Add(Protocol):
    def __call__(self, rule: str, msg: str, rev: str | None = None) -> None: ...


def ordering(ctx: GateContext, rec: WorkspaceRecord, main_revs: Mapping[str, Revision], main_heads: list[str],
             new: list[Revision]) -> list[Finding]:
    """Every ordering finding of ``rec``'s new revisions (``new``, oldest first)."""
    out: list[Finding] = []

    def f(rule: str, msg: str, rev: str | None = None) -> None:
        out.append(Finding(rule=rule, kind="ordering", severity="error", message=msg, revision=rev))

    if len(main_heads) > 1:
        f("main-multiple-heads", f"main has {len(main_heads)} heads ({', '.join(main_heads)}); "
          "merge them on main first")
    tree = ctx.trees.tree(rec)
    ws_heads = ctx.tool.heads(tree)
    if len(ws_heads) > 1:
        f("multiple-heads", f"the workspace has {len(ws_heads)} heads ({', '.join(ws_heads)}); "
          "its revisions must form one chain")
    for rid, rev in ctx.tool.revisions(tree).items():
        if rid in main_revs and rev.down_revisions != main_revs[rid].down_revisions:
            f("duplicate-revision-id", f"revision id {rid} exists on main with a different parent", rid)
    _shape(rec.name, new, f)
    main_head = main_heads[0] if len(main_heads) == 1 else None
    for root in roots(new):
        parent: str | None = root.down_revisions[0] if root.down_revisions else None
        if parent is not None and parent not in main_revs and not root.is_merge:
            f("missing-parent", f"{root.id} revises {parent}, which neither main nor the workspace defines: "
              f"run `sandbox migrate rebase {rec.name}` to put it on main's head {main_head or ''}".rstrip(), root.id)
        elif main_head and parent != main_head and not root.is_merge:
            behind = behind_count(main_revs, main_head, parent)
            f("behind", f"{root.id} revises {parent or 'nothing'}, but main's head is {main_head} "
              f"({behind} revision(s) ahead): run `sandbox migrate rebase {rec.name}`", root.id)
    out.extend(_duplicates_elsewhere(ctx, rec, main_revs, new))
    return out


def _shape(name: str, new: list[Revision], f: "_Add") -> None:
    """Merge revisions, branch points and several roots among the new revisions."""
    for rev in new:
        if rev.is_merge:
            f("merge-revision", f"{rev.id} is a merge revision; rebase instead so the history stays linear "
              f"(`sandbox migrate rebase {name}`)", rev.id)
    children: dict[str, list[str]] = {}
    for rev in new:
        for d in rev.down_revisions:
            children.setdefault(d, []).append(rev.id)
    for fork, kids in children.items():
        if len(kids) > 1:
            f("branch-point", f"{fork} has {len(kids)} children among the new revisions "
              f"({', '.join(kids)}); make them one chain", fork)
    starts = roots(new)
    if len(starts) > 1:
        f("multiple-roots", f"the new revisions start from {len(starts)} roots "
          f"({', '.join(r.id for r in starts)})")


def _duplicates_elsewhere(ctx: GateContext, rec: WorkspaceRecord, main_revs: Mapping[str, Revision],
                          new: list[Revision]) -> list[Finding]:
    out: list[Finding] = []
    for other in ctx.registry.all():
        if other.name == rec.name:
            continue
        try:
            theirs = {r.id for r in ctx.trees.new_revisions(other, main_revs)}
        except SandboxError:
            continue       # another workspace's broken history is its own problem, not this gate's
        out.extend(Finding(rule="duplicate-revision-id", kind="ordering", severity="error", revision=rev.id,
                           message=f"revision id {rev.id} was also created in workspace {other.name!r}")
                   for rev in new if rev.id in theirs)
    return out
