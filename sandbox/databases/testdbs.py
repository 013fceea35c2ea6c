"""A database per test, cloned from a template: the database side of the pytest plugin.

:class:`TestDatabases` works on one PostgreSQL server through an *admin URL*: the workspace's
test role (``SANDBOX_TEST_DATABASE_URL``: CREATEDB in the workspace's own snapshot cluster and
nowhere else), or the superuser of a throwaway container outside sandbox.

* **Template.** ``sbxt_tpl_<key>``, where the key hashes the server version and what the caller
  says the template is made of (migrations, seeds, plugin version). Built once under an advisory
  lock (so pytest-xdist workers wait for one build), by the caller's ``build(url)``, and marked
  ``IS_TEMPLATE`` (and closed to connections) only when complete: a half-built template left by a
  killed run is not complete, and is dropped and rebuilt. Templates of other keys without
  connections are dropped then: a migration edit replaces the template.
* **Warm pool.** A background thread keeps ``pool_size`` clones ready and drops used ones, so a
  test's setup is a queue ``get`` and its teardown a queue ``put``: the ``CREATE DATABASE`` and
  ``DROP DATABASE … WITH (FORCE)`` run off the test's path.
* **Names.** ``sbxt_<run>_<n>``. A run holds an advisory lock keyed by ``<run>`` for as long as
  it lives, on a session of its own that runs nothing else (a statement that fails on another
  session can never take the lock with it), so :func:`stale` tells a killed run's databases
  (nobody holds its lock; the server released it with the session) from a running one's,
  wherever the run's process is (a workspace container, the host): the next run's start and
  ``sandbox gc`` drop them. Dropping old templates and killed runs' databases is done by one run
  at a time (pytest-xdist workers start together and would otherwise race on the same drops).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..errors import DatabaseError

PREFIX = "sbxt_"
TEMPLATE_PREFIX = "sbxt_tpl_"
_RUN = re.compile(r"^sbxt_([0-9a-f]{8})_\d+$")
_LOCK_SPACE = 0x5b7e57        # the first key of the runs' advisory locks (the second: the run)
_HOUSEKEEPING = 0x5b7e57_0000_0001   # one bigint key: dropping old templates and stale databases


def _run_key(run: str) -> int:
    return int(run, 16) & 0x7FFFFFFF


@dataclass(frozen=True)
class TestDatabase:
    """One database handed to a test."""

    __test__ = False        # not a pytest test class
    name: str
    url: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "url": self.url}


def url_with_db(url: str, dbname: str) -> str:
    """``url`` with its database replaced (keeps host, port, user, password, options)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return _to_url(info)


