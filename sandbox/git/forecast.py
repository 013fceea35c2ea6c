"""Every git call the overview needs, batched: refs verified in one process, every pair merged in
one ``git merge-tree --write-tree --stdin``, and a workspace's uncommitted work as a throwaway
commit made through an index and a git dir sandbox owns.

Trust: everything here runs in main's repository (``cwd`` is main's checkout) and, where it reads
a workspace's files, with ``--work-tree`` pointed at them and ``trusted=False`` (no hooks, no
fsmonitor). Main's config applies, never the workspace's: git never runs *inside* a workspace's
repository, so nothing it configured (filters, hooks, fsmonitor, aliases) runs on the host. The
workspace's own index is never read or written.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnsafeToTell, WorkspaceError
from .runner import GitFailed, call, failure, run


@dataclass(frozen=True)
class MergeForecast:
    """What merging two commits would do: clean, or the files that would conflict."""

    ours: str
    theirs: str
    clean: bool
    conflicts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {"ours": self.ours, "theirs": self.theirs, "clean": self.clean, "conflicts": list(self.conflicts)}


@dataclass(frozen=True)
class Snapshot:
    """A workspace's working tree as a commit (``commit``) on top of ``head``; ``changed`` and
    ``untracked`` are the files that differ from ``head`` (``commit == head`` when none do)."""

    head: str
    commit: str
    changed: tuple[str, ...] = ()
    untracked: tuple[str, ...] = ()

    @property
    def dirty(self) -> bool:
        return self.commit != self.head


@dataclass(frozen=True)
class DiffStat:
    """A branch against its merge base with main: files changed, lines added and removed."""

    paths: tuple[str, ...] = ()
    added: int = 0
    removed: int = 0
    per_path: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"files": len(self.paths), "added": self.added, "removed": self.removed}


def verify_commits(root: Path, refs: Iterable[str]) -> dict[str, str]:
    """Each ref that names a commit → its id, in one ``git cat-file --batch-check`` (git 2.39's
    ``merge-tree --stdin`` exits on the first bad ref, so refs are verified before)."""
    wanted = [r for r in dict.fromkeys(refs) if r and not r.startswith("-") and "\n" not in r]
    if not wanted:
        return {}
    spec = "".join(f"{r}^{{commit}}\n" for r in wanted)
    out = run(root, "cat-file", "--batch-check=%(objectname) %(objecttype)", trusted=False, input=spec)
    found: dict[str, str] = {}
    for ref, line in zip(wanted, out.splitlines(), strict=False):
        parts = line.split()
        if len(parts) == 2 and parts[1] == "commit":
            found[ref] = parts[0]
    return found


def merge_pairs(root: Path, pairs: Sequence[tuple[str, str]]) -> list[MergeForecast]:
    """Every pair of commits merged in memory by one ``git merge-tree --write-tree --stdin``
    (nothing is checked out; no ref moves). Pass verified commit ids (:func:`verify_commits`)."""
    if not pairs:
        return []
    for a, b in pairs:
        for sha in (a, b):
            if not sha or not all(c in "0123456789abcdef" for c in sha):
                raise WorkspaceError(f"merge forecast: {sha!r} is not a verified commit id")
    spec = "".join(f"{a} {b}\n" for a, b in pairs)
    res = call(root, "merge-tree", "--write-tree", "--stdin", "--name-only", "--no-messages",
               trusted=False, input=spec)
    if res.returncode not in (0, 1):
        raise GitFailed(("merge-tree",), res.returncode, res.stderr, where=str(root))
    tokens = str(res.stdout).split("\0")
    out: list[MergeForecast] = []
    pos = 0
    for a, b in pairs:
        if pos + 1 >= len(tokens):
            raise WorkspaceError(f"git merge-tree answered {len(out)} of {len(pairs)} merges: {failure(res)}")
        status = tokens[pos]
        pos += 2                          # status, tree
        names: list[str] = []
        while pos < len(tokens) and tokens[pos] != "":
            names.append(tokens[pos])
            pos += 1
        pos += 1                          # the empty token ending this merge
        out.append(MergeForecast(a, b, status == "1", tuple(dict.fromkeys(names))))
    return out


def diffstats(root: Path, base: str, tips: dict[str, str]) -> dict[str, DiffStat]:
    """Each tip against its merge base with ``base`` (``base...tip``): one ``git diff --numstat``
    per distinct tip (a tip equal to ``base`` costs nothing)."""
    cache: dict[str, DiffStat] = {}
    out: dict[str, DiffStat] = {}
    for key, tip in tips.items():
        if tip == base:
            out[key] = DiffStat()
            continue
        if tip not in cache:
            text = run(root, "diff", "--numstat", "-z", "--no-renames", f"{base}...{tip}", "--",
                       trusted=False)
            per: dict[str, tuple[int, int]] = {}
            for item in text.split("\0"):
                if not item:
                    continue
                add, rem, path = item.split("\t", 2)
                per[path] = (int(add) if add.isdigit() else 0, int(rem) if rem.isdigit() else 0)
            cache[tip] = DiffStat(tuple(sorted(per)), sum(a for a, _ in per.values()),
                                  sum(r for _, r in per.values()), per)
        out[key] = cache[tip]
    return out


def user_excludes(root: Path) -> str:
    """The patterns of the user's own excludes file (``core.excludesFile``, else git's default
    ``$XDG_CONFIG_HOME/git/ignore``): :func:`snapshot` names an excludes file of its own, which
    replaces the user's, so it carries these along."""
    res = call(root, "config", "--path", "--get", "core.excludesFile", trusted=True)
    name = str(res.stdout).strip() if res.returncode == 0 else ""
    if not name:
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        name = os.path.join(base, "git", "ignore")
    try:
        return Path(name).read_text(errors="replace") if os.path.isfile(name) else ""
    except OSError:
        return ""


