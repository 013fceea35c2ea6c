"""Port reservations shared by every sandbox project on this host (``ports.db`` in host state)."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..host import host_state_dir
from .database import immediate, open_sqlite


class HostPorts:
    """Port reservations of every sandbox project on this host.

    Each project's registry hands out its own ports; without a host-wide view, a stopped
    workspace's port could be given to another project and its next start would fail.
    Reservations of projects whose registry no longer exists are dropped.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or host_state_dir()
        self.path = self.dir / "ports.db"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection | None]:
        with contextlib.ExitStack() as stack:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                conn = stack.enter_context(open_sqlite(self.path))
                conn.execute("CREATE TABLE IF NOT EXISTS reservations (port INTEGER PRIMARY KEY, "
                             "registry TEXT NOT NULL, owner TEXT NOT NULL, purpose TEXT NOT NULL)")
            except (OSError, sqlite3.Error):
                conn = None     # no writable host state: fall back to the project's own view
            if conn is None:
                yield None
            else:
                with immediate(conn):
                    yield conn


def port_free(port: int) -> bool:
    """Whether nothing listens on (or holds) ``port`` on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