def _to_url(info: dict[str, Any]) -> str:
    from urllib.parse import quote

    user = quote(str(info.get("user", "")), safe="")
    password = quote(str(info.get("password", "")), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = info.get("host", "127.0.0.1")
    port = info.get("port", 5432)
    return f"postgresql://{auth}{host}:{port}/{quote(str(info['dbname']), safe='')}"


def kept_name(db: TestDatabase) -> TestDatabase:
    """What a kept database is renamed to: out of :func:`sweep`'s reach (``sbxt_kept_…``)."""
    name = "sbxt_kept_" + db.name[len(PREFIX):]
    return TestDatabase(name, url_with_db(db.url, name))


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg connection (the plugin's ``sandbox_conn``), errors as :class:`DatabaseError`."""
    try:
        return psycopg.connect(url, connect_timeout=10, **kwargs)
    except psycopg.Error as exc:
        raise DatabaseError(f"cannot connect to the test database: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_sql_file(url: str, text: str) -> None:
    """Run a seed file's SQL in one transaction."""
    with connect(url) as c:
        c.execute(text.encode())  # a file of the project's, run in its own test database


def file_digest(paths: Iterable[str], extra: Iterable[str] = ()) -> str:
    """A short hash over file contents (sorted by path) and extra strings."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.encode() + b"\0")
        try:
            with open(p, "rb") as f:
                h.update(f.read())
        except OSError:
            h.update(b"<missing>")
    for e in extra:
        h.update(e.encode() + b"\0")
    return h.hexdigest()


def stale(conn: psycopg.Connection[Any]) -> list[str]:
    """The test databases on ``conn``'s server whose run is over (its advisory lock is free).

    The databases are listed before the locks are read: a run takes its lock before it creates
    its first database, so a database listed here whose lock is free a moment later belongs to a
    run that is over. (Read the other way round, a run starting in between would lose its first
    clones to another worker's sweep.)
    """
    names = [n for (n,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'sbxt\\_%'")]
    held = {int(k) for (k,) in conn.execute(
        "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 AND granted",
        [_LOCK_SPACE])}
    out = []
    for name in names:
        m = _RUN.match(name)
        if m and _run_key(m.group(1)) not in held:
            out.append(name)
    return out


def drop(conn: psycopg.Connection[Any], name: str) -> None:
    """Drop one test database (only ever one named like a test database)."""
    if not name.startswith(PREFIX):
        raise DatabaseError(f"refusing to drop {name!r}: not a test database")
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def sweep(admin_url: str) -> list[str]:
    """Drop the test databases of runs that are over (killed runs); their names."""
    with connect(admin_url, autocommit=True) as c:
        return _sweep(c)


def _sweep(c: psycopg.Connection[Any]) -> list[str]:
    dropped = []
    for name in stale(c):
        with contextlib.suppress(psycopg.Error):
            drop(c, name)
            dropped.append(name)
    return dropped


class TestDatabases:
    """Template, warm pool and clean-up for one test run (one pytest-xdist worker)."""

    __test__ = False

    def __init__(self, admin_url: str, *, parts: str, build: Callable[[str], None],
                 pool_size: int = 2, threads: int = 2, events: Callable[[str], None] | None = None) -> None:
        self.admin_url = admin_url
        self.run = secrets.token_hex(4)
        self._parts = parts
        self._build = build
        self.pool_size = max(0, pool_size)
        self.threads = max(1, min(threads, self.pool_size or 1))
        self._events = events or (lambda _: None)
        self._ready: queue.Queue[TestDatabase] = queue.Queue()
        self._drop: queue.Queue[str] = queue.Queue()
        self._cond = threading.Condition()      # guards _making; wakes the pool's threads
        self._making = 0                        # clones under way (counted against pool_size)
        self._stop = threading.Event()
        self._n = 0
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._admin: psycopg.Connection[Any] | None = None
        self._holder: psycopg.Connection[Any] | None = None      # holds the run's lock, runs nothing else
        self.template = ""
        self.kept: list[TestDatabase] = []
        self._shared: TestDatabase | None = None
        self._conns: dict[str, psycopg.Connection[Any]] = {}

    # -- template --------------------------------------------------------------------------

    def _conn(self) -> psycopg.Connection[Any]:
        if self._admin is None or self._admin.closed:
            self._admin = connect(self.admin_url, autocommit=True)
        return self._admin

    def prepare(self) -> str:
        """The template for this run (built if missing or incomplete); starts the warm pool."""
        self._holder = connect(self.admin_url, autocommit=True)
        self._holder.execute("SELECT pg_advisory_lock(%s, %s)", [_LOCK_SPACE, _run_key(self.run)])
        c = self._conn()
        version = str(c.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
        key = hashlib.sha256(f"{version}\0{self._parts}".encode()).hexdigest()[:16]
        self.template = f"{TEMPLATE_PREFIX}{key}"
        lock = int(hashlib.sha256(self.template.encode()).hexdigest()[:15], 16)
        c.execute("SELECT pg_advisory_lock(%s)", [lock])
        try:
            row = c.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", [self.template]).fetchone()
            if row is None or not row[0]:
                self._build_template(c)
        finally:
            c.execute("SELECT pg_advisory_unlock(%s)", [lock])
        self._housekeeping()
        if self.pool_size > 0:
            c.close()           # the pool's threads have their own sessions: one connection slot less
            self._workers = [threading.Thread(target=self._work, name=f"sandbox-testdbs-{i}", daemon=True)
                             for i in range(self.threads)]
            for t in self._workers:
                t.start()
        return self.template

    def _housekeeping(self) -> None:
        """Old templates and killed runs' databases go: one run at a time, on a session of its own
        (best effort: what is left is dropped by the next run's start or by ``sandbox gc``)."""
        with contextlib.suppress(DatabaseError, psycopg.Error), connect(self.admin_url, autocommit=True) as h:
            h.execute("SELECT pg_advisory_lock(%s)", [_HOUSEKEEPING])     # released with the session
            self._drop_other_templates(h)
            _sweep(h)

    def _build_template(self, c: psycopg.Connection[Any]) -> None:
        tpl = sql.Identifier(self.template)
        self._events(f"template-build {self.template}")
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(tpl))    # an incomplete one
        c.execute(sql.SQL("CREATE DATABASE {}").format(tpl))
        try:
            self._build(url_with_db(self.admin_url, self.template))
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                      "pg_backend_pid()", [self.template])
            c.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true").format(tpl))
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(tpl))
            raise
        self._events(f"template-built {self.template}")

    def _drop_other_templates(self, c: psycopg.Connection[Any]) -> None:
        """Templates of older migrations: dropped when nobody uses them (another run may)."""
        others = [n for (n,) in c.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'sbxt\\_tpl\\_%%' AND datname <> %s",
            [self.template])]
        for name in others:
            with contextlib.suppress(psycopg.Error):
                c.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
                c.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))

    # -- the pool --------------------------------------------------------------------------

    def _next_name(self) -> str:
        with self._lock:
            self._n += 1
            return f"{PREFIX}{self.run}_{self._n}"

    def _clone(self, c: psycopg.Connection[Any]) -> TestDatabase:
        name = self._next_name()
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(self.template)))
        return TestDatabase(name, url_with_db(self.admin_url, name))

    def _work(self) -> None:
        """One of the pool's threads, each on a session of its own (CREATE DATABASE waits for
        checkpoints, which several sessions share): drops first (they give space and connection
        slots back), then refills the pool."""
        try:
            with connect(self.admin_url, autocommit=True) as c:
                while not self._stop.is_set():
                    try:
                        name = self._drop.get_nowait()
                    except queue.Empty:
                        name = ""
                    if name:
                        self._drop_now(c, name)
                        continue
                    with self._cond:
                        if self._ready.qsize() + self._making >= self.pool_size:
                            self._cond.wait(0.5)
                            continue
                        self._making += 1
                    try:
                        db = self._clone(c)
                        with contextlib.suppress(DatabaseError):     # the test connects itself then
                            self._conns[db.name] = connect(db.url)   # the handshake, off the test's path
                        self._ready.put(db)
                    finally:
                        with self._cond:
                            self._making -= 1
        except BaseException as exc:  # noqa: BLE001 - handed to the test that waits for a database
            self._error = exc

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @staticmethod
    def _drop_now(c: psycopg.Connection[Any], name: str) -> None:
        with contextlib.suppress(psycopg.Error):
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def take(self, timeout: float = 120.0) -> TestDatabase:
        """A fresh clone of the template: from the pool, or made now if the pool is off or dry."""
        if not self._workers:
            return self._clone(self._conn())
        try:
            db = self._ready.get(timeout=timeout)
        except queue.Empty:
            if self._error is not None:
                raise DatabaseError(f"the test database pool failed: {_first_line(self._error)}") from self._error
            raise DatabaseError(f"no test database within {timeout:.0f}s") from None
        self._wake()
        return db

    def connection(self, db: TestDatabase) -> psycopg.Connection[Any]:
        """A connection to ``db``: the one the pool opened ahead, else a new one."""
        conn = self._conns.pop(db.name, None)
        return conn if conn is not None and not conn.closed else connect(db.url)

    def _close_spare(self, db: TestDatabase) -> None:
        conn = self._conns.pop(db.name, None)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def readonly(self) -> TestDatabase:
        """The worker's shared database for ``readonly=True`` tests (made once, dropped at close)."""
        with self._lock:
            shared = self._shared
        if shared is None:
            shared = self.take()
            with self._lock:
                self._shared = shared
        return shared

    def give_back(self, db: TestDatabase, *, keep: bool = False) -> None:
        """Drop ``db`` off the test's path, or keep it (a failed test's, to look at)."""
        self._close_spare(db)
        if keep:
            kept = kept_name(db)
            c = self._conn()
            with contextlib.suppress(psycopg.Error):
                c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [db.name])
                c.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(db.name),
                                                                           sql.Identifier(kept.name)))
                self.kept.append(kept)
                return
        if not self._workers:
            self._drop_now(self._conn(), db.name)
            return
        self._drop.put(db.name)
        self._wake()

    def close(self) -> list[str]:
        """Stop the pool and drop every database of this run except the kept ones; their names."""
        self._stop.set()
        self._wake()
        for t in self._workers:
            t.join(timeout=60)
        for name in list(self._conns):
            self._close_spare(TestDatabase(name, ""))
        kept = {d.name for d in self.kept}
        dropped = []
        with contextlib.suppress(DatabaseError, psycopg.Error):
            c = self._conn()
            names = [n for (n,) in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                             [f"{PREFIX}{self.run}\\_%"])]
            for name in names:
                if name not in kept:
                    self._drop_now(c, name)
                    dropped.append(name)
            c.close()
        if self._holder is not None:        # the run is over: its lock goes with the session
            with contextlib.suppress(psycopg.Error):
                self._holder.close()
        return dropped


