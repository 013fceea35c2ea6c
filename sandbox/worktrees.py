"""Git worktrees and branches (GitPython); git errors become sandbox errors here.

GitPython is imported on first use, by removal and the merge checks. What ``sandbox up`` runs
(the probes every command starts with: the project's root, main's branch, the common git dir;
then the worktree list, branch and ref checks and ``git worktree add``) are single plain ``git``
calls: importing GitPython costs 0.1-0.16 s on a 2-core machine, a tenth of ``up``'s budget,
and CPU that the Docker engine needs while it starts the workspace's containers.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ServiceUnavailable, UsageError, WorkspaceError

if TYPE_CHECKING:
    import git


def _gitpython() -> Any:
    import git
    return git


# The reason git gives for the lock it holds on a new worktree while `git worktree add` runs
# (untranslated: sandbox runs git with LC_ALL=C, so that this word and git's messages can be read).
INITIALIZING = "initializing"


def _plain(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``git -C cwd ARGS`` (never interactive, untranslated), output captured."""
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    except FileNotFoundError as exc:
        raise ServiceUnavailable("git is not installed", hint="apt-get install git") from exc


def _meaningful(text: str, default: str) -> str:
    """The meaningful line of git's error output (``fatal: …``)."""
    lines = [ln.strip() for ln in text.replace("stderr:", "").splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (fatal or lines or [default])[-1].strip("'")


def _failure(res: subprocess.CompletedProcess[str]) -> str:
    """What a failed plain ``git`` call said."""
    return _meaningful(res.stderr, f"git exited {res.returncode}")


def git_message(exc: git.GitCommandError) -> str:
    """The meaningful line of a git error (``fatal: …``), without GitPython's decoration."""
    return _meaningful(str(exc.stderr or exc.stdout or exc).strip().strip("'"), str(exc))


def _killed_add(attrs: dict[str, str]) -> bool:
    """A worktree's ``git worktree list`` attributes say that its add never finished."""
    return attrs.get("locked") == INITIALIZING


def _branches(listing: dict[Path, dict[str, str]]) -> dict[Path, str | None]:
    """Worktree path → its branch (None when detached), from :meth:`Worktrees._listing`."""
    return {path: attrs["branch"].removeprefix("refs/heads/") if "branch" in attrs else None
            for path, attrs in listing.items()}


def find_project_root(start: Path) -> Path | None:
    """The main checkout owning ``start``: walks up to a git checkout; a worktree maps to its main."""
    if not start.is_dir():
        return None
    res = _plain(start, "rev-parse", "--path-format=absolute", "--git-common-dir", "--show-toplevel")
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


class Worktrees:
    """The main checkout and the worktrees sandbox creates from it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        res = _plain(root, "rev-parse", "--path-format=absolute", "--git-common-dir")
        if res.returncode != 0 or not res.stdout.strip():
            raise UsageError(f"{root} is not a git repository")
        self.common_dir = Path(res.stdout.strip()).resolve()
        self._repo: git.Repo | None = None

    @property
    def repo(self) -> git.Repo:
        """The GitPython repository (loaded on first use)."""
        if self._repo is None:
            self._repo = _gitpython().Repo(self.root)
        return self._repo

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise worktree bookkeeping: concurrent `git worktree add` calls read each
        other's half-written `.git/worktrees/*` entries and fail."""
        fd = os.open(self.common_dir / "sandbox-worktrees.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- facts ----------------------------------------------------------------------------
    def main_branch(self) -> str:
        """The branch checked out in the main checkout."""
        res = _plain(self.root, "symbolic-ref", "--short", "-q", "HEAD")
        if res.returncode != 0 or not res.stdout.strip():
            raise WorkspaceError("the main checkout has a detached HEAD; check out your main branch")
        return res.stdout.strip()

    def identity(self) -> dict[str, str]:
        """``user.name``/``user.email`` from git's config, as far as they are set."""
        res = _plain(self.root, "config", "--get-regexp", r"^user\.(name|email)$")
        found: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, _, value = line.partition(" ")
            found[key.removeprefix("user.")] = value
        return found

    # Refs are read with plain git commands: GitPython's object database keeps one
    # `git cat-file` process per Repo, which is not safe across threads (`up a b c`).
    def has_commits(self) -> bool:
        return _plain(self.root, "rev-parse", "--verify", "-q", "HEAD^{commit}").returncode == 0

    def branch_exists(self, branch: str) -> bool:
        return _plain(self.root, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}").returncode == 0

    def rev(self, ref: str) -> str:
        if ref.startswith("-"):
            raise UsageError(f"unknown git ref {ref!r}")
        res = _plain(self.root, "rev-parse", "--verify", "-q", f"{ref}^{{commit}}")
        if res.returncode != 0 or not res.stdout.strip():
            raise UsageError(f"unknown git ref {ref!r}")
        return res.stdout.strip()

    def _listing(self) -> dict[Path, dict[str, str]]:
        """``git worktree list --porcelain``: path → its attributes (``branch``, ``locked``, …)."""
        res = _plain(self.root, "worktree", "list", "--porcelain")
        if res.returncode != 0:
            raise WorkspaceError(f"git worktree list failed: {_failure(res)}")
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
        """Worktrees git knows about: path → branch (None when detached)."""
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
        res = _plain(self.root, *args)
        if res.returncode != 0:
            raise WorkspaceError(f"git worktree add failed: {_failure(res)}")
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
                _plain(self.root, "worktree", "unlock", str(path))
            else:
                try:
                    self.repo.git.worktree("remove", "--force", "--force", str(path))
                except _gitpython().GitCommandError as exc:
                    raise WorkspaceError(f"git worktree remove failed: {git_message(exc)}") from exc
        if path.exists():
            shutil.rmtree(path)
        self._prune()

    def prune(self) -> None:
        with self._locked():
            self._prune()

    def _prune(self) -> None:
        try:
            self.repo.git.worktree("prune")
        except _gitpython().GitCommandError:
            pass

    def delete_branch(self, branch: str) -> None:
        if self.branch_exists(branch):
            try:
                self.repo.git.branch("-D", branch)
            except _gitpython().GitCommandError as exc:
                raise WorkspaceError(f"cannot delete branch {branch!r}: {git_message(exc)}") from exc

    # -- safety -----------------------------------------------------------------------------
    def dirty(self, path: Path, ignore: tuple[str, ...] = ()) -> list[str]:
        """Uncommitted changes (porcelain lines), ignoring paths in ``ignore``. A worktree whose
        `git worktree add` was killed has none: its missing files are git's, not anybody's work."""
        if not path.exists():
            return []
        out = _plain(path, "status", "--porcelain", "--untracked-files=all")
        if out.returncode != 0:
            return []
        changes = [ln for ln in out.stdout.splitlines() if ln[3:] not in ignore]
        # only a tree that shows changes can be a killed add: the clean case costs no more calls
        return [] if changes and self.initializing(path) else changes

    def unmerged(self, branch: str, into: str | None = None) -> list[str]:
        """Commits on ``branch`` that are not on main."""
        if not self.branch_exists(branch):
            return []
        target = into or self.main_branch()
        try:
            out = self.repo.git.rev_list(f"{target}..{branch}")
        except _gitpython().GitCommandError:
            return []
        return out.split()

    # -- files --------------------------------------------------------------------------------
    def copy_ignored(self, dest: Path, patterns: tuple[str, ...]) -> list[str]:
        """Copy git-ignored files matching ``patterns`` (plus .worktreeinclude) into ``dest``."""
        pats = list(patterns)
        include = self.root / ".worktreeinclude"
        if include.exists():
            pats += [ln.strip() for ln in include.read_text().splitlines()
                     if ln.strip() and not ln.lstrip().startswith("#")]
        if not pats:
            return []
        ignored = subprocess.run(
            ["git", "-C", str(self.root), "ls-files", "--others", "--ignored", "--exclude-standard",
             "--directory", "--no-empty-directory"], capture_output=True, text=True).stdout.splitlines()
        copied = []
        for rel in ignored:
            rel_clean = rel.rstrip("/")
            if rel_clean.startswith(".sandbox"):
                continue
            if not any(fnmatch.fnmatch(rel_clean, p.strip("/")) or fnmatch.fnmatch(os.path.basename(rel_clean), p)
                       for p in pats):
                continue
            src, dst = self.root / rel_clean, dest / rel_clean
            if dst.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True)
            else:
                shutil.copy2(src, dst)
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

    def ignored(self, rel: str) -> bool:
        return subprocess.run(["git", "-C", str(self.root), "check-ignore", "-q", rel]).returncode == 0

    def tracked(self, rel: str, ref: str | None = None) -> bool:
        """Whether git tracks ``rel``: in the main checkout's index, or in ``ref``'s tree when given."""
        if ref is None:
            res = _plain(self.root, "ls-files", "--error-unmatch", "--", rel)
        else:
            res = _plain(self.root, "cat-file", "-e", f"{ref}:{rel}")
        return res.returncode == 0
