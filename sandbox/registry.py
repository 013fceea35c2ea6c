"""The registry: sandbox's state in SQLite under ``.sandbox/registry.db``.

Agents call sandbox concurrently, so every write is a short transaction in WAL
mode with a busy timeout, and allocations use ``BEGIN IMMEDIATE`` so two
processes can never hand out the same port. Cross-process critical sections
(one workspace's lifecycle, the merge queue) use file locks under ``locks/``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import SandboxError, WorkspaceError

STATES = ("creating", "ready", "stopped", "broken", "removing")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workspaces (
    name TEXT PRIMARY KEY,
    branch TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    cause TEXT,
    runtime TEXT NOT NULL,
    strategy TEXT,
    base_ref TEXT,
    branch_created INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS ports (
    port INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS allowances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    revisions TEXT NOT NULL,
    rules TEXT NOT NULL,
    reason TEXT NOT NULL,
    who TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS merges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    base_head TEXT,
    revisions TEXT NOT NULL,
    commit_sha TEXT,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class WorkspaceRecord:
    name: str
    branch: str
    path: str
    state: str
    runtime: str
    cause: str | None = None
    strategy: str | None = None
    base_ref: str | None = None
    branch_created: bool = False
    pid: int | None = None
    created_at: str = ""
    updated_at: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    """A connection in WAL mode that waits for other processes' locks instead of failing."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A short write transaction that holds the write lock from its start."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def host_state_dir() -> Path:
    """Where host-wide state lives (port reservations shared by every project on this host)."""
    env = os.environ.get("SANDBOX_HOST_STATE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/sandbox")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sandbox"


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
                conn = stack.enter_context(_sqlite(self.path))
                conn.execute("CREATE TABLE IF NOT EXISTS reservations (port INTEGER PRIMARY KEY, "
                             "registry TEXT NOT NULL, owner TEXT NOT NULL, purpose TEXT NOT NULL)")
            except (OSError, sqlite3.Error):
                conn = None     # no writable host state: fall back to the project's own view
            if conn is None:
                yield None
            else:
                with _immediate(conn):
                    yield conn


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Registry:
    """Workspaces and their state machine, port blocks, allowances, merges, meta."""

    def __init__(self, state_dir: Path, host_ports: HostPorts | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "registry.db"
        self.host = host_ports or HostPorts()
        self.locks_dir = state_dir / "locks"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.locks_dir.mkdir(exist_ok=True)
        with self._connect() as conn:
            conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with _sqlite(self.path) as conn:
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.row_factory = sqlite3.Row
                yield conn
        except sqlite3.OperationalError as exc:
            raise SandboxError(f"the registry {self.path} is unusable: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction that holds the write lock from its start."""
        with self._connect() as conn, _immediate(conn):
            yield conn

    # -- locks --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool = True) -> Iterator[None]:
        """An exclusive cross-process lock (``workspace-a``, ``merge``, ``baseline``...).

        A lock held by a process that dies is released by the kernel.
        """
        path = self.locks_dir / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(fd, flags)
            except BlockingIOError as exc:
                raise WorkspaceError(f"{name} is busy: another sandbox process holds its lock") from exc
            yield
        finally:
            os.close(fd)

    # -- workspaces ---------------------------------------------------------------------
    @staticmethod
    def _record(row: sqlite3.Row) -> WorkspaceRecord:
        return WorkspaceRecord(
            name=row["name"], branch=row["branch"], path=row["path"], state=row["state"],
            runtime=row["runtime"], cause=row["cause"], strategy=row["strategy"],
            base_ref=row["base_ref"], branch_created=bool(row["branch_created"]), pid=row["pid"],
            created_at=row["created_at"], updated_at=row["updated_at"],
            data=json.loads(row["data"] or "{}"))

    def get(self, name: str) -> WorkspaceRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM workspaces WHERE name = ?", (name,)).fetchone()
        return self._record(row) if row else None

    def all(self) -> list[WorkspaceRecord]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM workspaces ORDER BY name").fetchall()
        return [self._record(r) for r in rows]

    def insert(self, rec: WorkspaceRecord) -> bool:
        """Insert a new workspace; False if one of that name exists already."""
        ts = now()
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM workspaces WHERE name = ?", (rec.name,)).fetchone():
                return False
            conn.execute(
                "INSERT INTO workspaces (name, branch, path, state, cause, runtime, strategy, base_ref,"
                " branch_created, pid, created_at, updated_at, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec.name, rec.branch, rec.path, rec.state, rec.cause, rec.runtime, rec.strategy,
                 rec.base_ref, int(rec.branch_created), rec.pid, ts, ts, json.dumps(rec.data)))
        return True

    def update(self, name: str, **fields: Any) -> None:
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown state {fields['state']!r}")
        if "data" in fields:
            fields["data"] = json.dumps(fields["data"])
        if "branch_created" in fields:
            fields["branch_created"] = int(fields["branch_created"])
        fields["updated_at"] = now()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE workspaces SET {cols} WHERE name = ?", (*fields.values(), name))

    def set_state(self, name: str, state: str, cause: str | None = None) -> None:
        # transitional states record their process, so gc can tell a crash from work in progress
        self.update(name, state=state, cause=cause,
                    pid=os.getpid() if state in ("creating", "removing") else None)

    def delete(self, name: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM workspaces WHERE name = ?", (name,))
        self.release(name)

    # -- ports ----------------------------------------------------------------------------
    def allocate(self, owner: str, purpose: str, count: int = 1, *, base: int = 20000,
                 limit: int = 65535) -> list[int]:
        """Allocate ``count`` contiguous host ports for ``owner`` (idempotent per owner+purpose).

        Blocks are aligned to ``count`` from ``base``; ports already bound by some
        other process on 127.0.0.1 are skipped.
        """
        me = str(self.path.resolve())
        with self.transaction() as conn, self.host.transaction() as host:
            mine = [r[0] for r in conn.execute(
                "SELECT port FROM ports WHERE owner = ? AND purpose = ? ORDER BY port", (owner, purpose))]
            if len(mine) == count:
                if host is not None:
                    host.executemany("INSERT OR IGNORE INTO reservations VALUES (?,?,?,?)",
                                     [(p, me, owner, purpose) for p in mine])
                return mine
            if mine:
                conn.execute("DELETE FROM ports WHERE owner = ? AND purpose = ?", (owner, purpose))
            taken = {r[0] for r in conn.execute("SELECT port FROM ports")}
            if host is not None:
                host.execute("DELETE FROM reservations WHERE registry = ? AND owner = ? AND purpose = ?",
                             (me, owner, purpose))
                for registry in [r[0] for r in host.execute("SELECT DISTINCT registry FROM reservations")]:
                    if registry != me and not Path(registry).exists():
                        host.execute("DELETE FROM reservations WHERE registry = ?", (registry,))
                taken |= {r[0] for r in host.execute("SELECT port FROM reservations WHERE registry != ?", (me,))}
            start = base
            while start + count - 1 <= limit:
                block = list(range(start, start + count))
                if not taken.intersection(block) and all(_port_free(p) for p in block):
                    conn.executemany("INSERT INTO ports (port, owner, purpose) VALUES (?,?,?)",
                                     [(p, owner, purpose) for p in block])
                    if host is not None:
                        host.executemany("INSERT OR REPLACE INTO reservations VALUES (?,?,?,?)",
                                         [(p, me, owner, purpose) for p in block])
                    return block
                start += count
        raise WorkspaceError(f"no free block of {count} ports from {base} to {limit}")

    def ports(self, owner: str, purpose: str | None = None) -> list[int]:
        with self._connect() as conn:
            if purpose is None:
                rows = conn.execute("SELECT port FROM ports WHERE owner = ? ORDER BY port", (owner,))
            else:
                rows = conn.execute("SELECT port FROM ports WHERE owner = ? AND purpose = ? ORDER BY port",
                                    (owner, purpose))
            return [r[0] for r in rows]

    def port_owners(self) -> dict[str, list[int]]:
        with self._connect() as conn:
            out: dict[str, list[int]] = {}
            for r in conn.execute("SELECT owner, port FROM ports ORDER BY port"):
                out.setdefault(r[0], []).append(r[1])
            return out

    def release(self, owner: str, purpose: str | None = None) -> None:
        me = str(self.path.resolve())
        with self.transaction() as conn, self.host.transaction() as host:
            if purpose is None:
                conn.execute("DELETE FROM ports WHERE owner = ?", (owner,))
                if host is not None:
                    host.execute("DELETE FROM reservations WHERE registry = ? AND owner = ?", (me, owner))
            else:
                conn.execute("DELETE FROM ports WHERE owner = ? AND purpose = ?", (owner, purpose))
                if host is not None:
                    host.execute("DELETE FROM reservations WHERE registry = ? AND owner = ? AND purpose = ?",
                                 (me, owner, purpose))

    # -- meta, allowances, merges ---------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        with self.transaction() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def record_allowance(self, workspace: str, revisions: list[str], rules: list[str], reason: str,
                         who: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO allowances (workspace, revisions, rules, reason, who, at) "
                         "VALUES (?,?,?,?,?,?)",
                         (workspace, json.dumps(revisions), json.dumps(rules), reason, who, now()))

    def allowances(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return [{"workspace": r["workspace"], "revisions": json.loads(r["revisions"]),
                     "rules": json.loads(r["rules"]), "reason": r["reason"], "who": r["who"], "at": r["at"]}
                    for r in conn.execute("SELECT * FROM allowances ORDER BY id")]

    def record_merge(self, workspace: str, base_head: str | None, revisions: list[str],
                     commit_sha: str | None) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO merges (workspace, base_head, revisions, commit_sha, at) "
                         "VALUES (?,?,?,?,?)", (workspace, base_head, json.dumps(revisions), commit_sha, now()))

    def merges(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            return [{"workspace": r["workspace"], "base_head": r["base_head"],
                     "revisions": json.loads(r["revisions"]), "commit": r["commit_sha"], "at": r["at"]}
                    for r in conn.execute("SELECT * FROM merges ORDER BY id")]


class RegistryPorts:
    """Adapts the registry to the databases' ``PortAllocator`` protocol."""

    def __init__(self, registry: Registry, base: int) -> None:
        self.registry = registry
        self.base = base

    def allocate(self, owner: str, purpose: str, count: int = 1) -> list[int]:
        return self.registry.allocate(owner, purpose, count, base=self.base)

    def release(self, owner: str, purpose: str | None = None) -> None:
        self.registry.release(owner, purpose)
