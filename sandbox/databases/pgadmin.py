"""Small psycopg and client-tool helpers shared by the ``template`` and ``schema`` strategies.

Everything here sits at the boundary with PostgreSQL: psycopg errors and failed
``psql``/``pg_dump``/``pg_restore`` runs are translated into :class:`DatabaseError`
or :class:`ServiceUnavailable` (chained with ``from``). Passwords travel only in
``PGPASSWORD`` for child processes and in 0600 files under ``state_dir/secrets``;
they never reach an argv, an exception message or a repr.

Safety: :func:`guard` is called before every DROP/ALTER/REASSIGN on a name, so that
sandbox only ever touches databases, roles and schemas named ``sbx_<project_id>_…``
(see :func:`sandbox.names.pg_name`), whatever a registry or a caller says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..disk import is_disk_full
from ..errors import DatabaseError, DiskFull, ServiceUnavailable, UsageError
from ..names import validate_label
from .base import ConnInfo

CONNECT_TIMEOUT = 10          # seconds to wait for a connection
TERMINATE_WAIT = 10.0         # seconds to wait for terminated sessions to go away


# ---------------------------------------------------------------------------- names

def prefix(project_id: str) -> str:
    """The prefix of every database, role and schema sandbox creates for a project."""
    return f"sbx_{project_id}_".lower()


def guard(project_id: str, name: str) -> str:
    """Return ``name`` if sandbox owns it (``sbx_<project_id>_…``); refuse anything else."""
    if not isinstance(name, str) or not name.startswith(prefix(project_id)) or len(name) > 63:
        raise DatabaseError(f"refusing to modify {name!r}: it is not a sandbox object of this project "
                            f"(names start with {prefix(project_id)!r})")
    return name


def name_key(ws: str) -> str:
    """The part of a workspace name that goes into identifiers.

    PostgreSQL identifiers made by :func:`pg_name` are lower-cased, so ``Api`` and ``api``
    would collide; names with capitals get a short hash of the exact name.
    """
    if ws == ws.lower():
        return ws
    return f"{ws.lower()}-{hashlib.sha1(ws.encode()).hexdigest()[:6]}"


def check_label(label: str) -> str:
    """The one label rule (:func:`sandbox.names.validate_label`)."""
    return validate_label(label)


def label_key(ws: str, label: str) -> str:
    """A stable, collision-free identifier part for (workspace, label)."""
    digest = hashlib.sha1(f"{ws}\0{label}".encode()).hexdigest()[:8]
    return f"{name_key(ws)}-{label.lower()}-{digest}"


# ---------------------------------------------------------------------------- metadata

def meta_comment(project_id: str, kind: str, workspace: str | None, **extra: Any) -> str:
    """The JSON kept in ``COMMENT ON DATABASE/ROLE/SCHEMA``: gc and listings read it back."""
    return json.dumps({"sandbox": project_id, "kind": kind, "workspace": workspace, **extra},
                      sort_keys=True)


def parse_meta(comment: str | None) -> dict[str, Any]:
    if not comment:
        return {}
    try:
        data = json.loads(comment)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------- errors

def _pg_message(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return str(primary)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn psycopg errors raised inside into :class:`DatabaseError` ("<what>: <reason>")."""
    try:
        yield
    except psycopg.errors.DiskFull as exc:
        raise DiskFull(what) from exc
    except psycopg.OperationalError as exc:
        if is_disk_full(exc):
            raise DiskFull(what) from exc
        if getattr(exc, "sqlstate", None) is None:   # the connection itself went away
            raise ServiceUnavailable(f"{what}: lost the connection to PostgreSQL: {_pg_message(exc)}",
                                     hint="check that the database server is running") from exc
        raise DatabaseError(f"{what}: {_pg_message(exc)}") from exc
    except psycopg.Error as exc:
        if is_disk_full(exc):
            raise DiskFull(what) from exc
        raise DatabaseError(f"{what}: {_pg_message(exc)}") from exc


