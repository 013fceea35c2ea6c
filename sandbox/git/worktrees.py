"""The worktrees of ``runtime = "none"`` workspaces: checkouts of the user's own, on the host.

git runs in them (they are the user's, like main), but with hooks and fsmonitor off where only
a question is asked (:meth:`Worktrees.find_unsaved`).
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import hostfs
from ..errors import UnsafeToTell, WorkspaceError
from .main import MainRepo
from .runner import LONG, GitTimedOut, call, failure, git_timeout
from .unsaved import Unsaved, from_porcelain, stash

# The reason git gives for the lock it holds on a new worktree while `git worktree add` runs
# (untranslated: sandbox runs git with LC_ALL=C, so that this word and git's messages can be read).
INITIALIZING = "initializing"


def _killed_add(attrs: dict[str, str]) -> bool:
    """A worktree's ``git worktree list`` attributes say that its add never finished."""
    return attrs.get("locked") == INITIALIZING


def _branches(listing: dict[Path, dict[str, str]]) -> dict[Path, str | None]:
    """Worktree path → its branch (None when detached), from :meth:`Worktrees._listing`."""
    return {path: attrs["branch"].removeprefix("refs/heads/") if "branch" in attrs else None
            for path, attrs in listing.items()}


class Worktrees(MainRepo):
    """The main checkout and the worktrees sandbox creates from it."""

    def head(self, path: Path) -> str | None:
        """The commit checked out in the worktree at ``path`` (git's own listing, read in main)."""
        return self._listing().get(path.resolve(), {}).get("HEAD")

    def _listing(self) -> dict[Path, dict[str, str]]:
        """``git worktree list --porcelain``: path → its attributes (``branch``, ``locked``, …)."""
        res = self._git("worktree", "list", "--porcelain")
        for attempt in range(10):
            # another process's `git worktree add` may be half-way through writing .git/worktrees/<name>/
            # ("failed to read .git/worktrees/x/commondir"): read again once it has finished
            if res.returncode == 0 or "worktrees/" not in res.stderr:
                break
            time.sleep(0.05 * (attempt + 1))
            res = self._git("worktree", "list", "--porcelain")
        if res.returncode != 0:
            raise WorkspaceError(f"git worktree list failed: {failure(res)}")
        out: dict[Path, dict[str, str]] = {}
        attrs: dict[str, str] | None = None
        for line in res.stdout.splitlines():
            if line.startswith("worktree "):
                attrs = out[Path(line[9:]).resolve()] = {}
            elif line and attrs is not None:
                key, _, value = line.partition(" ")
                attrs[key] = value
        return out

    def registered(self) -> dict[Path, str | None]:
        """Worktrees git knows about: path → branch (None when detached). Read under the worktree
        lock: a concurrent `git worktree add` leaves half-written entries that the listing trips on."""
        with self._locked():
            return _branches(self._listing())

    def initializing(self, path: Path) -> bool:
        """Whether ``git worktree add`` of ``path`` was killed before it finished: git locks a
        new worktree ("initializing") until its checkout is complete. Such a worktree holds
        nothing of anybody's: its files are a partial checkout (they show as deleted)."""
        return _killed_add(self._listing().get(path.resolve(), {}))

    # -- lifecycle --------------------------------------------------------------------------
    def add(self, path: Path, branch: str, from_ref: str | None) -> bool:
        """Create (or reuse) the worktree at ``path`` on ``branch``; True if the branch was created."""
        with self._locked():
            return self._add(path.resolve(), branch, from_ref)

    def _add(self, path: Path, branch: str, from_ref: str | None) -> bool:
        listing = self._listing()
        if path in listing and _killed_add(listing[path]):   # make it afresh
            self._remove(path)
            del listing[path]
        known = _branches(listing)
        if path in known:
            if known[path] != branch:
                raise WorkspaceError(f"{path} is a worktree of branch {known[path]!r}, not {branch!r}")
            return False
        for p, b in known.items():
            if b == branch:
                raise WorkspaceError(f"branch {branch!r} is already checked out at {p}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.branch_exists(branch):
            args, created = ["worktree", "add", str(path), branch], False
        else:
            start = from_ref or self.main_branch()
            self.rev(start)
            args, created = ["worktree", "add", "-b", branch, str(path), start], True
        res = self._git(*args, timeout=git_timeout() * LONG)
        if res.returncode != 0:
            raise WorkspaceError(f"git worktree add failed: {failure(res)}")
        return created

    def remove(self, path: Path) -> None:
        with self._locked():
            self._remove(path.resolve())

    def _remove(self, path: Path) -> None:
        listing = self._listing()
        if path in listing:
            if _killed_add(listing[path]):
                # A killed add: git may not recognise the half-made tree as its own, and prune
                # skips locked entries. Unlock it; the directory goes below, prune does the rest.
                self._git("worktree", "unlock", str(path))
            else:
                res = self._git("worktree", "remove", "--force", "--force", str(path), timeout=git_timeout() * LONG)
                if res.returncode != 0:
                    raise WorkspaceError(f"git worktree remove failed: {failure(res)}")
        hostfs.remove_tree(path)
        self._prune()

    def prune(self) -> None:
        with self._locked():
            self._prune()

    def _prune(self) -> None:
        try:                                  # best effort: a failed prune leaves entries gc retries
            self._git("worktree", "prune")
        except GitTimedOut:
            pass

    # -- safety -----------------------------------------------------------------------------
    def find_unsaved(self, path: Path, ignore: tuple[str, ...] = ()) -> list[Unsaved]:
        """Uncommitted changes, untracked files and stash entries of the worktree at ``path``,
        ignoring paths in ``ignore``.

        Fails closed: when git cannot answer, this raises (:class:`UnsafeToTell`) instead of
        answering "clean". A worktree whose `git worktree add` was killed has no changes: its
        missing files are git's, not anybody's work. Only for worktrees of the user's own
        (``runtime = "none"``): an isolated workspace is asked through ``IsolatedRepos``.
        """
        if not path.exists():
            return []
        out = call(path, "status", "--porcelain", "--untracked-files=all", trusted=False)
        if out.returncode != 0:
            raise UnsafeToTell(f"git status failed in {path}: {failure(out)}")
        changes = [from_porcelain(ln) for ln in out.stdout.splitlines() if ln[3:] not in ignore]
        # only a tree that shows changes can be a killed add: the clean case costs no more calls
        if changes and self.initializing(path):
            return []
        if call(path, "rev-parse", "-q", "--verify", "refs/stash", trusted=False).returncode == 0:
            changes.append(stash("worktree"))
        return changes

    def dirty(self, path: Path, ignore: tuple[str, ...] = ()) -> list[str]:
        """:meth:`find_unsaved` as the lines people read (``XY path``, ``stash: …``).
        Deprecated: decide on :meth:`find_unsaved`'s kinds."""
        return [u.what for u in self.find_unsaved(path, ignore)]
