"""Bringing a workspace's checkout to a commit sandbox made for it in main's repository.

A Docker workspace's repository is untrusted, so its fast-forward runs *inside* its container,
through the runtime's exec (passed in as a callable: this package knows nothing of runtimes).
A ``runtime = "none"`` worktree is the user's own and is fast-forwarded on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import WorkspaceError
from .runner import call

# exec(argv, output) -> exit code: runs argv in the workspace's container, each output line to ``output``
ExecFn = Callable[[Sequence[str], Callable[[str], None]], int]

# On the workspace's branch: fast-forward the checkout. Elsewhere (the agent checked out another
# branch): move only the branch, leaving the agent's checkout alone.
_SCRIPT = ('if [ "$(git symbolic-ref -q --short HEAD)" = "$1" ]; then exec git merge --ff-only -q "$2"; '
           'else exec git update-ref "refs/heads/$1" "$2"; fi')


def fast_forward_in(exec: ExecFn, name: str, branch: str, commit: str) -> None:
    """Fast-forward workspace ``name``'s checkout (or only ``branch``, when another branch is
    checked out) to ``commit``, inside its container. :class:`WorkspaceError` when git refuses."""
    lines: list[str] = []
    code = exec(["sh", "-c", _SCRIPT, "sh", branch, commit], lines.append)
    if code != 0:
        raise WorkspaceError(f"could not bring workspace {name!r} to {commit[:12]}: "
                             + (" | ".join(lines[-3:]) or f"git exited {code}"))


def fast_forward(path: Path | str, name: str, commit: str) -> None:
    """Fast-forward the ``runtime = "none"`` worktree at ``path`` to ``commit`` (on the host)."""
    res = call(path, "merge", "--ff-only", "-q", commit, trusted=True)
    if res.returncode != 0:
        raise WorkspaceError(f"could not bring workspace {name!r} to {commit[:12]}: "
                             f"{(res.stderr or res.stdout).strip()}")
