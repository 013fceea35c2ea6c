"""What a workspace's checkout holds beyond its branch (uncommitted work, stashes, other branches,
a detached HEAD), typed by the git door's :class:`~sandbox.git.UnsavedKind`, and which commit it
has out. Read from main's side: never by running git in a workspace's own repository on the host."""

from __future__ import annotations

from pathlib import Path

from ..errors import SandboxError
from ..git import Unsaved
from ..registry import WorkspaceRecord
from .context import GateContext


def unsaved_work(ctx: GateContext, rec: WorkspaceRecord) -> list[Unsaved]:
    """What the workspace's checkout holds beyond its branch, typed (never the judged tree)."""
    path = Path(rec.path)
    if ctx.isolated(rec):
        return ctx.repos.find_unsaved(rec.name, path, rec.branch, ignore=ctx.ws.managed_files())
    return ctx.git.find_unsaved(path, ignore=ctx.ws.managed_files())


def uncommitted(found: list[Unsaved]) -> list[Unsaved]:
    """Uncommitted changes and untracked files (not a stash, another branch or a detached HEAD)."""
    return [u for u in found if u.kind.uncommitted]


def subject(u: Unsaved) -> str:
    """The path, commit or branch ``u`` is about (its line when it names none)."""
    return u.subject or u.what


def checkout_head(ctx: GateContext, rec: WorkspaceRecord) -> str | None:
    """The commit the workspace's checkout has out (its HEAD, as last collected)."""
    if ctx.isolated(rec):
        return ctx.repos._resolve(f"{ctx.repos.prefix(rec.name)}HEAD")
    try:
        return ctx.git.head(Path(rec.path))
    except SandboxError:
        return None
