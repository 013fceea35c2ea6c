"""Main's repository and checkout (trusted: the user's own).

Plain ``git`` through :mod:`.runner` for what ``sandbox up`` and every command probe (importing
GitPython costs 0.1-0.16 s on a 2-core machine); GitPython, loaded on first use, only to *read*
main's repository (:attr:`MainRepo.repo`). Reads of many branches are batched:
:meth:`MainRepo.branch_shas` (one ``for-each-ref``) and :meth:`MainRepo.ahead_behind` (three
processes for any number of branches).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import hostfs
from ..host import file_lock
from ..errors import UnsafeToTell, UsageError, WorkspaceError
from .files import copy_into
from .runner import call, failure

if TYPE_CHECKING:
    import git


def find_project_root(start: Path) -> Path | None:
    """The main checkout owning ``start``: walks up to a git checkout; a worktree maps to its main.

    Inside a workspace (anything under a checkout's ``.sandbox/``) the answer comes from the path
    alone: a Docker workspace's repository is untrusted, and git is never run inside it.
    """
    if not start.is_dir():
        return None
    for parent in (start, *start.parents):
        if parent.name == ".sandbox" and (parent.parent / ".git").is_dir():
            return parent.parent.resolve()
    res = call(start, "rev-parse", "--path-format=absolute", "--git-common-dir", "--show-toplevel", trusted=True)
    lines = res.stdout.splitlines()
    if res.returncode != 0 or not lines:
        return None
    common = Path(lines[0])
    if common.name == ".git":
        main = common.parent
    elif len(lines) > 1:
        main = Path(lines[1])
    else:
        return None       # a bare repository: no checkout to work from
    return main.resolve()


@dataclass(frozen=True)
class AheadBehind:
    """A branch against main: commits it has that main lacks, and main's commits it lacks."""

    ahead: int
    behind: int

    def to_json(self) -> dict[str, int]:
        return {"ahead": self.ahead, "behind": self.behind}


class MainRepo:
    """The main checkout and its repository: facts, branches, and files copied from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        res = self._git("rev-parse", "--path-format=absolute", "--git-common-dir")
        if res.returncode != 0 or not res.stdout.strip():
            raise UsageError(f"{root} is not a git repository")
        self.common_dir = Path(res.stdout.strip()).resolve()
        self._repo: git.Repo | None = None

    def _git(self, *args: str, timeout: float | None = None) -> Any:
        """git in main's checkout (trusted: the user's own hooks and config apply)."""
        return call(self.root, *args, trusted=True, timeout=timeout)

    @property
    def repo(self) -> git.Repo:
        """GitPython's view of main's repository (loaded on first use), for reading only: every
        change to a repository goes through :mod:`.runner`."""
        if self._repo is None:
            import git
            self._repo = git.Repo(self.root)
        return self._repo

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise worktree bookkeeping: concurrent `git worktree add` calls read each
        other's half-written `.git/worktrees/*` entries and fail."""
        with file_lock(self.common_dir / "sandbox-worktrees.lock", mode=0o644):
            yield

    # -- facts ----------------------------------------------------------------------------
    def main_branch(self) -> str:
        """The branch checked out in the main checkout."""
        res = self._git("symbolic-ref", "--short", "-q", "HEAD")
        if res.returncode != 0 or not res.stdout.strip():
            raise WorkspaceError("the main checkout has a detached HEAD; check out your main branch")
        return str(res.stdout.strip())

    def behind(self, branch: str) -> int:
        """How many commits of main ``branch`` lacks (0 when it does not exist or git cannot say)."""
        res = self._git("rev-list", "--count", f"refs/heads/{branch}..{self.main_branch()}")
        try:
            return int(res.stdout.strip()) if res.returncode == 0 else 0
        except ValueError:
            return 0

    def identity(self) -> dict[str, str]:
        """``user.name``/``user.email`` from git's config, as far as they are set."""
        res = self._git("config", "--get-regexp", r"^user\.(name|email)$")
        found: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, _, value = line.partition(" ")
            found[key.removeprefix("user.")] = value
        return found

    # Refs are read with plain git commands: GitPython's object database keeps one
    # `git cat-file` process per Repo, which is not safe across threads (`up a b c`).
    def has_commits(self) -> bool:
        return bool(self._git("rev-parse", "--verify", "-q", "HEAD^{commit}").returncode == 0)

    def branch_exists(self, branch: str) -> bool:
        return bool(self._git("show-ref", "--verify", "--quiet", f"refs/heads/{branch}").returncode == 0)

    def rev(self, ref: str) -> str:
        if ref.startswith("-"):
            raise UsageError(f"unknown git ref {ref!r}")
        res = self._git("rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if res.returncode != 0 or not res.stdout.strip():
            raise UsageError(f"unknown git ref {ref!r}")
        return str(res.stdout.strip())

    def unmerged(self, branch: str, into: str | None = None) -> list[str]:
        """Commits on ``branch`` that are not on main (fails closed: raises if git cannot tell)."""
        if not self.branch_exists(branch):
            return []
        target = into or self.main_branch()
        res = self._git("rev-list", f"{target}..refs/heads/{branch}")
        if res.returncode != 0:
            raise UnsafeToTell(f"cannot list the commits of {branch!r}: {failure(res)}")
        return list(res.stdout.split())

    def delete_branch(self, branch: str) -> None:
        if self.branch_exists(branch):
            res = self._git("branch", "-D", branch)
            if res.returncode != 0:
                raise WorkspaceError(f"cannot delete branch {branch!r}: {failure(res)}")

    # -- many branches at once ----------------------------------------------------------------
    def branch_shas(self, branches: Iterable[str] | None = None) -> dict[str, str]:
        """Branch → the commit it points at, for every branch (or those of ``branches`` that
        exist): one ``git for-each-ref``."""
        res = self._git("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
        if res.returncode != 0:
            raise WorkspaceError(f"cannot list branches: {failure(res)}")
        found: dict[str, str] = {}
        for line in res.stdout.splitlines():
            sha, _, ref = line.partition(" ")
            found[ref.removeprefix("refs/heads/")] = sha
        if branches is None:
            return found
        return {b: found[b] for b in branches if b in found}

    def ahead_behind(self, branches: Iterable[str], base: str | None = None) -> dict[str, AheadBehind]:
        """Each existing branch of ``branches`` against ``base`` (main's branch by default), in a
        fixed number of git processes whatever their count (git 2.39 has no
        ``%(ahead-behind)``): ``for-each-ref``; ``merge-base --octopus`` of every tip, below
        which no commit counts for either side; one ``rev-list --topo-order --parents`` of the
        commits above it, whose reachability from each tip is propagated here as bit sets."""
        shas = self.branch_shas()
        base_name = base or self.main_branch()
        base_sha = shas.get(base_name) or self.rev(base_name)
        tips = {b: shas[b] for b in branches if b in shas}
        unique = sorted(set(tips.values()) | {base_sha})
        if len(unique) == 1:
            return {b: AheadBehind(0, 0) for b in tips}
        mb = self._git("merge-base", "--octopus", *unique)
        stop = mb.stdout.split()[:1] if mb.returncode == 0 else []   # unrelated histories: none
        spec = "".join(f"{s}\n" for s in unique) + "".join(f"^{s}\n" for s in stop)
        res = call(self.root, "rev-list", "--topo-order", "--parents", "--stdin", trusted=True, input=spec)
        if res.returncode != 0:
            raise WorkspaceError(f"cannot compare branches with main: {failure(res)}")
        bit = {sha: 1 << i for i, sha in enumerate(unique)}
        masks: dict[str, int] = dict(bit)
        listed: list[int] = []
        for line in res.stdout.splitlines():     # children before their parents
            sha, *parents = line.split()
            m = masks.get(sha, 0)
            listed.append(m)
            for p in parents:
                masks[p] = masks.get(p, 0) | m
        main_bit = bit[base_sha]
        ahead = dict.fromkeys(unique, 0)
        behind = dict.fromkeys(unique, 0)
        for m in listed:
            in_main = bool(m & main_bit)
            for sha, b in bit.items():
                if m & b and not in_main:
                    ahead[sha] += 1
                elif in_main and not m & b:
                    behind[sha] += 1
        return {b: AheadBehind(ahead[s], behind[s]) for b, s in tips.items()}

    # -- files --------------------------------------------------------------------------------
    def copy_ignored(self, dest: Path, patterns: tuple[str, ...], *, owner: tuple[int, int] | None = None,
                     warn: Callable[[str], None] | None = None) -> list[str]:
        """Copy git-ignored files matching ``patterns`` (plus .worktreeinclude) into ``dest``.

        ``dest`` is the new workspace's checkout, whose tree a branch chose: nothing there is
        followed. Each destination is made with an ``openat`` walk and ``O_CREAT | O_EXCL |
        O_NOFOLLOW`` and handed to ``owner`` by descriptor. A destination that already exists is
        kept (the branch's own file); one that is a link or a special file, or lies below a link,
        is refused with a warning (``warn``) and nothing of main's is written through it.
        """
        pats = list(patterns)
        include = self.root / ".worktreeinclude"
        if include.exists():
            pats += [ln.strip() for ln in include.read_text().splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")]
        if not pats:
            return []
        ignored = self._git("ls-files", "--others", "--ignored", "--exclude-standard",
                            "--directory", "--no-empty-directory").stdout.splitlines()
        copied = []
        for rel in ignored:
            rel_clean = rel.rstrip("/")
            if rel_clean.startswith(".sandbox"):
                continue
            if not any(fnmatch.fnmatch(rel_clean, p.strip("/")) or fnmatch.fnmatch(os.path.basename(rel_clean), p)
                       for p in pats):
                continue
            parts = rel_clean.split("/")
            try:
                with hostfs.directory(dest, parts[:-1], create=True, owner=owner) as dfd:
                    there = hostfs.lstat_at(dfd, parts[-1])
                    if there is not None:
                        if not (stat.S_ISREG(there.st_mode) or stat.S_ISDIR(there.st_mode)):
                            raise hostfs.UnsafePath(f"{dest / rel_clean} is {hostfs.kind(there.st_mode)} "
                                                    "(committed on the branch?)")
                        continue        # the branch has its own
                    if not copy_into(self.root / rel_clean, dfd, parts[-1], owner):
                        continue
            except hostfs.UnsafePath as exc:
                if warn is not None:
                    warn(f"warning: {rel_clean} not copied into the workspace: {exc.message}; "
                         "sandbox writes nothing through a link")
                continue
            copied.append(rel_clean)
        return copied

    def ensure_excluded(self, *patterns: str) -> None:
        """Add patterns to ``.git/info/exclude`` (shared by all worktrees) if missing."""
        exclude = self.common_dir / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        missing = [p for p in patterns if p not in lines]
        if missing:
            with exclude.open("a") as fh:
                if lines and lines[-1] != "":
                    fh.write("\n")
                fh.write("\n".join(missing) + "\n")

    def tracked(self, rel: str, ref: str | None = None) -> bool:
        """Whether git tracks ``rel``: in the main checkout's index (cached: asked by every command
        that writes env files), or in ``ref``'s tree when given."""
        if ref is not None:
            return bool(self._git("cat-file", "-e", f"{ref}:{rel}").returncode == 0)
        cache = self.__dict__.setdefault("_tracked", {})
        if rel not in cache:
            cache[rel] = self._git("ls-files", "--error-unmatch", "--", rel).returncode == 0
        return bool(cache[rel])

    def ignored(self, rel: str) -> bool:
        return bool(self._git("check-ignore", "-q", "--", rel).returncode == 0)
