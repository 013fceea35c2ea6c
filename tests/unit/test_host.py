"""sandbox.host: the one file lock, the pid-reuse-safe liveness check, the one timestamp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.host import LockHeld, file_lock, lock_busy, now, process_alive, process_start


def _holder(path: Path) -> subprocess.Popen[str]:
    """Another process that holds ``path``'s lock (claimed) until its stdin closes."""
    code = ("import sys; from pathlib import Path; from sandbox.host import file_lock\n"
            f"with file_lock(Path({str(path)!r}), claim=True):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_names_its_holder_and_is_free_once_it_exits(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "x.lock"
    proc = _holder(path)
    try:
        assert lock_busy(path)
        with pytest.raises(LockHeld) as caught, file_lock(path, 0):
            pass
        assert f"pid {proc.pid}" in caught.value.holder
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
    assert not lock_busy(path)
    with file_lock(path, 0):
        assert path.stat().st_mode & 0o777 == 0o600


def test_shared_locks_coexist_and_exclude_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    with file_lock(path, shared=True), file_lock(path, 0, shared=True):
        assert lock_busy(path)                               # an exclusive lock must wait
    assert not lock_busy(path)


def test_a_reused_pid_is_not_alive() -> None:
    me = os.getpid()
    start = process_start(me)
    assert start is not None and process_alive(me, start) and process_alive(me)
    assert not process_alive(me, str(int(start) + 1))       # the same pid, another process
    assert not process_alive(None) and not process_alive(0)


def test_now_is_utc_to_the_second() -> None:
    stamp = now()
    assert stamp.endswith("+00:00") and len(stamp) == len("2026-01-01T00:00:00+00:00")
