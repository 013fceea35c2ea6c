"""Seeing that something the overview reads changed: refs, indexes and HEADs of main and of each
workspace's repository, the registry, and the files of every worktree. Cheap polling with
``lstat`` (nothing is followed or opened, a FIFO cannot block it), at most :data:`MAX_FILES`
entries a round. Used by ``overview --watch`` (:func:`watch_terminal`) and the dashboard's events.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.console import Console

from .model import Overview
from .render import render

SKIP_DIRS = frozenset({".git", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache", ".pytest_cache",
                       ".sandbox", ".tox"})
MAX_FILES = 50_000


class ChangeWatch:
    """Says when anything the overview reads changed: refs, indexes and HEADs of main and of each
    workspace's repository, the registry, and the files of every worktree (by ``lstat``)."""

    def __init__(self, paths: Callable[[], Iterable[Path]]) -> None:
        self.paths = paths
        self.last = self.fingerprint()

    def fingerprint(self) -> int:
        seen: list[tuple[str, int, int, int]] = []
        budget = [MAX_FILES]
        for top in self.paths():
            _walk(top, seen, budget)
        return hash(tuple(seen))

    def changed(self) -> bool:
        now = self.fingerprint()
        moved, self.last = now != self.last, now
        return moved

    def wait(self, timeout: float, interval: float = 1.0) -> bool:
        """True as soon as something changed, False after ``timeout`` seconds of calm."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.changed():
                return True
            time.sleep(interval)
        return False


def _walk(top: Path, seen: list[tuple[str, int, int, int]], budget: list[int]) -> None:
    try:
        st = os.lstat(top)
    except OSError:
        seen.append((str(top), 0, 0, 0))
        return
    seen.append((str(top), st.st_mtime_ns, st.st_size, st.st_ino))
    if not stat.S_ISDIR(st.st_mode):
        return
    stack = [str(top)]
    while stack and budget[0] > 0:
        d = stack.pop()
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            budget[0] -= 1
            try:
                est = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(est.st_mode):
                if e.name not in SKIP_DIRS:
                    stack.append(e.path)
                continue
            seen.append((e.path, est.st_mtime_ns, est.st_size, est.st_ino))


def watch_terminal(console: Console, get: Callable[[], Overview], paths: Callable[[], Iterable[Path]]) -> None:
    """Draw the overview, then again whenever something changed, until interrupted: in place on a
    terminal (``rich.live``), each new view after the last on a pipe."""
    from rich.live import Live
    seen = ChangeWatch(paths)
    with contextlib.suppress(KeyboardInterrupt):
        if not console.is_terminal:
            console.print(render(get()))
            while True:
                if seen.wait(timeout=30.0):
                    console.print(render(get()))
                    console.file.flush()
        with Live(render(get()), console=console, auto_refresh=False) as live:
            while True:
                if seen.wait(timeout=30.0):
                    live.update(render(get()), refresh=True)
