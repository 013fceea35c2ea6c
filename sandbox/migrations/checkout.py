"""What a workspace's checkout holds beyond its branch (uncommitted work, stashes, other branches,
a detached HEAD), typed, and which commit it has out. Read through main's side of the git door:
never by running git in a workspace's own repository on the host."""

from __future__ import annotations

from pathlib import Path

from ..errors import SandboxError
from ..registry import WorkspaceRecord
from ..worktrees import UNCOMMITTED, Unsaved, kind_of
from .context import GateContext


def unsaved_work(ctx: GateContext, rec: WorkspaceRecord) -> list[Unsaved]:
    """What the workspace's checkout holds beyond its branch, typed (never the judged tree)."""
    path = Path(rec.path)
    if ctx.isolated(rec):
        found = ctx.repos.unsaved(rec.name, path, rec.branch, ignore=ctx.ws.managed_files())
        return [u if isinstance(u, Unsaved) else Unsaved(u, "changed", u) for u in found]
    return [typed_status(ln) for ln in ctx.git.dirty(path, ignore=ctx.ws.managed_files())]


def uncommitted(found: list[Unsaved]) -> list[Unsaved]:
    """Uncommitted changes and untracked files (not a stash, another branch or a detached HEAD)."""
    return [u for u in found if kind_of(u) in UNCOMMITTED]


def checkout_head(ctx: GateContext, rec: WorkspaceRecord) -> str | None:
    """The commit the workspace's checkout has out (its HEAD, as last collected)."""
    if ctx.isolated(rec):
        return ctx.repos._resolve(f"{ctx.repos.prefix(rec.name)}HEAD")
    try:
        return ctx.git.head(Path(rec.path))
    except SandboxError:
        return None


def typed_status(line: str) -> Unsaved:
    """A ``git status --porcelain`` line (or :meth:`Worktrees.dirty`'s stash line) with its kind."""
    if line.startswith("stash:"):
        return Unsaved(line, "stash")
    if line.startswith("??"):
        return Unsaved(line, "untracked", line[3:])
    return Unsaved(line, "changed", line[3:])