def connect(info: ConnInfo, *, dbname: str | None = None, autocommit: bool = True,
            timeout: int = CONNECT_TIMEOUT) -> psycopg.Connection[Any]:
    """Connect (autocommit by default) or raise :class:`ServiceUnavailable`/:class:`DatabaseError`."""
    kw = info.kwargs()
    if dbname is not None:
        kw["dbname"] = dbname
    try:
        return psycopg.connect(**kw, autocommit=autocommit, connect_timeout=timeout,
                               application_name="sandbox")
    except psycopg.OperationalError as exc:
        reason = _pg_message(exc)
        if info.password:
            reason = reason.replace(info.password, "***")
        if "password authentication failed" in reason or "does not exist" in reason \
                or "permission denied" in reason:
            raise DatabaseError(f"cannot connect to {kw['dbname']!r} at {info.host}:{info.port} "
                                f"as {info.user!r}: {reason}") from exc
        raise ServiceUnavailable(f"PostgreSQL at {info.host}:{info.port} is not reachable: {reason}",
                                 hint="start the database server, or check [database] in sandbox.toml") from exc


# An admin session that meets workspace-owned databases or schemas resolves names (tables,
# functions, *operators*) in the system catalog only: a workspace cannot plant ``=`` or ``count``
# where the admin's queries would pick it up, and a database owner's ``ALTER DATABASE … SET
# search_path`` is overridden (client options outrank per-database settings).
SAFE_OPTIONS = "-c search_path=pg_catalog,pg_temp"


def hardened(info: ConnInfo) -> ConnInfo:
    """``info`` with :data:`SAFE_OPTIONS` added: how every admin session sandbox opens connects."""
    if info.options and SAFE_OPTIONS in info.options:
        return info
    return replace(info, options=f"{info.options} {SAFE_OPTIONS}" if info.options else SAFE_OPTIONS)


def ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def exists(conn: psycopg.Connection[Any], catalog: str, name: str) -> bool:
    """Whether a database, role or schema of that name exists (``catalog`` is fixed by code)."""
    column = {"pg_database": "datname", "pg_roles": "rolname", "pg_namespace": "nspname"}[catalog]
    query = sql.SQL("SELECT 1 FROM {} WHERE {} = %s").format(sql.Identifier("pg_catalog", catalog),
                                                             sql.Identifier(column))
    return conn.execute(query, (name,)).fetchone() is not None


def server_version(conn: psycopg.Connection[Any]) -> int:
    """``server_version_num`` (e.g. 150004)."""
    return int(conn.info.server_version)


def terminate(conn: psycopg.Connection[Any], *, dbname: str | None = None, user: str | None = None,
              wait: float = TERMINATE_WAIT) -> int:
    """Terminate other sessions on a database (or of a role) and wait until they are gone."""
    where = sql.SQL("datname = %s") if dbname is not None else sql.SQL("usename = %s")
    value = dbname if dbname is not None else user
    query = sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE {} AND pid <> pg_backend_pid()").format(where)
    count = sql.SQL("SELECT count(*) FROM pg_stat_activity WHERE {} AND pid <> pg_backend_pid()").format(where)
    killed = len(conn.execute(query, (value,)).fetchall())
    deadline = time.monotonic() + wait
    while killed and time.monotonic() < deadline:
        row = conn.execute(count, (value,)).fetchone()
        if not row or row[0] == 0:
            break
        time.sleep(0.05)
    return killed


@contextmanager
def advisory_lock(conn: psycopg.Connection[Any], key: str) -> Iterator[None]:
    """A session-level advisory lock (serialises one object's operations across processes)."""
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
    try:
        yield
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
        except psycopg.Error:
            pass


def create_or_update_role(conn: psycopg.Connection[Any], role: str, password: str, comment: str,
                          project_id: str) -> None:
    """A LOGIN role that is nothing more: no superuser, no CREATEDB, no CREATEROLE, no RLS bypass.

    The password is hashed client-side (SCRAM-SHA-256, like psql's ``\\password``), so
    neither sandbox's SQL text nor the server log ever holds it in clear.
    """
    guard(project_id, role)
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
    attrs = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                    "PASSWORD {}").format(sql.Literal(verifier))
    alter = sql.SQL("ALTER ROLE {} ").format(ident(role)) + attrs
    if exists(conn, "pg_roles", role):
        conn.execute(alter)
    else:
        try:
            conn.execute(sql.SQL("CREATE ROLE {} ").format(ident(role)) + attrs)
        except psycopg.errors.DuplicateObject:      # created concurrently: take it over
            conn.execute(alter)
    conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(ident(role), sql.Literal(comment)))