def snapshot(root: Path, index: Path, work_tree: Path, head: str, *, exclude: Sequence[str] = (),
             also_excluded: str = "", message: str = "sandbox overview: uncommitted work") -> Snapshot:
    """The working tree at ``work_tree`` as a throwaway commit on ``head``, made in main's
    repository with sandbox's own index (``index``) and ``--work-tree``: the workspace's index,
    config and hooks are never used. ``exclude``: paths sandbox manages there (its env file),
    left out through an excludes file of sandbox's, which also holds ``also_excluded`` (the
    user's own patterns, :func:`user_excludes`). The commit is reachable from no ref (git's gc
    removes it).

    The index is kept between calls, with what the last call found beside it (``index.json``):
    while ``head`` stays, a call is ``git add -A`` and ``git write-tree`` (git's stat cache spares
    re-reading unchanged files), and an unchanged tree gives the last answer back."""
    if not os.path.isdir(work_tree) or os.path.islink(work_tree):
        raise UnsafeToTell(f"{work_tree} is not the workspace's directory")
    index.parent.mkdir(parents=True, exist_ok=True)
    excludes = index.with_name(index.name + ".exclude")
    wanted = also_excluded.rstrip("\n") + "\n" + "".join(f"/{p}\n" for p in exclude)
    if not excludes.is_file() or excludes.read_text() != wanted:
        excludes.write_text(wanted)
    memo_path = index.with_name(index.name + ".json")
    memo = _load_memo(memo_path)
    env = {"GIT_INDEX_FILE": str(index)}

    def git(*args: str) -> str:
        return run(root, "-c", f"core.excludesFile={excludes}", *args, trusted=False, env=env, work_tree=work_tree)

    if memo.get("head") != head or not index.exists():
        git("read-tree", "--reset", head) if index.exists() else git("read-tree", head)
        memo = {}
    git("add", "-A", "--", ".")
    tree = git("write-tree").strip()
    if memo.get("tree") == tree:
        return Snapshot(head, str(memo["commit"]), tuple(memo["changed"]), tuple(memo["untracked"]))
    names = git("diff-index", "--cached", "--name-status", "-z", "--no-renames", head, "--")
    changed: list[str] = []
    untracked: list[str] = []
    items = names.split("\0")
    for status, path in zip(items[0::2], items[1::2], strict=False):
        (untracked if status == "A" else changed).append(path)
    commit = head
    if changed or untracked:
        commit = run(root, "commit-tree", tree, "-p", head, "-m", message, trusted=False,
                     env={"GIT_AUTHOR_NAME": "sandbox", "GIT_AUTHOR_EMAIL": "sandbox@localhost",
                          "GIT_COMMITTER_NAME": "sandbox", "GIT_COMMITTER_EMAIL": "sandbox@localhost"}).strip()
    tmp = memo_path.with_name(f"{memo_path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps({"head": head, "tree": tree, "commit": commit, "changed": changed,
                               "untracked": untracked}))
    os.replace(tmp, memo_path)
    return Snapshot(head, commit, tuple(changed), tuple(untracked))


def _load_memo(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def grep_words(root: Path, paths_at: dict[str, Sequence[str]], words: Sequence[str]) -> dict[str, list[str]]:
    """For each commit of ``paths_at``, the files among its paths that contain every one of
    ``words`` as a whole word: one ``git grep -w -F --all-match`` over all the commits (binary
    files skipped)."""
    every = sorted({p for paths in paths_at.values() for p in paths})
    found: dict[str, list[str]] = {c: [] for c in paths_at}
    if not every or not words:
        return found
    args = ["grep", "-I", "-l", "-z", "-w", "-F", "--all-match"]
    for w in words:
        args += ["-e", w]
    args += [*paths_at, "--", *(f":(literal){p}" for p in every)]
    res = call(root, *args, trusted=False)
    if res.returncode not in (0, 1):
        raise GitFailed(("grep",), res.returncode, res.stderr, where=str(root))
    for item in str(res.stdout).split("\0"):
        commit, _, path = item.partition(":")
        if path and commit in paths_at and path in paths_at[commit]:
            found[commit].append(path)
    return found


def show_diff(root: Path, base: str, tip: str, *, limit: int = 400_000) -> str:
    """The patch of ``tip`` against its merge base with ``base`` (for a reviewer), cut at ``limit``."""
    text = run(root, "diff", "--no-color", "--no-ext-diff", "--no-textconv", f"{base}...{tip}", "--",
               trusted=False)
    return text if len(text) <= limit else text[:limit] + "\n… (cut)\n"