class ThrowawayServer:
    """A PostgreSQL container for a test run outside sandbox (testcontainers)."""

    def __init__(self, container: Any, url: str) -> None:
        self._container = container
        self.url = url

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._container.stop()


def throwaway_server(image: str) -> ThrowawayServer | str:
    """A started container of the local ``image`` (never pulled), or why there is none."""
    # Ryuk (testcontainers' reaper) is an image of its own, pulled from a registry: never here.
    # The container is stopped at the session's end; a killed run's is labelled for gc.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    try:
        import docker
        import docker.errors
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return "testcontainers is not installed (pip install testcontainers)"
    try:
        docker.from_env().images.get(image)
    except docker.errors.ImageNotFound:
        return f"the image {image} is not built here (scripts/build-images)"
    except docker.errors.DockerException as exc:
        return f"Docker is not reachable ({_first_line(exc)})"
    password = secrets.token_urlsafe(16)
    container = PostgresContainer(image, username="postgres", password=password, dbname="postgres")
    container.with_command("postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    try:
        container.start()
    except Exception as exc:  # noqa: BLE001 - testcontainers raises many kinds
        with contextlib.suppress(Exception):
            container.stop()
        return f"the throwaway container did not start ({_first_line(exc)})"
    host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
    return ThrowawayServer(container, f"postgresql://postgres:{password}@{host}:{port}/postgres")
