"""Reading an untrusted workspace repository's refs from its files, without running git.

``IsolatedRepos.collect_many`` uses it to skip the ``git fetch`` of a workspace whose refs point
only at objects main already has (an unchanged workspace: most of them, most of the time). Only
the plain files format is understood: loose refs (a 40-hex id each), ``packed-refs`` and
``HEAD`` (an id, or ``ref: refs/heads/…``). Anything else (a reftable, a symbolic ref below
``refs/``, a name git would not accept, a file that is not regular) makes :func:`read_refs`
return None and the caller falls back to the fetch, which git makes safe for untrusted
repositories. Every file is read with the door's no-follow reads (:mod:`sandbox.hostfs`), after
``IsolatedRepos.check_repository`` refused links and special files.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .. import hostfs

_OID = re.compile(r"[0-9a-f]{40}")
# a conservative subset of git's ref names: anything else goes through the fetch
_PART = re.compile(r"[A-Za-z0-9_+=@%-][A-Za-z0-9._+=@%-]*")
_MAX_REFS = 10_000


@dataclass(frozen=True)
class RefSnapshot:
    """A workspace repository's refs as its files say: ``refs`` (full name → id) and ``head``
    (the id HEAD resolves to; None when HEAD is unborn)."""

    refs: dict[str, str]
    head: str | None


def _valid(name: str) -> bool:
    parts = name.split("/")
    return (len(parts) >= 2 and parts[0] == "refs"
            and all(_PART.fullmatch(p) and ".." not in p and not p.endswith(".lock") and not p.endswith(".")
                    for p in parts[1:]))


def _oid(data: bytes | None) -> str | None:
    if data is None:
        return None
    text = data.decode("ascii", errors="replace").strip()
    return text if _OID.fullmatch(text) else None


def _loose(git_dir: Path, refs: dict[str, str]) -> bool:
    """Every loose ref below ``refs/`` into ``refs``; False when one is not a plain ref."""
    stack = [("refs", ["refs"])]
    while stack:
        prefix, parts = stack.pop()
        try:
            fd = hostfs.open_dir(git_dir, parts)
        except (hostfs.UnsafePath, OSError):
            return False
        try:
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in os.scandir(fd)]
            for name, st in entries:
                full = f"{prefix}/{name}"
                if stat.S_ISDIR(st.st_mode):
                    stack.append((full, [*parts, name]))
                    continue
                if not stat.S_ISREG(st.st_mode) or not _valid(full):
                    return False
                oid = _oid(hostfs.read_regular(fd, name, limit=128))
                if oid is None or len(refs) >= _MAX_REFS:
                    return False      # a symbolic ref, an unreadable one, or too many: the fetch decides
                refs[full] = oid
        finally:
            os.close(fd)
    return True


def _packed(git_dir: Path, refs: dict[str, str]) -> bool:
    """``packed-refs`` into ``refs`` (loose refs win); False when it cannot be read plainly."""
    with hostfs.directory(git_dir) as fd:
        if hostfs.lstat_at(fd, "packed-refs") is None:
            return True
        data = hostfs.read_regular(fd, "packed-refs", limit=8 << 20)
    if data is None:
        return False
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line or line.startswith("#") or line.startswith("^"):
            continue
        oid, _, name = line.partition(" ")
        if not _OID.fullmatch(oid) or not _valid(name) or len(refs) >= _MAX_REFS:
            return False
        refs.setdefault(name, oid)
    return True


def read_refs(path: Path) -> RefSnapshot | None:
    """The refs of the repository at ``path/.git`` read from its files, or None when they are not
    in a form this reader is sure about (the caller then fetches)."""
    git_dir = path / ".git"
    try:
        with hostfs.directory(git_dir) as fd:
            if hostfs.lstat_at(fd, "reftable") is not None:
                return None
            head_raw = hostfs.read_regular(fd, "HEAD", limit=4096)
        refs: dict[str, str] = {}
        if not _loose(git_dir, refs) or not _packed(git_dir, refs):
            return None
    except (hostfs.UnsafePath, OSError):
        return None
    if head_raw is None:
        return None
    text = head_raw.decode("utf-8", errors="replace").strip()
    if text.startswith("ref:"):
        target = text[4:].strip()
        if not _valid(target):
            return None
        return RefSnapshot(refs, refs.get(target))
    oid = _oid(head_raw)
    return RefSnapshot(refs, oid) if oid is not None else None
