"""The registry's file: one SQLite database under ``.sandbox/registry.db`` that cannot be misread.

Agents call sandbox concurrently, so every write is a short transaction in WAL
mode with a bounded busy timeout, and allocations use ``BEGIN IMMEDIATE`` so two
processes can never hand out the same port.

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
* A lock held by another process is waited for ``SANDBOX_REGISTRY_TIMEOUT``
  seconds (30 by default), then :class:`RegistryBusy` (exit 3).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from ..errors import DiskFull, RegistryBusy, RegistryDamaged, SandboxError, UsageError
from ..host import file_lock, now

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
    pid_start TEXT,
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


SCHEMA_VERSION = 3               # 3: workspaces.pid_start (a reused pid is not its process)
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


@contextlib.contextmanager
def open_sqlite(path: Path, timeout: float = DEFAULT_TIMEOUT) -> Iterator[sqlite3.Connection]:
    """A connection in WAL mode that waits (``timeout`` s) for other processes' locks."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A short write transaction that holds the write lock from its start."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _ro_uri(path: Path) -> str:
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


def upgrade_schema(conn: sqlite3.Connection) -> None:
    """Bring an older registry's tables to :data:`SCHEMA_VERSION` (tables and columns it lacks)."""
    conn.executescript(_SCHEMA)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(workspaces)")}
    if "pid_start" not in columns:
        conn.execute("ALTER TABLE workspaces ADD COLUMN pid_start TEXT")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def backup_lock(state_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Serialises backups (and restores) of the registry in ``state_dir``."""
    return file_lock(state_dir / "locks" / "registry-backup.lock")


class RegistryFile:
    """The verified database file: connections, write transactions (with their sentinels) and backups.

    ``RegistryFile(state_dir)`` opens and verifies an existing registry; ``create=True`` makes
    one (``init``), or verifies the one that exists.
    """

    def __init__(self, state_dir: Path, *, create: bool = False, timeout: float | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "registry.db"
        self.backup_path = state_dir / BACKUP_NAME
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
        with self.connect() as conn:
            conn.executescript(_SCHEMA)
            with immediate(conn):
                conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                 [(INITIALISED, now()), (GENERATION, "0"), (COUNT, "0")])
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.backup()

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
        with self.connect() as conn:
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
            with self.connect() as conn:
                upgrade_schema(conn)
        if str(count) != meta.get(COUNT):
            raise self._damaged(f"it lists {count} workspace(s) where its last write recorded "
                                f"{meta.get(COUNT)} (rows were lost)")
        generation = int(meta.get(GENERATION, "0") or 0)
        if backup_gen is not None and backup_gen > generation:
            raise self._damaged(f"it is older than its backup (generation {generation} < {backup_gen})")
        return generation

    def _adopt_legacy(self) -> None:
        """A registry from before the sentinels: it has a project id, so ``init`` made it."""
        with self.connect() as conn:
            upgrade_schema(conn)
            with immediate(conn):
                count = conn.execute("SELECT count(*) FROM workspaces").fetchone()[0]
                conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                                 [(INITIALISED, now()), (GENERATION, "0"), (COUNT, str(count))])
        self.backup()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        try:
            with open_sqlite(self.path, self.timeout) as conn:
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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction that holds the write lock from its start.

        It bumps the generation and records the workspace count (the sentinels :meth:`verify`
        checks), and the backup is refreshed once it has committed.
        """
        with self.connect() as conn:
            with immediate(conn):
                yield conn
                conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = ?", (GENERATION,))
                conn.execute("INSERT INTO meta (key, value) SELECT ?, count(*) FROM workspaces WHERE 1 "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (COUNT,))
            self.backup(conn)

    def backup(self, source: sqlite3.Connection | None = None) -> None:
        """Copy the committed database to ``registry.backup.db`` (atomically, never backwards).

        Backups are serialised by a file lock and each reads the database as committed when
        it runs, so a later backup never holds an older state than an earlier one.
        """
        try:
            with backup_lock(self.state_dir), contextlib.ExitStack() as stack:
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

