"""Host-side file operations on workspace paths: never follow a link, never open a special file.

A workspace (its agent, or a branch it committed) controls every name under its checkout: any
of them may be a symbolic link to a host path, a FIFO, a device or a socket. What sandbox reads
or writes there, as the user or as root, goes through these helpers:

- every path component is opened relative to the previous one's descriptor with
  ``O_DIRECTORY | O_NOFOLLOW`` (an ``openat`` walk), so no link is followed anywhere in the path;
- files are created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and handed over with ``fchown``
  on that descriptor (never ``chown`` by name);
- files are read with ``O_NOFOLLOW | O_NONBLOCK`` and used only when ``fstat`` says they are
  regular (a FIFO never blocks the reader);
- removal never follows a link (:func:`remove_tree`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path
from typing import Iterator, Sequence

from .errors import WorkspaceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(WorkspaceError):
    """Raised when a workspace path is a symbolic link or a special file where sandbox must not follow it."""


def kind(mode: int) -> str:
    """What a file is, in words (for refusals)."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def open_dir(root: Path, parts: Sequence[str] = (), *, create: bool = False,
             owner: tuple[int, int] | None = None) -> int:
    """A descriptor of ``root/parts…``, opened component by component without following links.

    ``root`` itself must not be a link either. Missing components are made when ``create``
    (mode 0755, handed to ``owner`` when running as root). Raises :class:`UnsafePath`.
    """
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafePath(f"{root} is not a directory sandbox can enter without following a link "
                         f"({exc.strerror})") from exc
    where = root
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise UnsafePath(f"{root}: path component {part!r} is not allowed")
            where = where / part
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=fd)
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if owner is not None and os.geteuid() == 0:
                    os.fchown(nxt, *owner)
            except OSError as exc:
                # ELOOP: a link; ENOTDIR: a file where a directory should be
                raise UnsafePath(f"{where} is {describe(fd, part)}: sandbox does not follow it") from exc
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def directory(root: Path, parts: Sequence[str] = (), *, create: bool = False,
              owner: tuple[int, int] | None = None) -> Iterator[int]:
    """:func:`open_dir` as a context manager (the descriptor is closed on exit)."""
    fd = open_dir(root, parts, create=create, owner=owner)
    try:
        yield fd
    finally:
        os.close(fd)


def describe(dir_fd: int, name: str) -> str:
    """What ``name`` is in the directory ``dir_fd`` (lstat: never follows)."""
    try:
        return kind(os.lstat(name, dir_fd=dir_fd).st_mode)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``lstat`` of ``name`` in ``dir_fd``; None when it does not exist."""
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def read_regular(dir_fd: int | None, name: str | Path, limit: int = 1 << 20) -> bytes | None:
    """The bytes of a regular file (at most ``limit``), or None when it is absent, a link or special.

    Opened with ``O_NOFOLLOW | O_NONBLOCK``: a FIFO never blocks, a link is never read.
    """
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def create_file(dir_fd: int, name: str, data: bytes, *, mode: int = 0o600,
                owner: tuple[int, int] | None = None) -> int:
    """Create ``name`` (it must not exist: ``O_EXCL | O_NOFOLLOW``), write ``data``, hand it to
    ``owner`` (as root) by descriptor. Returns the open descriptor (the caller closes it)."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    return fd


def replace_file(dir_fd: int, name: str, data: bytes, *, mode: int = 0o600,
                 owner: tuple[int, int] | None = None) -> None:
    """Atomically make ``name`` in ``dir_fd`` a regular file holding ``data``: whatever ``name``
    was (a link, a FIFO) is replaced, never followed or opened."""
    tmp = f".{name}.sandbox-tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)
    os.close(create_file(dir_fd, tmp, data, mode=mode, owner=owner))
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def remove_tree(path: Path) -> None:
    """Remove ``path`` whatever it is, never following a link: a link or a special file is
    unlinked (``shutil.rmtree`` refuses a link at the top and would follow none below)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        # fd-based on Linux (rmtree.avoids_symlink_attacks): links inside are unlinked, not followed
        shutil.rmtree(path)
    else:
        path.unlink()

