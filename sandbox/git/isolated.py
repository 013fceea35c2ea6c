"""The isolated repositories of Docker workspaces, seen from main's side (untrusted: no git runs
inside them on the host; they are read with ``git fetch`` and a git dir sandbox owns)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from .. import hostfs
from ..errors import SandboxError, UnsafeToTell, WorkspaceError
from ..runtime.base import unprivileged_ids
from .files import chown_tree
from .refread import RefSnapshot, read_refs
from .runner import LONG, call, failure, git_timeout
from .unsaved import Unsaved, UnsavedKind, stash
from .worktrees import Worktrees

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


class IsolatedRepos:
    """Main's side of the isolated repositories of Docker workspaces (see above)."""

    def __init__(self, wt: Worktrees) -> None:
        self.wt = wt
        self.root = wt.root

    def _git(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
             work_tree: Path | None = None) -> Any:
        """git in MAIN's repository, hardened (no hooks, no fsmonitor): it reads what a workspace
        wrote (its objects, its files through ``work_tree``). A call that outlives
        :func:`git_timeout` (a FIFO, a hostile include) raises :class:`UnsafeToTell`."""
        return call(self.root, *args, trusted=False, env=env, input=input, work_tree=work_tree)

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
                res = call(self.root, "branch", "--no-track", branch, start, trusted=True)
                if res.returncode != 0:
                    raise WorkspaceError(f"cannot create branch {branch!r}: {failure(res)}")
                created = True
            if os.path.lexists(path / ".git"):
                self.check_repository(path)     # reused only when it is still a repository to trust
                return created
            tmp = path.parent / f".new-{path.name}"
            for leftover in (tmp, path):
                hostfs.remove_tree(leftover)
            path.parent.mkdir(parents=True, exist_ok=True)
            # The new clone is sandbox's until it is handed over: git may run in it now.
            res = call(self.root, "clone", "-q", "--shared", "--no-tags", "-b", branch, str(self.root), str(tmp),
                       trusted=True, timeout=git_timeout() * LONG)
            if res.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise WorkspaceError(f"git clone failed: {failure(res)}")
            call(tmp, "remote", "remove", "origin", trusted=True)
            if exclude:
                info = tmp / ".git" / "info"
                info.mkdir(exist_ok=True)
                with (info / "exclude").open("a") as fh:
                    fh.write("\n".join(exclude) + "\n")
            if owner is not None and os.geteuid() == 0:
                chown_tree(tmp, *owner)
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
            raise UnsafeToTell(f"cannot read the workspace repository {path}: {failure(res)}")
        tip = self._resolve(f"{prefix}refs/heads/{branch}")
        if tip is not None and tip != self._resolve(f"refs/heads/{branch}"):
            upd = self._git("update-ref", f"refs/heads/{branch}", tip)
            if upd.returncode != 0:
                raise WorkspaceError(f"cannot update branch {branch!r} in main's repository: {failure(upd)}")
        return head

    def collect_many(self, items: Sequence[tuple[str, Path, str]],
                     parallel: int = 8) -> dict[str, SandboxError | None]:
        """:meth:`collect` of many workspaces ``(name, path, branch)``: the error of each (None: done).

        A workspace whose refs (read from its files, see :mod:`.refread`) are already mirrored in
        main is not fetched at all; one whose refs point only at objects main already has gets
        them with one ``update-ref`` transaction for all; the others are fetched, several at once.
        """
        out: dict[str, SandboxError | None] = {}
        snaps: dict[str, tuple[str, RefSnapshot]] = {}
        fetch: list[tuple[str, Path, str]] = []
        for name, path, branch in items:
            try:
                self.check_repository(_unresolved_leaf(path))
            except UnsafeToTell as exc:
                out[name] = UnsafeToTell(f"workspace {name!r}: {exc.message}")
                continue
            snap = read_refs(_unresolved_leaf(path))
            if snap is None:
                fetch.append((name, path, branch))
            else:
                snaps[name] = (branch, snap)
        if snaps:
            unmirrored = self._mirror(snaps)
            fetch += [(n, p, b) for n, p, b in items if n in unmirrored]
            out.update({n: None for n in snaps if n not in unmirrored})

        def one(item: tuple[str, Path, str]) -> SandboxError | None:
            try:
                self.collect(*item)
            except SandboxError as exc:
                return exc
            return None
        if len(fetch) <= 1:
            out.update({item[0]: one(item) for item in fetch})
        else:
            with ThreadPoolExecutor(max_workers=min(parallel, len(fetch))) as pool:
                out.update(zip([item[0] for item in fetch], pool.map(one, fetch)))
        return out

    def _mirror(self, snaps: dict[str, tuple[str, RefSnapshot]]) -> set[str]:
        """Make main's refs of each snapshot's workspace what its files say, without a fetch,
        when main has every object they name; the names of those that still need a fetch."""
        listed = self._git("for-each-ref", "--format=%(objectname) %(refname)", WS_REFS + "/", "refs/heads/")
        if listed.returncode != 0:
            return set(snaps)
        have = {ref: oid for oid, _, ref in (line.partition(" ") for line in listed.stdout.splitlines())}
        changes: dict[str, list[str]] = {}
        for name, (branch, snap) in snaps.items():
            prefix = self.prefix(name)
            want = {prefix + ref: oid for ref, oid in snap.refs.items()}
            if snap.head is not None:
                want[prefix + "HEAD"] = snap.head
            tip = snap.refs.get(f"refs/heads/{branch}")
            if tip is not None:
                want[f"refs/heads/{branch}"] = tip
            lines = [f"update {ref} {oid}\n" for ref, oid in want.items() if have.get(ref) != oid]
            lines += [f"delete {ref}\n" for ref in have if ref.startswith(prefix) and ref not in want]
            if lines:
                changes[name] = lines
        if not changes:
            return set()
        needed = sorted({line.split()[2] for lines in changes.values() for line in lines if line.startswith("update")})
        types = self._object_types(needed)
        fetch = set()
        for name, lines in changes.items():
            branch = snaps[name][0]
            # Without a fetch, a ref may only move to an object this workspace already had in main
            # (one of its mirrored refs, or its branch): every object sits in main's one store, and
            # a ref file naming another workspace's commit must not bring that commit in. Anything
            # else is fetched, and git's fetch decides what the repository really holds.
            own = {oid for ref, oid in have.items() if ref.startswith(self.prefix(name))}
            own.add(have.get(f"refs/heads/{branch}", ""))
            for line in lines:
                verb, ref, *rest = line.split()
                if verb == "update" and (rest[0] not in own or types.get(rest[0]) is None or (
                        ref in (f"refs/heads/{branch}", self.prefix(name) + "HEAD") and types[rest[0]] != "commit")):
                    fetch.add(name)         # new commits, another's object, or not a commit: fetched
        batch = "".join(line for name, lines in changes.items() if name not in fetch for line in lines)
        if batch and self._git("update-ref", "--stdin", input=batch).returncode != 0:
            return set(changes)
        return fetch

    def _object_types(self, oids: list[str]) -> dict[str, str]:
        """The type of each of ``oids`` that main's object store holds (one ``cat-file``)."""
        if not oids:
            return {}
        res = self._git("cat-file", "--batch-check", input="".join(f"{oid}\n" for oid in oids))
        if res.returncode != 0:
            return {}
        out = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3:
                out[parts[0]] = parts[1]
        return out

    def owner_uid(self) -> int:
        """The uid a workspace's repository belongs to: the container's user (see :meth:`add`)."""
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
    def find_unsaved(self, name: str, path: Path, branch: str, ignore: tuple[str, ...] = ()) -> list[Unsaved]:
        """What removing the workspace would lose, besides unmerged commits of its branch:
        uncommitted changes and untracked files, stashes, commits on a detached HEAD or on other
        branches. Fails closed (:class:`UnsafeToTell`)."""
        path = path.resolve()
        if not path.exists():
            return []
        head = self.collect(name, path, branch)
        prefix = self.prefix(name)
        keep = [f"refs/heads/{branch}", f"refs/heads/{self.wt.main_branch()}"]
        found: list[Unsaved] = []
        env = {"GIT_INDEX_FILE": str(self.index_file(name))}
        steps = [self._git("read-tree", head or EMPTY_TREE, env=env, work_tree=path)]
        steps.append(self._git("update-index", "-q", "--refresh", env=env, work_tree=path))
        files = self._git("diff-files", "--name-status", env=env, work_tree=path)
        others = self._git("ls-files", "--others", "--exclude-standard", env=env, work_tree=path)
        for res in (steps[0], files, others):
            if res.returncode != 0:
                raise UnsafeToTell(f"cannot compare {path} with its last commit: {failure(res)}")
        for line in files.stdout.splitlines():
            status, _, rel = line.partition("\t")
            if rel not in ignore:
                found.append(Unsaved(UnsavedKind.CHANGES, f"{status} {rel}", rel))
        found += [Unsaved(UnsavedKind.UNTRACKED, f"?? {rel}", rel) for rel in others.stdout.splitlines()
                  if rel and rel not in ignore]
        if self._resolve(f"{prefix}refs/stash"):
            found.append(stash("workspace"))
        if head and not self._contains(head, keep):
            found.append(Unsaved(UnsavedKind.DETACHED_COMMITS,
                                 f"HEAD {head[:12]}: commits not on branch {branch!r} or main (a detached HEAD?)", head))
        refs = self._git("for-each-ref", "--format=%(refname)", f"{prefix}refs/heads/")
        for ref in refs.stdout.split():
            other = ref.removeprefix(f"{prefix}refs/heads/")
            if other != branch and not self._contains(ref, keep):
                found.append(Unsaved(UnsavedKind.OTHER_BRANCH, f"branch {other!r}: commits not on {branch!r} or main",
                                     other))
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
            raise WorkspaceError(f"cannot read commit {commit[:12]}: {failure(res)}")
        dest.mkdir(parents=True, exist_ok=True)
        root = os.path.realpath(dest)
        entries: list[tuple[str, str, str]] = []
        for item in res.stdout.split("\0"):
            if not item:
                continue
            meta, _, rel = item.partition("\t")
            mode, kind, _oid = meta.split(" ")
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
        cat = call(self.root, "cat-file", "--batch", trusted=False, binary=True,
                   input=spec.encode("utf-8", errors="surrogateescape"), timeout=git_timeout() * LONG)
        if cat.returncode != 0:
            raise WorkspaceError(f"cannot read commit {commit[:12]}: {cat.stderr.strip()}")
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
        with tempfile.NamedTemporaryFile(dir=self.wt.common_dir, prefix="sandbox-index-") as idx:
            env = {"GIT_INDEX_FILE": idx.name}
            blob = call(self.root, "hash-object", "-w", "--stdin", trusted=True, input=data, binary=True)
            steps = [self._git("read-tree", parent, env=env)]
            if blob.returncode == 0:
                mode = self._git("ls-tree", parent, "--", rel).stdout.split(" ")[0] or "100644"
                steps.append(self._git("update-index", "--cacheinfo", f"{mode},{blob.stdout.decode().strip()},{rel}",
                                       env=env))
            tree = self._git("write-tree", env=env)
            for res in (*steps, tree):
                if res.returncode != 0:
                    raise WorkspaceError(f"cannot commit {rel} on {branch!r}: {failure(res)}")
            if blob.returncode != 0:
                raise WorkspaceError(f"cannot store {rel}: {blob.stderr.strip()}")
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
            raise WorkspaceError(f"git merge-tree failed: {failure(res)}")
        return self._commit(lines[0].strip(), [ours, theirs], message), []

    def _commit(self, tree: str, parents: list[str], message: str) -> str:
        args = ["commit-tree", tree]
        for p in parents:
            args += ["-p", p]
        res = self._git(*args, "-m", message)
        if res.returncode != 0:
            raise WorkspaceError(f"git commit-tree failed: {failure(res)}")
        return res.stdout.strip()

    def show(self, ref: str, rel: str) -> bytes:
        """A file's bytes as committed at ``ref`` (read from main's object store)."""
        res = call(self.root, "show", f"{ref}:{rel}", trusted=True, binary=True)
        if res.returncode != 0:
            raise WorkspaceError(f"cannot read {rel} at {ref}: {res.stderr.strip()}")
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
