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
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import hostfs
from .errors import ServiceUnavailable, UnsafeToTell, UsageError, WorkspaceError

if TYPE_CHECKING:
    import git


def _gitpython() -> Any:
    import git
    return git


# The reason git gives for the lock it holds on a new worktree while `git worktree add` runs
# (untranslated: sandbox runs git with LC_ALL=C, so that this word and git's messages can be read).
INITIALIZING = "initializing"


DEFAULT_GIT_TIMEOUT = 30.0
# Commands that check out a whole tree (clone, worktree add/remove) may take longer than a probe.
LONG = 10


def git_timeout() -> float:
    """Seconds any one git call may take (``SANDBOX_GIT_TIMEOUT``, default 30): a workspace's
    repository can hold a FIFO or a hostile config that would otherwise block git forever."""
    raw = os.environ.get("SANDBOX_GIT_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_GIT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"SANDBOX_GIT_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise UsageError(f"SANDBOX_GIT_TIMEOUT={raw!r} must be a positive number of seconds")
    return value


def _run(argv: list[str], *, timeout: float, env: dict[str, str], input: str | bytes | None = None,
         text: bool = True) -> subprocess.CompletedProcess[Any]:
    """Run git with a deadline. It runs in a session of its own, so that on timeout the whole
    group dies: `git fetch` spawns upload-pack, which is what blocks on a FIFO, and killing
    only the parent would leave it (holding our pipes) behind. Raises ``TimeoutExpired``."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, env=env,
                                start_new_session=True)
    except FileNotFoundError as exc:
        raise ServiceUnavailable("git is not installed", hint="apt-get install git") from exc
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _plain(cwd: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """``git -C cwd ARGS`` (never interactive, untranslated), output captured, with a deadline
    (:func:`git_timeout`, or ``timeout``); a timeout raises :class:`WorkspaceError`."""
    limit = timeout or git_timeout()
    try:
        return _run(["git", "-C", str(cwd), *args], timeout=limit,
                    env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    except subprocess.TimeoutExpired as exc:
        raise WorkspaceError(f"git {args[0] if args else ''} in {cwd} did not finish within {limit:g} s "
                             "(SANDBOX_GIT_TIMEOUT)") from exc


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
        res = _plain(self.root, *args, timeout=git_timeout() * LONG)
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
                    self.repo.git.worktree("remove", "--force", "--force", str(path),
                                          kill_after_timeout=git_timeout() * LONG)
                except _gitpython().GitCommandError as exc:
                    raise WorkspaceError(f"git worktree remove failed: {git_message(exc)}") from exc
        hostfs.remove_tree(path)
        self._prune()

    def prune(self) -> None:
        with self._locked():
            self._prune()

    def _prune(self) -> None:
        try:
            self.repo.git.worktree("prune", kill_after_timeout=git_timeout())
        except _gitpython().GitCommandError:
            pass

    def delete_branch(self, branch: str) -> None:
        if self.branch_exists(branch):
            try:
                self.repo.git.branch("-D", branch, kill_after_timeout=git_timeout())
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
        ignored = _plain(self.root, "ls-files", "--others", "--ignored", "--exclude-standard",
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
                    if not _copy_into(self.root / rel_clean, dfd, parts[-1], owner):
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
            return _plain(self.root, "cat-file", "-e", f"{ref}:{rel}").returncode == 0
        cache = self.__dict__.setdefault("_tracked", {})
        if rel not in cache:
            cache[rel] = _plain(self.root, "ls-files", "--error-unmatch", "--", rel).returncode == 0
        return bool(cache[rel])

    def ignored(self, rel: str) -> bool:
        return _plain(self.root, "check-ignore", "-q", "--", rel).returncode == 0


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
        """git in MAIN's repository (trusted), optionally over a workspace's files. A call that
        outlives :func:`git_timeout` (a FIFO, a hostile include) raises :class:`UnsafeToTell`."""
        pre = ["git", "-C", str(self.root), "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]
        if work_tree is not None:
            pre += [f"--work-tree={work_tree}"]
        limit = git_timeout()
        try:
            return _run([*pre, *args], timeout=limit, input=input, env={**_safe_env(), **(env or {})})
        except subprocess.TimeoutExpired as exc:
            where = f" over {work_tree}" if work_tree is not None else ""
            raise UnsafeToTell(f"git {args[0] if args else ''}{where} did not finish within {limit:g} s "
                               "(SANDBOX_GIT_TIMEOUT): the workspace's repository may hold a FIFO or a "
                               "hostile config") from exc

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
            if os.path.lexists(path / ".git"):
                self.check_repository(path)     # reused only when it is still a repository to trust
                return created
            tmp = path.parent / f".new-{path.name}"
            for leftover in (tmp, path):
                hostfs.remove_tree(leftover)
            path.parent.mkdir(parents=True, exist_ok=True)
            # The new clone is sandbox's until it is handed over: git may run in it now.
            res = _plain(self.root, "clone", "-q", "--shared", "--no-tags", "-b", branch, str(self.root), str(tmp),
                         timeout=git_timeout() * LONG)
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
        path = _unresolved_leaf(path)
        for p in (path, path.parent / f".new-{path.name}"):
            hostfs.remove_tree(p)       # whatever its .git is (a link, a FIFO): nothing is followed
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
        path = _unresolved_leaf(path)
        try:
            self.check_repository(path)
        except UnsafeToTell as exc:
            raise UnsafeToTell(f"workspace {name!r}: {exc.message}") from exc
        prefix = self.prefix(name)
        # From `<path>/.git` itself, not `<path>`: upload-pack would otherwise try `<path>` as a
        # bare repository too when `.git` does not look like one.
        base = ["-c", "protocol.file.allow=always", "-c", "fetch.fsckObjects=true", "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--prune", "--force", "--no-recurse-submodules",
                str(path / ".git"), f"+refs/*:{prefix}refs/*"]
        env = {"GIT_CONFIG_GLOBAL": str(self._safe_config(path))}
        try:
            res = self._git(*base, f"+HEAD:{prefix}HEAD", env=env)
            if res.returncode != 0 and "couldn't find remote ref HEAD" in res.stderr:
                res = self._git(*base, env=env)
                missing_head = True
            else:
                missing_head = False
        except UnsafeToTell as exc:
            raise UnsafeToTell(f"workspace {name!r}: {exc.message}") from exc
        head: str | None = None
        if missing_head:
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

    def owner_uid(self) -> int:
        """The uid a workspace's repository belongs to: the container's user (see :meth:`add`)."""
        from .runtime.base import unprivileged_ids
        return unprivileged_ids()[0] if os.geteuid() == 0 else os.geteuid()

    def check_repository(self, path: Path) -> None:
        """Refuse (:class:`UnsafeToTell`), before git reads it, a workspace repository that would
        make the fetch read anything but the workspace's own files, or block.

        Everything is looked at with ``lstat`` and nothing is followed: ``.git`` must be a real
        directory owned by the workspace's uid; what upload-pack reads (``HEAD``, ``config``,
        ``packed-refs``, ``shallow``, ``objects/``, ``refs/``, ``info/``…) holds no symbolic
        link and no special file; no ``commondir``, ``gitdir`` or nested ``.git`` redirects it to
        another repository; ``objects/info/alternates`` names main's objects and nothing else.
        """
        try:
            top = os.lstat(path)
        except FileNotFoundError:
            raise UnsafeToTell(f"{path} is gone") from None
        if not stat.S_ISDIR(top.st_mode):
            raise UnsafeToTell(f"{path} is {hostfs.kind(top.st_mode)}, not the workspace's directory")
        try:
            dir_fd = hostfs.open_dir(path)
        except hostfs.UnsafePath as exc:
            raise UnsafeToTell(exc.message) from exc
        try:
            self._check_git_dir(path, dir_fd)
        finally:
            os.close(dir_fd)

    def _check_git_dir(self, path: Path, dir_fd: int) -> None:
        st = hostfs.lstat_at(dir_fd, ".git")
        if st is None:
            raise UnsafeToTell(f"{path} is not a git repository any more (its .git is gone)")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeToTell(f"{path}/.git is {hostfs.kind(st.st_mode)}, not a directory: sandbox does not "
                               "follow it (it could lead to another repository on the host)")
        if st.st_uid != self.owner_uid():
            raise UnsafeToTell(f"{path}/.git belongs to uid {st.st_uid}, not to the workspace's uid "
                               f"{self.owner_uid()}: sandbox does not read it")
        for name in (".git.git",):     # upload-pack's fallback when <path>/.git is not a repository
            if hostfs.lstat_at(dir_fd, name) is not None:
                raise UnsafeToTell(f"{path}/{name} exists: git could read it as another repository")
        git = path / ".git"
        try:
            g_fd = hostfs.open_dir(path, [".git"])
        except hostfs.UnsafePath as exc:
            raise UnsafeToTell(exc.message) from exc
        try:
            entries = {e.name: e.stat(follow_symlinks=False) for e in os.scandir(g_fd)}
        finally:
            os.close(g_fd)
        for name, est in sorted(entries.items()):
            what = hostfs.kind(est.st_mode)
            if name in _REDIRECTS:
                raise UnsafeToTell(f"{git}/{name} exists ({what}): git would read another repository through it")
            if not (stat.S_ISREG(est.st_mode) or stat.S_ISDIR(est.st_mode) or stat.S_ISLNK(est.st_mode)):
                raise UnsafeToTell(f"{git}/{name} is {what}: sandbox reads no special file")
            if name in _READ_BY_FETCH and stat.S_ISLNK(est.st_mode):
                raise UnsafeToTell(f"{git}/{name} is a symbolic link: git would follow it out of the workspace")
        for name, is_dir in (("HEAD", False), ("objects", True), ("refs", True)):
            found = entries.get(name)
            if found is None or stat.S_ISDIR(found.st_mode) != is_dir:
                raise UnsafeToTell(f"{git}/{name} is {hostfs.kind(found.st_mode) if found else 'missing'}: "
                                   "not a git repository sandbox can read")
        for name in _WALKED:
            if name in entries and stat.S_ISDIR(entries[name].st_mode):
                _refuse_links_below(git / name)
        self._check_alternates(git)

    def _check_alternates(self, git: Path) -> None:
        """``objects/info/alternates`` may name main's objects (``clone --shared``), nothing else:
        an alternate is read as part of the workspace's objects, so the fetch would copy any
        repository's objects into main."""
        try:
            with hostfs.directory(git, ["objects", "info"]) as info:
                data = hostfs.read_regular(info, "alternates")
                present = hostfs.lstat_at(info, "alternates") is not None
        except hostfs.UnsafePath:
            return                    # no objects/info directory: no alternates (links were refused above)
        if data is None:
            if present:
                raise UnsafeToTell(f"{git}/objects/info/alternates is not a regular file")
            return
        mine = os.path.normpath(self.wt.common_dir / "objects")
        for raw in data.decode(errors="replace").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = os.path.normpath(os.path.join(git / "objects", line))
            if target != mine:
                raise UnsafeToTell(f"{git}/objects/info/alternates names {line!r}: only main's objects "
                                   f"({mine}) may be borrowed")

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
            try:
                blob = _run(["git", "-C", str(self.root), "hash-object", "-w", "--stdin"], input=data,
                            text=False, env=_safe_env(), timeout=git_timeout())
            except subprocess.TimeoutExpired as exc:
                raise WorkspaceError(f"git hash-object did not finish within {git_timeout():g} s") from exc
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
        try:
            res = _run(["git", "-C", str(self.root), "show", f"{ref}:{rel}"], text=False, env=_safe_env(),
                       timeout=git_timeout())
        except subprocess.TimeoutExpired as exc:
            raise WorkspaceError(f"git show {ref}:{rel} did not finish within {git_timeout():g} s") from exc
        if res.returncode != 0:
            raise WorkspaceError(f"cannot read {rel} at {ref}: {res.stderr.decode(errors='replace').strip()}")
        return res.stdout

    def orphans(self, known: set[Path], worktrees_dir: Path) -> list[Path]:
        """Isolated repositories (and half-made clones) in ``worktrees_dir`` no workspace owns."""
        if not worktrees_dir.is_dir():
            return []
        # `.git` by lstat: one that is a link or a FIFO is still a workspace repository (its
        # unsaved() refuses to tell, so gc keeps it), never followed
        return [p.resolve() for p in sorted(worktrees_dir.iterdir())
                if p.is_dir() and not p.is_symlink() and p.resolve() not in known
                and (os.path.lexists(p / ".git") or p.name.startswith(".new-"))]


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    """Hand a tree sandbox made to the container's user; links are changed themselves, never followed."""
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)


