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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .errors import ServiceUnavailable, UnsafeToTell, UsageError, WorkspaceError

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
    """The main checkout owning ``start``: walks up to a git checkout; a worktree maps to its main.

    Inside a workspace (anything under a checkout's ``.sandbox/``) the answer comes from the path
    alone: a Docker workspace's repository is untrusted, and git is never run inside it.
    """
    if not start.is_dir():
        return None
    for parent in (start, *start.parents):
        if parent.name == ".sandbox" and (parent.parent / ".git").is_dir():
            return parent.parent.resolve()
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

    def behind(self, branch: str) -> int:
        """How many commits of main ``branch`` lacks (0 when it does not exist or git cannot say)."""
        res = _plain(self.root, "rev-list", "--count", f"refs/heads/{branch}..{self.main_branch()}")
        try:
            return int(res.stdout.strip()) if res.returncode == 0 else 0
        except ValueError:
            return 0

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

    def head(self, path: Path) -> str | None:
        """The commit checked out in the worktree at ``path`` (git's own listing, read in main)."""
        return self._listing().get(path.resolve(), {}).get("HEAD")

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
        for attempt in range(10):
            # another process's `git worktree add` may be half-way through writing .git/worktrees/<name>/
            # ("failed to read .git/worktrees/x/commondir"): read again once it has finished
            if res.returncode == 0 or "worktrees/" not in res.stderr:
                break
            time.sleep(0.05 * (attempt + 1))
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
        """Uncommitted changes of a git worktree (porcelain lines), ignoring paths in ``ignore``.

        Fails closed: when git cannot answer, this raises (:class:`UnsafeToTell`) instead of
        answering "clean". A worktree whose `git worktree add` was killed has no changes: its
        missing files are git's, not anybody's work. Only for worktrees of the user's own
        (``runtime = "none"``): an isolated workspace is asked through :meth:`unsaved`.
        """
        if not path.exists():
            return []
        out = _plain(path, "status", "--porcelain", "--untracked-files=all")
        if out.returncode != 0:
            raise UnsafeToTell(f"git status failed in {path}: {_failure(out)}")
        changes = [ln for ln in out.stdout.splitlines() if ln[3:] not in ignore]
        # only a tree that shows changes can be a killed add: the clean case costs no more calls
        if changes and self.initializing(path):
            return []
        stash = _plain(path, "rev-parse", "-q", "--verify", "refs/stash")
        if stash.returncode == 0:
            changes.append("stash: entries in the worktree's stash")
        return changes

    def unmerged(self, branch: str, into: str | None = None) -> list[str]:
        """Commits on ``branch`` that are not on main (fails closed: raises if git cannot tell)."""
        if not self.branch_exists(branch):
            return []
        target = into or self.main_branch()
        res = _plain(self.root, "rev-list", f"{target}..refs/heads/{branch}")
        if res.returncode != 0:
            raise UnsafeToTell(f"cannot list the commits of {branch!r}: {_failure(res)}")
        return res.stdout.split()

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

    def tracked(self, rel: str, ref: str | None = None) -> bool:
        """Whether git tracks ``rel``: in the main checkout's index (cached: asked by every command
        that writes env files), or in ``ref``'s tree when given."""
        if ref is not None:
            return _plain(self.root, "cat-file", "-e", f"{ref}:{rel}").returncode == 0
        cache = self.__dict__.setdefault("_tracked", {})
        if rel not in cache:
            cache[rel] = _plain(self.root, "ls-files", "--error-unmatch", "--", rel).returncode == 0
        return bool(cache[rel])

    def ignored(self, rel: str) -> bool:
        return subprocess.run(["git", "-C", str(self.root), "check-ignore", "-q", rel]).returncode == 0


# -- isolated repositories (Docker workspaces) ----------------------------------------------------
#
# A Docker workspace is untrusted, so its checkout is a repository of its own: a clone of main
# that borrows main's objects (``--shared``: an alternates entry; main's ``.git/objects`` is
# mounted read-only in the container, the rest of main's ``.git`` is not mounted at all). The
# agent may do anything in it. The host never runs git inside it; per gitsecurityboundary(7),
# fetching from an untrusted repository (upload-pack) is the operation git makes safe for that,
# so the host brings the workspace's refs into main's repository with `git fetch` (under
# ``refs/sandbox/ws/NAME/``, and its branch to ``refs/heads/NAME``), and answers "is there
# uncommitted work?" with a git dir it owns (main's, with an index of sandbox's) pointed at the
# workspace's files. Commits sandbox makes for a workspace (rebase, sync) are made in main's
# repository with plumbing and then fast-forwarded inside the workspace's container.

