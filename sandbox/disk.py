"""Full disks: recognising "no space left" wherever it surfaces, and saying so as exit 3.

A full copy-on-write pool (or state folder) shows up in many shapes: ``OSError(ENOSPC)``
from a write, PostgreSQL's SQLSTATE 53100 (``disk_full``), "No space left on device" in
the output of ``btrfs``, ``cp`` or a PostgreSQL log, SQLite's "database or disk is full",
or a cluster that dies at start because it cannot write ``postmaster.pid``. Each boundary
that writes wraps its work in :func:`disk_full_translated`, which re-raises any of these as
:class:`~sandbox.errors.DiskFull` (one line, exit 3) and leaves every other error alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from .errors import DiskFull, UsageError

_TEXTS = ("no space left on device", "database or disk is full", "disk full", "could not extend file",
          "disk quota exceeded")
_SQLSTATES = {"53100"}                  # disk_full
NEARLY_FULL = 0.995                     # a failure on a pool this full is blamed on the space


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was raised from) says that a device is full."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(exc, "sqlstate", None) in _SQLSTATES:
            return True
        text = " ".join(str(part) for part in (exc, getattr(exc, "stderr", None) or "")).lower()
        if any(t in text for t in _TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def usage(path: Path) -> tuple[int, int] | None:
    """(used, total) bytes of the filesystem holding ``path``, or None if it cannot be asked."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        st = os.statvfs(p)
    except OSError:
        return None
    total = st.f_blocks * st.f_frsize
    used = total - st.f_bavail * st.f_frsize
    return used, total


def nearly_full(path: Path | None) -> bool:
    if path is None:
        return False
    u = usage(path)
    return bool(u and u[1] and u[0] / u[1] >= NEARLY_FULL)


@contextlib.contextmanager
def disk_full_translated(what: str, where: Path | None = None) -> Iterator[None]:
    """Re-raise a failure caused by a full device as :class:`DiskFull`; anything else as it is.

    ``where`` is the filesystem the work writes to: a failure while it is (nearly) full is
    blamed on the space even when the message does not say so (PostgreSQL that could not
    write its log dies without a word).
    """
    try:
        yield
    except (DiskFull, UsageError):
        raise
    except Exception as exc:
        if is_disk_full(exc) or nearly_full(where):
            raise DiskFull(what, where=str(where) if where else None) from exc
        raise
