"""Host file helpers for what git hands over: copying main's ignored files into a new checkout,
giving a tree sandbox made to the container's user. Nothing here follows a link it did not expect."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from .. import hostfs


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Hand a tree sandbox made to the container's user; links are changed themselves, never followed."""
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)


def copy_into(src: Path, dir_fd: int, name: str, owner: tuple[int, int] | None) -> bool:
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
                        copy_into(Path(e.path), sub, e.name, owner)
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