# What upload-pack reads in a workspace's `.git` (a link there would be followed to a host file),
# what redirects it to another repository, and the directories whose every entry it may open.
_READ_BY_FETCH = frozenset({"HEAD", "config", "config.worktree", "packed-refs", "shallow", "objects", "refs",
                            "info", "reftable"})
_REDIRECTS = frozenset({"commondir", "gitdir", ".git"})
_WALKED = ("objects", "refs", "info", "reftable")


def _refuse_links_below(top: Path) -> None:
    """:class:`UnsafeToTell` when anything below ``top`` is a symbolic link or a special file
    (scandir: entries are lstat-ed, no link is entered)."""
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError as exc:
            raise UnsafeToTell(f"cannot read {d}: {exc.strerror}") from exc
        with it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(Path(e.path))
                elif not stat.S_ISREG(st.st_mode):
                    raise UnsafeToTell(f"{e.path} is {hostfs.kind(st.st_mode)}: git would follow or block on it")


def _unresolved_leaf(path: Path) -> Path:
    """``path`` with its parent resolved and its own name kept: the workspace's directory is
    never followed if it became a link."""
    return path.parent.resolve() / path.name


def _copy_into(src: Path, dir_fd: int, name: str, owner: tuple[int, int] | None) -> bool:
    """Copy main's ``src`` (a file, or a directory's files and links) to ``name`` in ``dir_fd``,
    creating every entry anew (``O_EXCL | O_NOFOLLOW``, ``mkdir`` at a descriptor). Special files
    are skipped. False when ``src`` is neither a file nor a directory."""
    try:
        st = os.stat(src)     # main's checkout is the user's: its own links (to ~/secrets) are meant
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(name, 0o755, dir_fd=dir_fd)
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if owner is not None and os.geteuid() == 0:
                os.fchown(sub, *owner)
            with os.scandir(src) as it:
                for e in it:
                    if e.is_symlink():
                        os.symlink(os.readlink(e.path), e.name, dir_fd=sub)
                        if owner is not None and os.geteuid() == 0:
                            os.chown(e.name, *owner, dir_fd=sub, follow_symlinks=False)
                    else:
                        _copy_into(Path(e.path), sub, e.name, owner)
        finally:
            os.close(sub)
        return True
    if not stat.S_ISREG(st.st_mode):
        return False
    # O_NONBLOCK: a FIFO swapped in after the stat cannot block the copy (fstat refuses it)
    fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read()
    finally:
        os.close(fd)
    out = hostfs.create_file(dir_fd, name, data, mode=stat.S_IMODE(st.st_mode), owner=owner)
    try:
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(out)
    return True
