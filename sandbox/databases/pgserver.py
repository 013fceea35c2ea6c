"""One PostgreSQL cluster over a given data directory: on the host, or in Docker.

Both implement the :class:`~sandbox.databases.base.Server` protocol, plus what the
snapshot strategy needs to build a baseline (``initdb``) and load dumps
(``run_client``). A cluster's data directory is ``<volume>/data``; its volume
(``datadir.parent``) also holds its log, so that deleting the volume removes all.

Settings for sandboxes (:data:`SANDBOX_SETTINGS`) keep an idle cluster small
(well under 64 MB of memory) and cheap to clone:

* ``fsync=off``: these are disposable development databases. A host crash may
  corrupt a *running* workspace cluster; the remedy is ``sandbox db reset`` (or a
  restore from a checkpoint). Baselines and checkpoints are taken from stopped
  clusters or atomic snapshots, and the pool is synced after a baseline is built,
  so they survive host crashes. A crash of PostgreSQL itself (a SIGKILL, a
  ``docker kill``, the OOM killer) loses nothing: ``synchronous_commit`` stays on,
  so each commit's WAL is written to the kernel before the commit returns (with
  ``fsync=off`` that is a ``write()``, not a flush: it costs next to nothing), and
  the kernel keeps it when the processes die. With ``synchronous_commit=off`` the
  last ~600 ms of commits lived only in shared memory and were lost.
* ``full_page_writes`` stays on, so an atomic snapshot of a running cluster
  recovers cleanly.
* ``wal_level=minimal``, no WAL senders, ``wal_init_zero``/``wal_recycle`` off
  (cheaper on copy-on-write filesystems), small WAL.
* ``shared_buffers=16MB``, ``max_connections=50`` (the tests of a workspace take their own), few background workers, no JIT,
  autovacuum wakes every two minutes with one worker.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import DatabaseError
from .base import ConnInfo

SANDBOX_SETTINGS: dict[str, str] = {
    "shared_buffers": "16MB",
    "max_connections": "50",
    "superuser_reserved_connections": "2",
    "fsync": "off",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "wal_buffers": "1MB",
    "wal_init_zero": "off",
    "wal_recycle": "off",
    "min_wal_size": "32MB",
    "max_wal_size": "256MB",
    "checkpoint_timeout": "15min",
    "max_worker_processes": "4",
    "max_parallel_workers": "2",
    "max_parallel_workers_per_gather": "1",
    "maintenance_work_mem": "32MB",
    "autovacuum_naptime": "120s",
    "autovacuum_max_workers": "1",
    "jit": "off",
    "huge_pages": "off",
    "dynamic_shared_memory_type": "posix",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "password_encryption": "scram-sha-256",
}

# Written into every cluster we create: passwords everywhere, nothing trusted.
PG_HBA = """\
# written by sandbox: password (SCRAM) authentication only
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""
PG_HBA_DOCKER = PG_HBA + "host    all   all   0.0.0.0/0      scram-sha-256\n"

READY_TIMEOUT = 60.0
_POLL = 0.02
_ALIVE_EVERY = 0.25      # seconds between checks that a starting server still lives
PGDATA_IN_CONTAINER = "/sandbox/data"     # the volume is mounted at /sandbox


def _settings_args(settings: Mapping[str, str]) -> list[str]:
    args: list[str] = []
    for k, v in settings.items():
        args += ["-c", f"{k}={v}"]
    return args


def find_bin_dir(bin_dir: str | Path | None = None) -> Path | None:
    """The directory holding ``initdb``/``postgres``: given, $SANDBOX_PG_BIN, Debian's, or PATH."""
    candidates: list[str | None] = [str(bin_dir) if bin_dir else None, os.environ.get("SANDBOX_PG_BIN")]
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += [str(p) for p in debian]
    for c in candidates:
        if c and (Path(c) / "postgres").exists():
            return Path(c)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and (Path(d) / "pg_ctl").exists():
            return Path(d)
    return None


def preload_client() -> None:
    """Import psycopg in the background (~0.15 s of CPU): call it before waiting on a server
    or a container to start, so the import overlaps that wait instead of following it."""
    if "psycopg" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("psycopg",), name="sandbox-psycopg",
                         daemon=True).start()


def wait_ready(conn: ConnInfo, *, timeout: float = READY_TIMEOUT,
               alive: Callable[[], bool] | None = None, log: Callable[[], str] | None = None,
               on_ready: Callable[[Any], None] | None = None) -> None:
    """Poll until ``conn`` accepts connections (bounded), or the server died. ``on_ready`` gets
    the first connection that answered (with a catalog-only search_path): the work a caller
    does right after the start, without a second handshake."""
    import psycopg  # here, not at module level: it loads while the server starts

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    next_alive_check = time.monotonic() + _ALIVE_EVERY
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(**conn.kwargs(), connect_timeout=2, autocommit=True) as c:
                c.execute("SELECT 1")
                if on_ready is not None:
                    c.execute("SET search_path = pg_catalog, pg_temp")
                    on_ready(c)
            return
        except psycopg.OperationalError as exc:
            last = exc
        now = time.monotonic()
        if alive is not None and now >= next_alive_check:   # ``alive`` may be an API call: not every poll
            next_alive_check = now + _ALIVE_EVERY
            if not alive():
                tail = log() if log else ""
                raise DatabaseError(f"PostgreSQL on port {conn.port} exited while starting"
                                    + (f": {tail}" if tail else "")) from last
        time.sleep(_POLL)
    raise DatabaseError(f"PostgreSQL on port {conn.port} did not accept connections within "
                        f"{timeout:.0f}s") from last


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


