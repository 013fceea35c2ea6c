"""The registry: sandbox's state in SQLite under ``.sandbox/registry.db``.

Agents call sandbox concurrently, so every write is a short transaction in WAL
mode with a bounded busy timeout, and allocations use ``BEGIN IMMEDIATE`` so two
processes can never hand out the same port. Cross-process critical sections
(one workspace's lifecycle, the merge queue) use file locks under ``locks/``.

A registry that cannot be misread
---------------------------------
An empty registry would read as "no workspaces", and ``gc`` would then remove every
workspace's container and database. So a registry is only used once it has shown
that it is the one ``init`` made and that nothing was lost since:

* ``init`` creates it (``create=True``); every other open verifies it: an SQLite
  header, ``PRAGMA quick_check``, the ``registry.initialised`` sentinel, the
  workspace row count recorded by the last write, and a *generation* (bumped by
  every write) no older than the backup's. A file that was emptied (``: >``),
  overwritten, truncated or rolled back fails one of these: :class:`RegistryDamaged`
  (exit 3), naming the backup and ``sandbox doctor --repair``.
* After every write the database is copied with SQLite's backup API to
  ``registry.backup.db`` (under a file lock, so backups never go back in time):
  a restore loses at most the write in flight.
* :func:`repair` moves the damaged file aside and restores the backup; the
  restored registry is flagged ``registry.restored`` so that ``gc`` adopts or
  reports what it does not know instead of removing it, until the user says
  the registry is trusted again.
* A lock held by another process is waited for ``SANDBOX_REGISTRY_TIMEOUT``
  seconds (30 by default), then :class:`RegistryBusy` (exit 3).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import (DiskFull, LockBusy, RegistryBusy, RegistryDamaged, SandboxError, UsageError,
                     WorkspaceError)

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
CREATE TABLE IF NOT EXISTS intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    workspace TEXT,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT,
    data TEXT NOT NULL DEFAULT '{}',
    cause TEXT,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
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


@dataclass
class IntentRecord:
    """An operation that said what it was about to do (see :mod:`sandbox.intents`).

    ``status`` is ``running`` while its process works on it, ``failed`` when it raised with a
    step left unfinished, ``recovering`` while another command finishes or undoes it.
    """

    id: int
    op: str
    workspace: str | None
    step: str
    status: str
    pid: int
    pid_start: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    cause: str | None = None
    started_at: str = ""
    updated_at: str = ""


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
    """Whether the process that recorded (``pid``, ``start``) still runs."""
    if not pid or pid <= 0:
        return False
    if Path("/proc").is_dir() and Path("/proc/self/stat").exists():
        now_start = process_start(pid)
        return now_start is not None and (start is None or now_start == start)
    try:                                       # no /proc: signal 0 answers whether the pid exists
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


SCHEMA_VERSION = 2
BACKUP_NAME = "registry.backup.db"
SQLITE_HEADER = b"SQLite format 3\x00"
DEFAULT_TIMEOUT = 30.0           # seconds a command waits for another process's registry lock
# meta keys the registry keeps about itself
INITIALISED, GENERATION, COUNT, RESTORED = ("registry.initialised", "registry.generation",
                                            "registry.workspaces", "registry.restored")


def lock_timeout() -> float:
    """Seconds to wait for another process's registry lock (``SANDBOX_REGISTRY_TIMEOUT``)."""
    try:
        value = float(os.environ.get("SANDBOX_REGISTRY_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if 0 < value < 86400 else DEFAULT_TIMEOUT


def _claim(fd: int) -> None:
    """Write who holds a lock into its file (read by those who wait for it)."""
    import sys
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


@contextlib.contextmanager
def _sqlite(path: Path, timeout: float = DEFAULT_TIMEOUT) -> Iterator[sqlite3.Connection]:
    """A connection in WAL mode that waits (``timeout`` s) for other processes' locks."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
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


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _ro_uri(path: Path) -> str:
    from urllib.parse import quote
    return f"file:{quote(str(path))}?mode=ro&immutable=1"   # backups are replaced, never changed


def _generation(path: Path) -> int | None:
    """The generation recorded in a registry file (read-only), or None if it has none."""
    if not path.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(_ro_uri(path), uri=True, timeout=5)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (GENERATION,)).fetchone()
    except sqlite3.Error:
        return None
    try:
        return int(row[0]) if row else None
    except ValueError:
        return None


def _backup_usable(path: Path) -> bool:
    """Whether ``path`` is a whole registry backup (header, integrity, sentinel)."""
    try:
        with open(path, "rb") as fh:
            if fh.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                return False
        with contextlib.closing(sqlite3.connect(_ro_uri(path), uri=True, timeout=5)) as conn:
            check = conn.execute("PRAGMA quick_check").fetchone()
            sentinel = conn.execute("SELECT 1 FROM meta WHERE key = ?", (INITIALISED,)).fetchone()
        return bool(check and check[0] == "ok" and sentinel)
    except (OSError, sqlite3.Error):
        return False


def _disk_full(path: Path) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail == 0


def _os_error(exc: OSError, what: str) -> SandboxError:
    if exc.errno == errno.ENOSPC:
        return DiskFull(what, where=exc.filename and str(exc.filename))
    return SandboxError(f"{what}: {exc.strerror or exc}")


def repair(state_dir: Path) -> dict[str, Any]:
    """Restore ``registry.db`` from its backup when it is damaged (``sandbox doctor --repair``).

    The damaged file (with its ``-wal``/``-shm``) is kept beside it as
    ``registry.db.damaged-<time>``. The restored registry is flagged ``registry.restored``:
    ``gc`` adopts or reports what it does not know until :meth:`Registry.trust`.
    Returns what was done; a registry that verifies is left alone.
    """
    path = state_dir / "registry.db"
    backup = state_dir / BACKUP_NAME
    try:
        Registry(state_dir)
        return {"repaired": False, "detail": "the registry is sound"}
    except RegistryDamaged as exc:
        reason = exc.reason
    if not _backup_usable(backup):
        raise RegistryDamaged(str(path), f"{reason}; its backup {backup} is missing or damaged too")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"registry.db.damaged-{stamp}")
    with _flock(state_dir / "locks" / "registry-backup.lock"):
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                os.replace(src, Path(str(kept) + suffix))
        tmp = path.with_name(".registry.db.restoring")
        with contextlib.closing(sqlite3.connect(_ro_uri(backup), uri=True)) as src_conn, \
                contextlib.closing(sqlite3.connect(tmp)) as dst:
            src_conn.backup(dst)
            dst.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET value = excluded.value", (RESTORED, now()))
            dst.commit()
        os.replace(tmp, path)
    reg = Registry(state_dir)
    reg._backup()
    return {"repaired": True, "detail": f"restored from {backup} (generation {reg.generation}); "
                                        f"the damaged file is kept as {kept.name}",
            "damaged_copy": str(kept), "reason": reason}


class Registry:
    """Workspaces and their state machine, port blocks, allowances, merges, meta.

    ``Registry(state_dir)`` opens and verifies an existing registry (see the module's
    docstring); ``create=True`` makes one (``init``), or verifies the one that exists.
    """

    def __init__(self, state_dir: Path, host_ports: HostPorts | None = None, *, create: bool = False,
                 timeout: float | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "registry.db"
        self.backup_path = state_dir / BACKUP_NAME
        self.host = host_ports or HostPorts()
        self.locks_dir = state_dir / "locks"
        self.timeout = lock_timeout() if timeout is None else timeout
        if create and not self.path.exists() and not self.backup_path.exists():
            self._create()
        else:
            self.verify()
        self.locks_dir.mkdir(exist_ok=True)

    def _damaged(self, reason: str) -> RegistryDamaged:
        return RegistryDamaged(str(self.path), reason,
                               backup=str(self.backup_path) if _backup_usable(self.backup_path) else None)

    def _create(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.locks_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"creating {self.state_dir}") from exc
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
            with _immediate(conn):
                conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                 [(INITIALISED, now()), (GENERATION, "0"), (COUNT, "0")])
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._backup()

    def verify(self) -> int:
        """Check that this is the registry ``init`` made, whole; its generation, else :class:`RegistryDamaged`."""
        if not self.path.exists():
            if self.backup_path.exists():
                raise self._damaged("it is missing")
            raise UsageError(f"{self.state_dir.parent} is not initialised: run `sandbox init`")
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise self._damaged(f"it cannot be read ({exc.strerror})") from exc
        if not head:
            raise self._damaged("it is empty (0 bytes)")
        if head != SQLITE_HEADER:
            raise self._damaged("it is not an SQLite database")
        backup_gen = _generation(self.backup_path)     # first: a backup is never newer than the file
        with self._connect() as conn:
            conn.execute("BEGIN")
            try:
                check = conn.execute("PRAGMA quick_check").fetchone()
                if not check or check[0] != "ok":
                    raise self._damaged(f"it is corrupt ({check[0] if check else 'no answer'})")
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not {"workspaces", "meta", "ports"} <= tables:
                    raise self._damaged("it holds no sandbox registry (emptied or replaced)")
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                count = conn.execute("SELECT count(*) FROM workspaces").fetchone()[0]
            finally:
                conn.execute("COMMIT")
        if INITIALISED not in meta:
            if "project_id" not in meta:
                raise self._damaged("it holds no sandbox registry (emptied or replaced)")
            self._adopt_legacy()                   # made before the sentinel existed
            return self.verify()
        if version < SCHEMA_VERSION:
            with self._connect() as conn:
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if str(count) != meta.get(COUNT):
            raise self._damaged(f"it lists {count} workspace(s) where its last write recorded "
                                f"{meta.get(COUNT)} (rows were lost)")
        generation = int(meta.get(GENERATION, "0") or 0)
        if backup_gen is not None and backup_gen > generation:
            raise self._damaged(f"it is older than its backup (generation {generation} < {backup_gen})")
        return generation

    def _adopt_legacy(self) -> None:
        """A registry from before the sentinels: it has a project id, so ``init`` made it."""
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
            with _immediate(conn):
                count = conn.execute("SELECT count(*) FROM workspaces").fetchone()[0]
                conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                 [(INITIALISED, now()), (GENERATION, "0"), (COUNT, str(count))])
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._backup()

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with _sqlite(self.path, self.timeout) as conn:
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.row_factory = sqlite3.Row
                yield conn
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise RegistryBusy(str(self.path), self.timeout) from exc
            if "disk is full" in text or "disk I/O" in text and _disk_full(self.state_dir):
                raise DiskFull("writing the registry", where=str(self.state_dir)) from exc
            if "unable to open" in text or "readonly" in text:
                raise self._damaged(f"it cannot be opened ({text})") from exc
            raise self._damaged(text) from exc
        except sqlite3.DatabaseError as exc:          # "file is not a database", "malformed"
            raise self._damaged(str(exc)) from exc

    def reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection for reads, for modules that keep tables of their own here (requests, briefs)."""
        return self._connect()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction that holds the write lock from its start.

        It bumps the generation and records the workspace count (the sentinels :meth:`verify`
        checks), and the backup is refreshed once it has committed.
        """
        with self._connect() as conn:
            with _immediate(conn):
                yield conn
                conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (GENERATION,))
                conn.execute("INSERT INTO meta (key, value) SELECT ?, count(*) FROM workspaces WHERE 1 "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (COUNT,))
            self._backup(conn)

    def _backup(self, source: sqlite3.Connection | None = None) -> None:
        """Copy the committed database to ``registry.backup.db`` (atomically, never backwards).

        Backups are serialised by a file lock and each reads the database as committed when
        it runs, so a later backup never holds an older state than an earlier one.
        """
        try:
            with _flock(self.state_dir / "locks" / "registry-backup.lock"), \
                    contextlib.ExitStack() as stack:
                if source is None:
                    source = stack.enter_context(contextlib.closing(
                        sqlite3.connect(self.path, timeout=self.timeout)))
                tmp = self.backup_path.with_name(f".{BACKUP_NAME}.{os.getpid()}.tmp")
                stack.callback(tmp.unlink, missing_ok=True)
                with contextlib.closing(sqlite3.connect(tmp)) as dst:
                    source.backup(dst)
                os.replace(tmp, self.backup_path)
        except OSError as exc:
            raise _os_error(exc, f"backing up the registry to {self.backup_path}") from exc
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RegistryBusy(str(self.path), self.timeout) from exc
            if "full" in str(exc):
                raise DiskFull("backing up the registry", where=str(self.state_dir)) from exc
            raise

    @property
    def generation(self) -> int:
        return int(self.get_meta(GENERATION) or 0)

    @property
    def restored(self) -> str | None:
        """When the registry was last restored from its backup and not yet trusted again."""
        return self.get_meta(RESTORED)

    def trust(self) -> None:
        """The user has checked a restored registry: ``gc`` may remove what it does not know again."""
        self.set_meta(RESTORED, None)

    # -- locks --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool = True, timeout: float | None = None) -> Iterator[None]:
        """An exclusive cross-process lock (``workspace-a``, ``merge``, ``baseline``...).

        A lock held by a process that dies is released by the kernel. ``timeout``: wait at most that
        many seconds (``merge`` passes :attr:`timeout`, i.e. ``SANDBOX_REGISTRY_TIMEOUT``), then
        :class:`LockBusy` naming the holder; None waits as long as it takes.
        """
        path = self.locks_dir / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                if blocking and timeout is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    self._wait_for(fd, 0.0 if not blocking else timeout or 0.0)
            except BlockingIOError as exc:
                holder = _holder(fd)
                if not blocking:
                    raise WorkspaceError(f"{name} is busy: another sandbox process holds its lock"
                                         + (f" ({holder})" if holder else "")) from exc
                raise LockBusy(name, timeout or 0.0, holder) from exc
            _claim(fd)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)        # still held: no waiter reads a holder that has gone
        finally:
            os.close(fd)

    @staticmethod
    def _wait_for(fd: int, timeout: float) -> None:
        """Poll the lock until ``timeout`` seconds have passed (flock itself cannot time out);
        raises :class:`BlockingIOError` when it is still held."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

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

    # -- intents ----------------------------------------------------------------------------
    @staticmethod
    def _intent(row: sqlite3.Row) -> IntentRecord:
        return IntentRecord(id=row["id"], op=row["op"], workspace=row["workspace"], step=row["step"],
                            status=row["status"], pid=row["pid"], pid_start=row["pid_start"],
                            data=json.loads(row["data"] or "{}"), cause=row["cause"],
                            started_at=row["started_at"], updated_at=row["updated_at"])

    def begin_intent(self, op: str, workspace: str | None, data: dict[str, Any] | None = None) -> int:
        """Record that this process is about to run ``op`` (step ``begin``); its id."""
        ts = now()
        pid = os.getpid()
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO intents (op, workspace, step, status, pid, pid_start, data, started_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (op, workspace, "begin", "running", pid, process_start(pid), json.dumps(data or {}), ts, ts))
            return int(cur.lastrowid or 0)

    def update_intent(self, intent_id: int, *, step: str | None = None, status: str | None = None,
                      data: dict[str, Any] | None = None, cause: str | None = None,
                      claim: bool = False) -> None:
        """Move an intent on: its step, status, more data (merged), a cause; ``claim``: this process owns it now."""
        with self.transaction() as conn:
            row = conn.execute("SELECT data FROM intents WHERE id = ?", (intent_id,)).fetchone()
            if row is None:
                return
            fields: dict[str, Any] = {"updated_at": now()}
            if step is not None:
                fields["step"] = step
            if status is not None:
                fields["status"] = status
            if data:
                fields["data"] = json.dumps({**json.loads(row["data"] or "{}"), **data})
            if cause is not None:
                fields["cause"] = cause
            if claim:
                fields["pid"] = os.getpid()
                fields["pid_start"] = process_start(os.getpid())
            cols = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(f"UPDATE intents SET {cols} WHERE id = ?", (*fields.values(), intent_id))

    def end_intent(self, intent_id: int) -> None:
        """The operation finished (or was rolled forward or back): forget it."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM intents WHERE id = ?", (intent_id,))

    def intent(self, intent_id: int) -> IntentRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM intents WHERE id = ?", (intent_id,)).fetchone()
        return self._intent(row) if row else None

    def intents(self) -> list[IntentRecord]:
        """Every unfinished operation, oldest first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM intents ORDER BY id").fetchall()
        return [self._intent(r) for r in rows]

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
