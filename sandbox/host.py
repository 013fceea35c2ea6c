"""Host facts with one home each: the time, file locks, processes, host-wide state.

A leaf: it imports nothing of sandbox, so every layer (the registry, the intent journal,
the runtimes, the database strategies) can use it.

* :func:`now` is the one timestamp format of sandbox's records (UTC, ISO 8601, seconds).
* :func:`file_lock` is the one cross-process lock: ``flock`` on a file, exclusive or shared,
  waiting forever, a bounded time, or not at all. A lock held by a process that dies is
  released by the kernel. The holder writes who it is into the file (``claim=True``), so a
  waiter that gives up can name it (:class:`LockHeld`).
* :func:`process_alive` tells whether the process that recorded (pid, start) still runs; a pid
  the kernel reused for another process does not count.
* :func:`host_state_dir` is where state shared by every project on this host lives.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LockHeld", "file_lock", "host_state_dir", "lock_busy", "now", "process_alive",
           "process_start"]


def now() -> str:
    """The current time as sandbox records it: UTC, ISO 8601, to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ locks

class LockHeld(BlockingIOError):
    """Another process holds the lock and did not let go in time; ``holder`` is who (may be '')."""

    def __init__(self, path: Path, holder: str = "") -> None:
        super().__init__(f"{path} is locked" + (f" by {holder}" if holder else ""))
        self.path = path
        self.holder = holder


def _claim(fd: int) -> None:
    """Write who holds a lock into its file (read by those who wait for it)."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    prog = "sandbox" if prog in ("__main__.py", "sandbox") else prog
    who = f"pid {os.getpid()}: {' '.join([prog, *sys.argv[1:]])}"
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, who[:300].encode("utf-8", errors="replace"), 0)


def _holder(fd: int) -> str:
    """Who holds a lock, as its holder wrote it (empty when unknown)."""
    with contextlib.suppress(OSError):
        return os.pread(fd, 300, 0).decode("utf-8", errors="replace").strip()
    return ""


def _acquire(fd: int, op: int, timeout: float | None) -> None:
    """Take the lock: wait forever (None), or poll until ``timeout`` seconds have passed (flock
    itself cannot time out; 0 tries once). Raises :class:`BlockingIOError` when still held."""
    if timeout is None:
        fcntl.flock(fd, op)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


@contextlib.contextmanager
def file_lock(path: Path, timeout: float | None = None, *, shared: bool = False,
              claim: bool = False, mode: int = 0o600) -> Iterator[None]:
    """Hold ``path``'s lock (made with its parents if missing) for the ``with`` block.

    ``timeout``: None waits as long as it takes, 0 tries once, else seconds to wait; then
    :class:`LockHeld` (naming the holder if it claimed the lock). ``shared``: a reader's lock,
    held by many at once. ``claim``: write this process into the file while it holds it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, mode)
    try:
        try:
            _acquire(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, timeout)
        except BlockingIOError as exc:
            raise LockHeld(path, _holder(fd)) from exc
        if claim and not shared:
            _claim(fd)
        try:
            yield
        finally:
            if claim and not shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)        # still held: no waiter reads a holder that has gone
    finally:
        os.close(fd)


def lock_busy(path: Path) -> bool:
    """Whether someone holds ``path``'s lock right now (an operation is in progress)."""
    if not Path(path).exists():
        return False
    try:
        with file_lock(path, 0):
            return False
    except LockHeld:
        return True


# -------------------------------------------------------------------------- processes

def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None if it is gone
    or a zombie. With the pid it names one process: a pid reused later has another start."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int | None, start: str | None = None) -> bool:
    """Whether the process that recorded (``pid``, ``start``) still runs.

    With ``/proc``, a pid that now names another process (another start time) is not alive;
    ``start`` None (an older record) only asks whether the pid runs."""
    if not pid or pid <= 0:
        return False
    if Path("/proc/self/stat").exists():
        now_start = process_start(pid)
        return now_start is not None and (start is None or now_start == start)
    try:                                       # no /proc: signal 0 answers whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -------------------------------------------------------------------------- host state

def host_state_dir() -> Path:
    """Where host-wide state lives (port reservations and subnets shared by every project)."""
    env = os.environ.get("SANDBOX_HOST_STATE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/sandbox")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sandbox"