WS_REFS = "refs/sandbox/ws"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def _safe_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


class Unsaved(str):
    """One thing a workspace holds beyond its branch: the line people read, plus what it is.

    A ``str`` so that callers that print or join these lines keep working; decisions read
    ``kind`` (``changed``, ``untracked``, ``stash``, ``detached``, ``branch``), never the text.
    ``what`` is the path, commit or branch the line is about (None for a stash).
    """

    kind: str
    what: str | None

    def __new__(cls, text: str, kind: str, what: str | None = None) -> "Unsaved":
        obj = super().__new__(cls, text)
        obj.kind = kind
        obj.what = what
        return obj


UNCOMMITTED = ("changed", "untracked")


def kind_of(line: str) -> str:
    """An :meth:`IsolatedRepos.unsaved` line's kind (a plain line counts as uncommitted work)."""
    return line.kind if isinstance(line, Unsaved) else "changed"


def what_of(line: str) -> str:
    """The path, commit or branch an unsaved line is about (the line itself when unknown)."""
    return (line.what or str(line)) if isinstance(line, Unsaved) else line


class IsolatedRepos:
    """Main's side of the isolated repositories of Docker workspaces (see above)."""

    def __init__(self, wt: Worktrees) -> None:
        self.wt = wt
        self.root = wt.root

    def _git(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
             work_tree: Path | None = None) -> subprocess.CompletedProcess[str]:
        """git in MAIN's repository (trusted), optionally over a workspace's files."""
        pre = ["git", "-C", str(self.root), "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]
        if work_tree is not None:
            pre += [f"--work-tree={work_tree}"]
        try:
            return subprocess.run([*pre, *args], capture_output=True, text=True, input=input,
                                  env={**_safe_env(), **(env or {})})
        except FileNotFoundError as exc:
            raise ServiceUnavailable("git is not installed", hint="apt-get install git") from exc

    def prefix(self, name: str) -> str:
        return f"{WS_REFS}/{name}/"

    def index_file(self, name: str) -> Path:
        d = self.wt.common_dir / "sandbox"
        d.mkdir(exist_ok=True)
        return d / f"{name}.index"

    # -- lifecycle ----------------------------------------------------------------------------
    def add(self, path: Path, branch: str, from_ref: str | None, *, exclude: tuple[str, ...] = (),
            owner: tuple[int, int] | None = None) -> bool:
        """Make the workspace's own repository at ``path`` on ``branch`` (reused if it exists);
        True if the branch was created in main. A half-made clone is made afresh."""
        path = path.resolve()
        with self.wt._locked():
            created = False
            if not self.wt.branch_exists(branch):
                start = from_ref or self.wt.main_branch()
                self.wt.rev(start)
                res = _plain(self.root, "branch", "--no-track", branch, start)
                if res.returncode != 0:
                    raise WorkspaceError(f"cannot create branch {branch!r}: {_failure(res)}")
                created = True
            if (path / ".git").is_dir():
                return created
            tmp = path.parent / f".new-{path.name}"
            for leftover in (tmp, path):
                if leftover.exists() or leftover.is_symlink():
                    shutil.rmtree(leftover)
            path.parent.mkdir(parents=True, exist_ok=True)
            # The new clone is sandbox's until it is handed over: git may run in it now.
            res = _plain(self.root, "clone", "-q", "--shared", "--no-tags", "-b", branch, str(self.root), str(tmp))
            if res.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise WorkspaceError(f"git clone failed: {_failure(res)}")
            _plain(tmp, "remote", "remove", "origin")
            if exclude:
                info = tmp / ".git" / "info"
                info.mkdir(exist_ok=True)
                with (info / "exclude").open("a") as fh:
                    fh.write("\n".join(exclude) + "\n")
            if owner is not None and os.geteuid() == 0:
                _chown_tree(tmp, *owner)
            os.rename(tmp, path)
            return created

    def remove(self, name: str, path: Path) -> None:
        """Delete the workspace's repository and sandbox's refs of it (its branch in main stays)."""
        path = path.resolve()
        for p in (path, path.parent / f".new-{path.name}"):
            if p.exists() or p.is_symlink():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        refs = self._git("for-each-ref", "--format=%(refname)", self.prefix(name))
        if refs.returncode == 0 and refs.stdout.strip():
            self._git("update-ref", "--stdin", input="".join(f"delete {r}\n" for r in refs.stdout.split()))
        self.index_file(name).unlink(missing_ok=True)

    # -- bringing commits in ----------------------------------------------------------------------
    def collect(self, name: str, path: Path, branch: str) -> str | None:
        """Fetch the workspace's refs into main (the only way its commits enter main's repository).

        Its branch becomes ``refs/heads/<branch>`` in main. Returns the workspace's HEAD commit
        (None when HEAD is unborn). Raises :class:`UnsafeToTell` when the repository cannot be read.
        """
        path = path.resolve()
        if not (path / ".git").is_dir():
            raise UnsafeToTell(f"{path} is not a git repository any more (its .git is gone or replaced)")
        prefix = self.prefix(name)
        base = ["-c", "protocol.file.allow=always", "-c", "fetch.fsckObjects=true", "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--prune", "--force", "--no-recurse-submodules",
                str(path), f"+refs/*:{prefix}refs/*"]
        env = {"GIT_CONFIG_GLOBAL": str(self._safe_config(path))}
        res = self._git(*base, f"+HEAD:{prefix}HEAD", env=env)
        head: str | None = None
        if res.returncode != 0 and "couldn't find remote ref HEAD" in res.stderr:
            res = self._git(*base, env=env)
            self._git("update-ref", "-d", f"{prefix}HEAD")
        else:
            head = self._resolve(f"{prefix}HEAD")
        if res.returncode != 0:
            raise UnsafeToTell(f"cannot read the workspace repository {path}: {_failure(res)}")
        tip = self._resolve(f"{prefix}refs/heads/{branch}")
        if tip is not None and tip != self._resolve(f"refs/heads/{branch}"):
            upd = self._git("update-ref", f"refs/heads/{branch}", tip)
            if upd.returncode != 0:
                raise WorkspaceError(f"cannot update branch {branch!r} in main's repository: {_failure(upd)}")
        return head

    def _safe_config(self, path: Path) -> Path:
        """A global git config (the user's own, included) that also trusts ``path``: the workspace's
        repository belongs to the container's user, and git (2.39) honours ``safe.directory`` for
        upload-pack only from the global or system config."""
        conf = self.wt.common_dir / "sandbox" / f"safe-{path.name}.gitconfig"
        conf.parent.mkdir(exist_ok=True)
        home = os.environ.get("GIT_CONFIG_GLOBAL") or os.path.expanduser("~/.gitconfig")
        text = (f"[include]\n\tpath = {home}\n" if os.path.isfile(home) else "") + \
            f"[safe]\n\tdirectory = {path}\n\tdirectory = {path}/.git\n"
        if not conf.is_file() or conf.read_text() != text:
            conf.write_text(text)
        return conf

    def _resolve(self, ref: str) -> str | None:
        res = self._git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}")
        return res.stdout.strip() or None if res.returncode == 0 else None

    def _contains(self, ancestor: str, refs: list[str]) -> bool:
        for ref in refs:
            if self._git("merge-base", "--is-ancestor", ancestor, ref).returncode == 0:
                return True
        return False

    # -- safety ---------------------------------------------------------------------------------
    def unsaved(self, name: str, path: Path, branch: str, ignore: tuple[str, ...] = ()) -> list[str]:
        """What removing the workspace would lose, besides unmerged commits of its branch:
        uncommitted changes and untracked files, stashes, commits on a detached HEAD or on other
        branches, each an :class:`Unsaved` (a line of text with its ``kind``; typed ``list[str]`` so
        that callers which print or join the lines keep type-checking: read kinds with
        :func:`kind_of`). Fails closed (:class:`UnsafeToTell`)."""
        path = path.resolve()
        if not path.exists():
            return []
        head = self.collect(name, path, branch)
        prefix = self.prefix(name)
        keep = [f"refs/heads/{branch}", f"refs/heads/{self.wt.main_branch()}"]
        found: list[str] = []
        env = {"GIT_INDEX_FILE": str(self.index_file(name))}
        steps = [self._git("read-tree", head or EMPTY_TREE, env=env, work_tree=path)]
        steps.append(self._git("update-index", "-q", "--refresh", env=env, work_tree=path))
        files = self._git("diff-files", "--name-status", env=env, work_tree=path)
        others = self._git("ls-files", "--others", "--exclude-standard", env=env, work_tree=path)
        for res in (steps[0], files, others):
            if res.returncode != 0:
                raise UnsafeToTell(f"cannot compare {path} with its last commit: {_failure(res)}")
        for line in files.stdout.splitlines():
            status, _, rel = line.partition("\t")
            if rel not in ignore:
                found.append(Unsaved(f"{status} {rel}", "changed", rel))
        found += [Unsaved(f"?? {rel}", "untracked", rel) for rel in others.stdout.splitlines()
                  if rel and rel not in ignore]
        if self._resolve(f"{prefix}refs/stash"):
            found.append(Unsaved("stash: entries in the workspace's stash", "stash"))
        if head and not self._contains(head, keep):
            found.append(Unsaved(f"HEAD {head[:12]}: commits not on branch {branch!r} or main (a detached HEAD?)",
                                 "detached", head))
        refs = self._git("for-each-ref", "--format=%(refname)", f"{prefix}refs/heads/")
        for ref in refs.stdout.split():
            other = ref.removeprefix(f"{prefix}refs/heads/")
            if other != branch and not self._contains(ref, keep):
                found.append(Unsaved(f"branch {other!r}: commits not on {branch!r} or main", "branch", other))
        return found

    # -- reading a commit ---------------------------------------------------------------------------
    def export(self, commit: str, dest: Path, only: tuple[str, ...] | None = None) -> None:
        """Write ``commit``'s tree, exactly as committed, into ``dest`` (a new directory sandbox owns).

        Read from main's object store with plumbing only (``ls-tree``, ``cat-file``): no checkout,
        so no attribute of the tree applies (``export-ignore``, ``working-tree-encoding``, filters,
        ``eol``: a branch's ``.gitattributes`` cannot make the exported files differ from its
        committed bytes), no hook and no fsmonitor run. Files are created with ``O_EXCL |
        O_NOFOLLOW`` under ``dest``, symbolic links are made as links (never followed here),
        submodules are empty folders. ``only``: paths (files or folders, relative) to write;
        None writes everything. ``dest`` may exist (a second call adds paths to it).
        """
        res = self._git("ls-tree", "-r", "-z", "--full-tree", commit)
        if res.returncode != 0:
            raise WorkspaceError(f"cannot read commit {commit[:12]}: {_failure(res)}")
        dest.mkdir(parents=True, exist_ok=True)
        root = os.path.realpath(dest)
        entries: list[tuple[str, str, str]] = []
        for item in res.stdout.split("\0"):
            if not item:
                continue
            meta, _, rel = item.partition("\t")
            mode, kind, oid = meta.split(" ")
            parts = rel.split("/")
            if rel.startswith("/") or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts):
                raise WorkspaceError(f"commit {commit[:12]} holds a path sandbox will not write: {rel!r}")
            if only is not None and not any(rel == o or rel.startswith(o.rstrip("/") + "/") for o in only):
                continue
            entries.append((mode, kind, rel))
            if kind == "commit":          # a submodule: its commit is not in this repository
                os.makedirs(os.path.join(root, rel), exist_ok=True)
        blobs = [(mode, rel) for mode, kind, rel in entries if kind == "blob"]
        if not blobs:
            return
        # one cat-file for every blob, by path at the commit (the oid list could be read the same way)
        spec = "".join(f"{commit}:{rel}\n" for _, rel in blobs)
        cat = subprocess.run(["git", "-C", str(self.root), "-c", "core.fsmonitor=false", "cat-file", "--batch"],
                             input=spec.encode("utf-8", errors="surrogateescape"), capture_output=True,
                             env=_safe_env())
        if cat.returncode != 0:
            raise WorkspaceError(f"cannot read commit {commit[:12]}: {cat.stderr.decode(errors='replace').strip()}")
        out, pos = cat.stdout, 0
        for mode, rel in blobs:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].split()
            if len(header) != 3 or header[1] != b"blob":
                raise WorkspaceError(f"cannot read {rel} at {commit[:12]}")
            size = int(header[2])
            data = out[nl + 1:nl + 1 + size]
            pos = nl + 1 + size + 1
            target = os.path.join(root, rel)
            if os.path.lexists(target):      # written by an earlier call (``only``)
                continue
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            if os.path.realpath(parent) != parent:
                raise WorkspaceError(f"commit {commit[:12]}: {rel} would be written through a link: refused")
            if mode == "120000":
                os.symlink(data.decode("utf-8", errors="surrogateescape"), target)
                continue
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o755 if mode == "100755" else 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)

    # -- commits made for the workspace ---------------------------------------------------------
    def commit_file(self, branch: str, rel: str, data: bytes, message: str) -> str:
        """A commit on top of ``branch`` that changes one file (made in main's repository; the
        branch ref itself is not moved). Returns its id."""
        parent = self._resolve(f"refs/heads/{branch}")
        if parent is None:
            raise WorkspaceError(f"branch {branch!r} does not exist")
        import tempfile
        with tempfile.NamedTemporaryFile(dir=self.wt.common_dir, prefix="sandbox-index-") as idx:
            env = {"GIT_INDEX_FILE": idx.name}
            blob = subprocess.run(["git", "-C", str(self.root), "hash-object", "-w", "--stdin"], input=data,
                                  capture_output=True, env=_safe_env())
            steps = [self._git("read-tree", parent, env=env)]
            if blob.returncode == 0:
                mode = self._git("ls-tree", parent, "--", rel).stdout.split(" ")[0] or "100644"
                steps.append(self._git("update-index", "--cacheinfo", f"{mode},{blob.stdout.decode().strip()},{rel}",
                                       env=env))
            tree = self._git("write-tree", env=env)
            for res in (*steps, tree):
                if res.returncode != 0:
                    raise WorkspaceError(f"cannot commit {rel} on {branch!r}: {_failure(res)}")
            if blob.returncode != 0:
                raise WorkspaceError(f"cannot store {rel}: {blob.stderr.decode(errors='replace').strip()}")
        return self._commit(tree.stdout.strip(), [parent], message)

    def merge_commit(self, branch: str, other: str, message: str) -> tuple[str | None, list[str]]:
        """A merge of ``other`` into ``branch`` made without a worktree (``git merge-tree``):
        (commit, []) or (None, conflicting files). Neither ref moves."""
        ours, theirs = self._resolve(f"refs/heads/{branch}"), self._resolve(other)
        if ours is None or theirs is None:
            raise WorkspaceError(f"cannot merge {other!r} into {branch!r}: unknown ref")
        res = self._git("merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs)
        lines = res.stdout.splitlines()
        if res.returncode == 1:
            return None, [ln for ln in lines[1:] if ln.strip()]
        if res.returncode != 0 or not lines:
            raise WorkspaceError(f"git merge-tree failed: {_failure(res)}")
        return self._commit(lines[0].strip(), [ours, theirs], message), []

    def _commit(self, tree: str, parents: list[str], message: str) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        res = self._git(*args, "-m", message)
        if res.returncode != 0:
            raise WorkspaceError(f"git commit-tree failed: {_failure(res)}")
        return res.stdout.strip()

    def show(self, ref: str, rel: str) -> bytes:
        """A file's bytes as committed at ``ref`` (read from main's object store)."""
        res = subprocess.run(["git", "-C", str(self.root), "show", f"{ref}:{rel}"], capture_output=True,
                             env=_safe_env())
        if res.returncode != 0:
            raise WorkspaceError(f"cannot read {rel} at {ref}: {res.stderr.decode(errors='replace').strip()}")
        return res.stdout

    def orphans(self, known: set[Path], worktrees_dir: Path) -> list[Path]:
        """Isolated repositories (and half-made clones) in ``worktrees_dir`` no workspace owns."""
        if not worktrees_dir.is_dir():
            return []
        return [p.resolve() for p in sorted(worktrees_dir.iterdir())
                if p.is_dir() and not p.is_symlink() and p.resolve() not in known
                and ((p / ".git").is_dir() or p.name.startswith(".new-"))]


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)