# ---------------------------------------------------------------------------- client tools

def find_tool(tool: str, bin_dir: str | None = None) -> str:
    """Path of a PostgreSQL client program: ``[database] bin_dir``, the newest
    ``/usr/lib/postgresql/*/bin``, then ``PATH``."""
    candidates: list[Path] = []
    if bin_dir:
        candidates.append(Path(bin_dir) / tool)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    candidates += [p / tool for p in versions]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(tool)
    if found:
        return found
    raise ServiceUnavailable(f"PostgreSQL client program {tool!r} not found",
                             hint="apt-get install postgresql-client, or set [database] bin_dir")


def conn_argv(info: ConnInfo, dbname: str | None = None) -> list[str]:
    """Connection flags for psql/pg_dump/pg_restore: never the password."""
    return ["-h", info.host, "-p", str(info.port), "-U", info.user, "-d", dbname or info.dbname]


def tool_env(info: ConnInfo) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"PGPASSWORD": info.password, "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
                "PGAPPNAME": "sandbox"})
    if info.options:
        env["PGOPTIONS"] = info.options
    return env


def run_tool(argv: Sequence[str], info: ConnInfo, what: str) -> subprocess.CompletedProcess[str]:
    """Run a client program with the password in the environment; failures become DatabaseError."""
    try:
        proc = subprocess.run(list(argv), env=tool_env(info), capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise ServiceUnavailable(f"{what}: cannot run {argv[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        tail = " | ".join(line for line in proc.stderr.strip().splitlines()[-3:])
        if info.password:
            tail = tail.replace(info.password, "***")
        err = subprocess.CalledProcessError(proc.returncode, [argv[0]], None, proc.stderr)
        if is_disk_full(err):
            raise DiskFull(what) from err
        raise DatabaseError(f"{what} failed (exit {proc.returncode}): {tail}") from err
    return proc


def _dump_lines(lines: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """A plain dump's lines, each with whether it is COPY data (rows, and their ``\\.`` end), which
    must pass through untouched."""
    in_copy = False
    for line in lines:
        if in_copy:
            if line.rstrip("\n") == "\\.":
                in_copy = False
            yield line, True
            continue
        if line.startswith("COPY ") and line.rstrip().endswith("FROM stdin;"):
            in_copy = True
        yield line, False


def is_archive(dump: Path) -> bool:
    """Whether ``dump`` is a pg_dump archive (custom, tar or directory) rather than plain SQL."""
    if dump.is_dir():
        return (dump / "toc.dat").exists()
    with dump.open("rb") as fh:
        head = fh.read(512)
    return head.startswith(b"PGDMP") or (len(head) >= 262 and head[257:262] == b"ustar")


# pg_dump's plain output puts each of these on one line; a non-superuser owner cannot run them,
# and pg_restore --no-owner --no-privileges skips the same statements.
_OWNERSHIP_LINE = re.compile(
    r"^(ALTER\s+.*\s+OWNER\s+TO\s+.*;|GRANT\s+.*;|REVOKE\s+.*;|COMMENT\s+ON\s+EXTENSION\s+.*;)\s*$")


def restore_dump(info: ConnInfo, dump: Path, *, bin_dir: str | None, what: str = "restoring the dump") -> None:
    """Load a pg_dump file into ``info``'s database as ``info.user``.

    Archives go through ``pg_restore --no-owner --no-privileges --exit-on-error``, plain SQL
    through ``psql -v ON_ERROR_STOP=1 --single-transaction`` after dropping pg_dump's
    ownership and privilege lines, so every object ends up owned by ``info.user``.
    """
    dump = Path(dump)
    if not dump.exists():
        raise UsageError(f"dump file not found: {dump}")
    if is_archive(dump):
        run_tool([find_tool("pg_restore", bin_dir), *conn_argv(info), "--no-owner", "--no-privileges",
                  "--exit-on-error", "--single-transaction", str(dump)], info, what)
        return
    with tempfile.TemporaryDirectory(prefix="sbx-restore-") as tmp:
        filtered = Path(tmp) / "restore.sql"
        with dump.open("r", errors="surrogateescape") as src, \
                filtered.open("w", errors="surrogateescape") as dst:
            for line, data in _dump_lines(src):
                if not data and _OWNERSHIP_LINE.match(line):
                    continue
                dst.write(line)
        run_tool([find_tool("psql", bin_dir), *conn_argv(info), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                  "--single-transaction", "-f", str(filtered)], info, what)


_TOC_SCHEMA = re.compile(r"^\d+; \d+ \d+ (SCHEMA|COMMENT - SCHEMA|ACL - SCHEMA|SECURITY LABEL - SCHEMA) ")


def dump_schema_sql(login: ConnInfo, dbname: str, schema: str, out: Path, *, bin_dir: str | None) -> None:
    """Write the objects and data of one schema as plain SQL, without its CREATE SCHEMA,
    owners or privileges, so it can be replayed by the target role's own login into a fresh
    schema. Written atomically (a reader never sees half a file).

    ``login`` is the role that owns the schema (a workspace's, or the baseline owner's), never
    the admin: pg_dump then runs with no privilege the schema's owner lacks (a relation swapped
    for a view mid-dump, CVE-2024-7348's class, runs as that owner at most).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sbx-dump-", dir=out.parent) as tmp:
        archive, toc, sql_tmp = Path(tmp) / "d.dump", Path(tmp) / "toc", Path(tmp) / "d.sql"
        run_tool([find_tool("pg_dump", bin_dir), *conn_argv(login, dbname), "--format=custom",
                  "--compress=0", "--schema", schema, "-f", str(archive)], login, f"dumping schema {schema}")
        listing = run_tool([find_tool("pg_restore", bin_dir), "-l", str(archive)], login,
                           "listing the dump").stdout
        toc.write_text("".join(line + "\n" for line in listing.splitlines() if not _TOC_SCHEMA.match(line)))
        run_tool([find_tool("pg_restore", bin_dir), "--no-owner", "--no-privileges", "-L", str(toc),
                  "-f", str(sql_tmp), str(archive)], login, "writing the schema SQL")
        os.replace(sql_tmp, out)


def rename_schema_sql(src: Path, dst: Path, old: str, new: str) -> None:
    """Copy a plain schema dump, naming schema ``new`` wherever it names ``old`` (outside COPY data).

    pg_dump qualifies every object with its schema, so the copy creates its objects in ``new``:
    the target role loads it with its own login, and the source schema is never renamed or
    touched. Both names are ``pg_name`` identifiers (lower case, never quoted by pg_dump).
    """
    pattern = re.compile(r'"' + re.escape(old) + r'"|(?<![A-Za-z0-9_$"])' + re.escape(old) + r'(?![A-Za-z0-9_$"])')
    # names with "-" or "." (workspace names allow them) are quoted, as pg_dump would
    new = new if re.fullmatch(r"[a-z_][a-z0-9_]*", new) else "\"" + new.replace("\"", "\"\"") + "\""
    with src.open("r", errors="surrogateescape") as fin, dst.open("w", errors="surrogateescape") as fout:
        for line, data in _dump_lines(fin):
            fout.write(line if data else pattern.sub(lambda _m: new, line))


def count_rows(info: ConnInfo, schema: str | None, table: str, *, timeout_ms: int = 5000) -> int | None:
    """Rows in the plain table ``schema.table`` (unqualified: found through ``info``'s search_path),
    or None when it is missing, is not a plain table, or the database does not answer in time.

    Safe to call in any session, the admin's included: the relation is looked up in the catalog
    first, and only an ordinary or partitioned table is counted, so no view, rule or function of
    the database's owner runs; every function and operator is spelled ``pg_catalog.…``, so
    nothing planted on the search_path is picked up; and the transaction is read-only with a
    statement timeout. The gate calls it with the workspace's own login anyway.
    """
    try:
        with psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=5,
                             application_name="sandbox") as conn, conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(int(timeout_ms))))
            row = conn.execute(
                "SELECT n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace "
                "WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(%s)::pg_catalog.oid",
                (sql.Identifier(*([schema, table] if schema else [table])).as_string(conn),)).fetchone()
            if row is None or row[2] not in ("r", "p"):
                return None
            counted = conn.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(
                sql.Identifier(row[0], row[1]))).fetchone()
            return int(counted[0]) if counted else None
    except psycopg.Error:
        return None
