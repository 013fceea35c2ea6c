"""The ``schema`` strategy: one shared database, one schema and one role per workspace.

For servers where sandbox may not create databases freely, or when hundreds of
workspaces would make hundreds of databases too heavy. Objects (``pid`` is the project
id, every name made by ``pg_name``)::

    sbx_<pid>_db_shared          the shared database (CONNECT revoked from PUBLIC)
    sbx_<pid>_base_baseline      the baseline schema, owned by the baseline owner role
    sbx_<pid>_base_owner         a LOGIN role owning the baseline's objects
    sbx_<pid>_ws_<name>          a workspace's schema AND its role (same name)
    sbx_<pid>_scratch_<…>        a throwaway clone for the merge gate

A workspace's role and schema share a name, so PostgreSQL's default ``search_path``
(``"$user", public``) resolves unqualified names (and alembic's ``alembic_version``) to its
schema: its URL is a plain one, with no ``options`` (which asyncpg, for one, refuses). While the
baseline is populated, its owner role's ``search_path`` is set to the new schema for the same
reason; sandbox's own internal sessions still pass ``options``.

**How a schema is cloned.** Once per baseline build, the baseline schema is dumped by the
baseline owner's own login (``pg_dump --schema``, then ``pg_restore --no-owner
--no-privileges`` without the ``CREATE SCHEMA`` entry) into a cached SQL file under
``state_dir/db/schema/``. A clone is loaded by the *target role's own login*, never by the
admin (``SET ROLE`` is no boundary: a CHECK constraint's function evaluated during the load
could ``RESET ROLE`` and act as the admin)::

    admin:  ALTER SCHEMA ws RENAME TO tmp; CREATE SCHEMA ws AUTHORIZATION ws   -- names only
    ws:     psql --single-transaction -f baseline.sql   -- "base." renamed to "ws." in the text
    admin:  DROP SCHEMA tmp CASCADE; COMMENT ON SCHEMA ws   (or, on failure, tmp is put back)

The dump names every object ``base.x``; the copy's text names ``ws.x`` instead (outside COPY
data), so column defaults (``nextval``), identity and serial sequences with their current
values and owning columns, indexes, constraints and foreign keys, views, types, triggers and
function bodies that name the schema explicitly all point inside the copy. Checkpoints are
dumped by the workspace's own login and restored the same way (no renaming needed).

Limitations (documented, not hidden):

* The rename is textual: a string literal (not COPY data) that spells the baseline schema's
  internal name is renamed too. A baseline update loads into ``…_baseline_new`` and renames
  that schema back, so a function body naming the baseline schema explicitly would name
  ``…_baseline_new`` afterwards (the schema's internal name is sandbox's, rarely in code).
* While a restore or reset runs, the workspace's own (disconnected) clients that reconnect
  see an empty schema; other workspaces and the baseline are never renamed or touched.
* Only what lives in the schema is cloned: extensions, large objects, event triggers
  and publications are per database and shared by every workspace.
* Isolation is weaker than separate databases: every role can read the system catalogs,
  so it can *see* other workspaces' table names, though not read or write them.

**Isolation.** Each workspace role is LOGIN and nothing more, owns its schema and all
objects in it, and has no privilege on any other schema: ``REVOKE ALL ON SCHEMA public
FROM PUBLIC`` in the shared database, and no grants on the baseline or other workspaces.
No role can create objects in another role's ``search_path`` (the hijack described in
the field notes).

**Checkpoints** are SQL files of the workspace schema under ``state_dir/db/schema/
checkpoints/<schema>/`` (taken with pg_dump, so clients stay connected); ``restore`` and
``reset`` replace the schema in one transaction and disconnect the workspace's clients.
Every DROP, ALTER and RENAME is guarded by :func:`~sandbox.databases.pgadmin.guard`.
"""

from __future__ import annotations

import json
import secrets as _secrets
import shutil
import tempfile
import uuid
from dataclasses import replace
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..checks import Check, OwnedResource
from ..errors import DatabaseError, UsageError
from ..host import now
from ..names import pg_name, validate_name
from .base import BackendContext, CheckpointInfo, ConnInfo, Server, is_transient
from .shared import SharedServerStrategy
from .pgadmin import (
    advisory_lock,
    check_label,
    conn_argv,
    create_or_update_role,
    dump_schema_sql,
    exists,
    find_tool,
    ident,
    meta_comment,
    name_key,
    parse_meta,
    prefix,
    rename_schema_sql,
    restore_dump,
    run_tool,
    server_version,
    terminate,
    translate,
)


class SchemaStrategy(SharedServerStrategy):
    """A :class:`~sandbox.databases.base.Strategy`: a schema and a role per workspace in one database."""

    name = "schema"

    def __init__(self, ctx: BackendContext, server: Server) -> None:
        super().__init__(ctx, server)
        pid = ctx.project_id
        self.shared_db = pg_name(pid, "shared", "db")
        self.base_schema = pg_name(pid, "baseline", "base")
        self._new_schema = pg_name(pid, "baseline_new", "base")
        self._old_schema = pg_name(pid, "baseline_old", "base")
        self.cache_dir = Path(ctx.state_dir) / "db" / "schema"
        self._lock_key = f"{self.shared_db}:catalog"

    # ------------------------------------------------------------------ names & connections

    def schema_name(self, ws: str) -> str:
        """The schema of a workspace; its role has the same name."""
        return self._ws_ident(ws)

    def _conninfo(self, schema: str, user: str, password: str, network: str | None,
                  extra_options: str = "", *, attach: bool = True, plain: bool = False) -> ConnInfo:
        # pg_name yields lower-case [a-z0-9_.-] only: no quoting or escaping needed in options
        if plain or (schema == user and not extra_options):
            options = None        # "$user" in the default search_path is this schema
        else:
            options = f"-csearch_path={schema}" + (f" {extra_options}" if extra_options else "")
        return self._server_info(user, password, self.shared_db, network, attach=attach, options=options)

    def _admin_shared(self) -> ConnInfo:
        return self.server.admin().with_db(self.shared_db)

    # ------------------------------------------------------------------ primitives

    def _ensure_shared(self) -> None:
        """The shared database, locked down, and the baseline owner role."""
        with self._admin() as conn, translate("preparing the shared database"):
            if (exists(conn, "pg_database", self.shared_db) and exists(conn, "pg_roles", self.owner_role)
                    and self.secrets.read(self.owner_role)):
                return                                       # the usual case: all in place
        with self._admin() as conn, advisory_lock(conn, self._lock_key), translate("preparing the shared database"):
            if not exists(conn, "pg_database", self.shared_db):
                self.ctx.progress("creating the shared database")
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident(self.shared_db)))
                conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    ident(self.shared_db), sql.Literal(meta_comment(self.ctx.project_id, "shared", None))))
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident(self.shared_db)))
            self._ensure_role(conn, self.owner_role, "baseline-owner", None, locked=True)
            with self._admin(self.shared_db) as c:
                c.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")

    def _ensure_role(self, conn: psycopg.Connection[Any], role: str, kind: str, ws: str | None,
                     *, locked: bool = False) -> str:
        """The role's password; the role is created (or repaired) and may connect to the shared database."""
        return self._role_password(conn, role, lambda password: self._create_role(
            conn, role, password, meta_comment(self.ctx.project_id, kind, ws), locked=locked))

    def _create_role(self, conn: psycopg.Connection[Any], role: str, password: str, comment: str,
                     *, locked: bool = False) -> None:
        if not locked:   # GRANT on the one shared database row must not run concurrently
            with advisory_lock(conn, self._lock_key):
                return self._create_role(conn, role, password, comment, locked=True)
        create_or_update_role(conn, role, password, comment, self.ctx.project_id)
        conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}")
                     .format(ident(self.shared_db), ident(role)))

    def _drop_role(self, role: str) -> None:
        self._guard(role)
        with self._admin() as conn:
            if not exists(conn, "pg_roles", role):
                return
            terminate(conn, user=role)
            with advisory_lock(conn, self._lock_key):
                if exists(conn, "pg_database", self.shared_db):
                    with self._admin(self.shared_db) as c:
                        c.execute(sql.SQL("DROP OWNED BY {}").format(ident(role)))
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))

    def _schema_meta(self, conn: psycopg.Connection[Any], schema: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
                           (schema,)).fetchone()
        return None if row is None else parse_meta(row[0])

    def _login(self, role: str, password: str) -> ConnInfo:
        """``role``'s own login to the shared database (host view; no options, no attach)."""
        return self._server_info(role, password, self.shared_db, None, attach=False)

    def _owner_login(self) -> ConnInfo:
        """The baseline owner's own login (the role is made, or repaired, if needed)."""
        with self._admin() as conn, translate("preparing the baseline owner"):
            password = self._ensure_role(conn, self.owner_role, "baseline-owner", None)
        return self._login(self.owner_role, password)

    def _load(self, sql_file: Path, src: str, target: str, login: ConnInfo, comment: str) -> None:
        """Replace schema ``target`` with the objects of ``sql_file`` (a dump of schema ``src``),
        loaded by ``login`` (the role that will own them) with its own password.

        The dump holds the owner's own objects (CHECK constraints, index expressions, defaults
        and the functions they call run while it loads): it is never run by the admin, with or
        without ``SET ROLE``, which that code could ``RESET``. The admin only renames and drops
        schemas (no user code runs), in short transactions around the load: the old ``target``
        steps aside, an empty one owned by ``login.user`` takes its name, the role loads the
        dump (``src`` renamed to ``target`` in the text) in one transaction, and the old schema
        is dropped, or put back if the load failed.
        """
        role = login.user
        for name in (src, target, role):
            self._guard(name)
        old = self._guard(pg_name(self.ctx.project_id, uuid.uuid4().hex[:12], "tmp"))
        lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtextextended({}, 0))").format(sql.Literal(self._lock_key))
        with self._admin(self.shared_db) as c, translate(f"preparing schema {target}"), c.transaction():
            c.execute(lock)
            had = exists(c, "pg_namespace", target)
            if had:
                c.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(ident(target), ident(old)))
            c.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(target), ident(role)))
        try:
            with tempfile.TemporaryDirectory(prefix="sbx-clone-") as d:
                script = Path(d) / "load.sql"
                if src != target:
                    rename_schema_sql(sql_file, script, src, target)
                else:
                    shutil.copyfile(sql_file, script)
                # the role's own ALTER ROLE … SET cannot make its restore read-only
                loader = replace(login, options="-c default_transaction_read_only=off")
                run_tool([find_tool("psql", self.ctx.config.bin_dir), *conn_argv(loader, self.shared_db),
                          "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-f", str(script)],
                         loader, f"copying schema {src} to {target}")
        except BaseException:
            with self._admin(self.shared_db) as c, translate(f"putting schema {target} back"), c.transaction():
                c.execute(lock)
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(target)))
                if had:
                    c.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(ident(old), ident(target)))
            raise
        with self._admin(self.shared_db) as c, translate(f"finishing schema {target}"), c.transaction():
            c.execute(lock)
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(old)))
            c.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(ident(target), sql.Literal(comment)))

    # ------------------------------------------------------------------ baseline

    def has_baseline(self) -> bool:
        with self._admin() as conn, translate("looking for the baseline"):
            if not exists(conn, "pg_database", self.shared_db):
                return False
        with self._admin(self.shared_db) as conn, translate("looking for the baseline"):
            return exists(conn, "pg_namespace", self.base_schema)

    def _baseline_sql(self) -> Path:
        """The cached SQL of the baseline schema, re-dumped if the baseline changed since."""
        out, stamp = self.cache_dir / "baseline.sql", self.cache_dir / "baseline.json"
        with self._admin(self.shared_db) as conn, translate("reading the baseline"):
            meta = self._schema_meta(conn, self.base_schema)
            if meta is None:
                raise DatabaseError("there is no baseline yet", hint="run `sandbox init` or `sandbox db baseline`")
            generation = meta.get("generation")
            try:
                cached = json.loads(stamp.read_text()).get("generation")
            except (OSError, ValueError):
                cached = None
            if cached == generation and out.exists():
                return out
            with advisory_lock(conn, f"{self._lock_key}:cache"):
                dump_schema_sql(self._owner_login(), self.shared_db, self.base_schema, out,
                                bin_dir=self.ctx.config.bin_dir)
                stamp.write_text(json.dumps({"generation": generation, "dumped_at": now()}))
        return out

    def _install_baseline(self, conn: psycopg.Connection[Any]) -> None:
        """Swap the finished ``…_baseline_new`` schema in place of the baseline, atomically."""
        for name in (self._new_schema, self.base_schema, self._old_schema):
            self._guard(name)
        comment = meta_comment(self.ctx.project_id, "baseline", None, generation=uuid.uuid4().hex, built_at=now())
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (self._lock_key,))
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(self._old_schema)))
            if exists(conn, "pg_namespace", self.base_schema):
                conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(ident(self.base_schema),
                                                                            ident(self._old_schema)))
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(ident(self._new_schema),
                                                                        ident(self.base_schema)))
            conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(ident(self.base_schema), sql.Literal(comment)))
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(self._old_schema)))
        self._baseline_sql()

    def _fill_new(self, fill: Callable[[ConnInfo], None]) -> None:
        """Run ``fill`` on the (already created) ``…_baseline_new`` schema, then install it."""
        password = self.secrets.read(self.owner_role) or ""
        owner = ident(self.owner_role)
        try:
            self.ctx.progress("populating the baseline")
            with self._admin(self.shared_db) as conn, translate("populating the baseline"):
                conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET search_path = {}").format(
                    owner, ident(self.shared_db), ident(self._new_schema)))
            try:
                with translate("populating the baseline"):
                    fill(self._conninfo(self._new_schema, self.owner_role, password, None, plain=True))
            finally:
                with self._admin(self.shared_db) as conn, translate("populating the baseline"):
                    conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET search_path").format(
                        owner, ident(self.shared_db)))
            with self._admin(self.shared_db) as conn, translate("installing the new baseline"):
                self._install_baseline(conn)
        except BaseException:
            with self._admin(self.shared_db) as conn, translate("removing the unfinished baseline"):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(self._guard(self._new_schema))))
            raise

    def build_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        self.server.ensure_running()
        self._ensure_shared()
        with self._admin() as lock_conn, advisory_lock(lock_conn, f"{self._lock_key}:baseline"):
            with self._admin(self.shared_db) as conn, translate("preparing the baseline"):
                new = self._guard(self._new_schema)
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(new)))
                conn.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(ident(new), ident(self.owner_role)))
            self._fill_new(populate)
        self.ctx.progress("baseline ready")

    def update_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        """Copy the baseline, run ``populate`` on the copy, swap it in (the old one stays on failure)."""
        self.server.ensure_running()
        with self._admin() as lock_conn, advisory_lock(lock_conn, f"{self._lock_key}:baseline"):
            source = self._baseline_sql()
            with translate("copying the baseline"):
                self._load(source, self.base_schema, self._new_schema, self._owner_login(),
                           meta_comment(self.ctx.project_id, "baseline-building", None))
            self._fill_new(populate)

    def import_baseline(self, dump: Path) -> None:
        """The baseline becomes the content of a pg_dump file holding one schema (usually public).

        The dump is restored as the admin into a staging database, its schema renamed there,
        and copied in like a clone (owned by the baseline owner).
        """
        dump = Path(dump)
        if not dump.exists():
            raise UsageError(f"dump file not found: {dump}")
        self.server.ensure_running()
        self._ensure_shared()
        staging = pg_name(self.ctx.project_id, "import", "tmp")
        admin = self.server.admin()
        with self._admin() as conn, advisory_lock(conn, f"{self._lock_key}:baseline"):
            try:
                with translate("creating the import staging database"):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(self._guard(staging))))
                    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident(staging)))
                self.ctx.progress(f"restoring {dump.name}")
                restore_dump(admin.with_db(staging), dump, bin_dir=self.ctx.config.bin_dir,
                             what=f"restoring {dump.name}")
                with self._admin(staging) as c, translate("inspecting the dump"):
                    schemas = [r[0] for r in c.execute(
                        "SELECT n.nspname FROM pg_namespace n WHERE n.nspname !~ '^pg_' "
                        "AND n.nspname <> 'information_schema' AND (EXISTS (SELECT 1 FROM pg_class "
                        "WHERE relnamespace = n.oid) OR EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = n.oid) "
                        "OR EXISTS (SELECT 1 FROM pg_type WHERE typnamespace = n.oid)) ORDER BY 1")]
                    if len(schemas) != 1:
                        raise DatabaseError(f"the schema strategy imports a dump of exactly one schema; "
                                            f"{dump.name} has {len(schemas)}: {', '.join(schemas) or 'none'}")
                    c.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(ident(schemas[0]),
                                                                           ident(self._new_schema)))
                with tempfile.TemporaryDirectory(prefix="sbx-import-") as d:
                    out = Path(d) / "import.sql"
                    dump_schema_sql(admin, staging, self._new_schema, out, bin_dir=self.ctx.config.bin_dir)
                    self._load(out, self._new_schema, self._new_schema, self._owner_login(),
                               meta_comment(self.ctx.project_id, "baseline-building", None))
                self._fill_new(lambda info: None)
            finally:
                with translate("removing the import staging database"):
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(staging)))

    def baseline(self) -> ConnInfo:
        """The baseline schema, as its owner, with read-only transactions by default."""
        with self._admin() as conn, translate("opening the baseline"):
            password = self._ensure_role(conn, self.owner_role, "baseline-owner", None)
        return self._conninfo(self.base_schema, self.owner_role, password, None,
                              extra_options="-cdefault_transaction_read_only=on")

    # ------------------------------------------------------------------ workspaces

    def _claim(self, conn: psycopg.Connection[Any], schema: str, ws: str) -> bool:
        """Whether the schema exists; refuses one that another workspace name maps to."""
        meta = self._schema_meta(conn, schema)
        if meta is not None and meta.get("workspace") not in (None, ws):
            raise DatabaseError(f"schema {schema} belongs to workspace {meta.get('workspace')!r}, not {ws!r}")
        return meta is not None

    def _clone_for(self, ws: str | None, login: ConnInfo, kind: str) -> None:
        self._load(self._baseline_sql(), self.base_schema, login.user, login,
                   meta_comment(self.ctx.project_id, kind, ws, created_at=now()))

    def create(self, ws: str, network: str | None = None) -> ConnInfo:
        schema = self.schema_name(ws)
        self.server.ensure_running()
        self._ensure_shared()
        with self._admin() as conn, advisory_lock(conn, schema), translate(f"creating the schema of {ws!r}"):
            password = self._ensure_role(conn, schema, "workspace", ws)
            with self._admin(self.shared_db) as c:
                present = self._claim(c, schema, ws)
            if not present:
                self.ctx.progress(f"cloning the baseline for {ws}")
                self._clone_for(ws, self._login(schema, password), "workspace")
        return self._conninfo(schema, schema, password, network)

    def exists(self, ws: str) -> bool:
        schema = self.schema_name(ws)
        with self._admin() as conn, translate(f"looking for the schema of {ws!r}"):
            if not exists(conn, "pg_database", self.shared_db):
                return False
        with self._admin(self.shared_db) as conn, translate(f"looking for the schema of {ws!r}"):
            return exists(conn, "pg_namespace", schema)

    def reset(self, ws: str, network: str | None = None) -> ConnInfo:
        """A fresh copy of the current baseline; role and password stay. Disconnects clients."""
        schema = self.schema_name(ws)
        self.server.ensure_running()
        with self._admin() as conn, advisory_lock(conn, schema), translate(f"resetting the schema of {ws!r}"):
            password = self._ensure_role(conn, schema, "workspace", ws)
            with self._admin(self.shared_db) as c:
                self._claim(c, schema, ws)
            terminate(conn, user=schema)
            self.ctx.progress(f"re-cloning the baseline for {ws}")
            self._clone_for(ws, self._login(schema, password), "workspace")
        return self._conninfo(schema, schema, password, network)

    def drop(self, ws: str) -> None:
        schema = self.schema_name(ws)
        with self._admin() as conn, advisory_lock(conn, schema), translate(f"dropping the schema of {ws!r}"):
            if exists(conn, "pg_database", self.shared_db):
                with self._admin(self.shared_db) as c:
                    self._claim(c, schema, ws)
                self._drop_schema(schema)
            self._drop_role(schema)
        self.secrets.delete(schema)
        shutil.rmtree(self._ckpt_dir(schema), ignore_errors=True)

    def _drop_schema(self, schema: str) -> None:
        self._guard(schema)
        with self._admin(self.shared_db) as c:
            terminate(c, user=schema)
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (self._lock_key,))
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident(schema)))

    # ------------------------------------------------------------------ checkpoints

    def _ckpt_dir(self, schema: str) -> Path:
        return self.cache_dir / "checkpoints" / schema

    def checkpoint(self, ws: str, label: str) -> CheckpointInfo:
        """Save the workspace's schema as SQL under ``label`` (clients stay connected)."""
        check_label(label)
        schema = self.schema_name(ws)
        created = now()
        with self._admin() as conn, advisory_lock(conn, schema):
            if not self.exists(ws):
                raise DatabaseError(f"workspace {ws!r} has no schema")
            self.ctx.progress(f"checkpoint {label!r} of {ws}")
            target = self._ckpt_dir(schema) / f"{label}.sql"
            # as the workspace's own login: pg_dump meets only what that role may read and run
            with translate(f"checkpointing {ws!r}"):
                password = self._ensure_role(conn, schema, "workspace", ws)
            dump_schema_sql(self._login(schema, password), self.shared_db, schema, target,
                            bin_dir=self.ctx.config.bin_dir)
            size = target.stat().st_size
            (self._ckpt_dir(schema) / f"{label}.json").write_text(json.dumps(
                {"workspace": ws, "label": label, "created_at": created, "size_bytes": size}))
        return CheckpointInfo(label=label, created_at=created, size_bytes=size)

    def restore(self, ws: str, label: str, network: str | None = None) -> None:
        """The workspace's schema becomes checkpoint ``label`` again. Disconnects its clients."""
        check_label(label)
        schema = self.schema_name(ws)
        source = self._ckpt_dir(schema) / f"{label}.sql"
        if not source.exists():
            raise UsageError(f"workspace {ws!r} has no checkpoint {label!r}",
                             hint=f"see `sandbox db checkpoints {ws}`")
        with self._admin() as conn, advisory_lock(conn, schema), translate(f"restoring {ws!r} to {label!r}"):
            password = self._ensure_role(conn, schema, "workspace", ws)
            terminate(conn, user=schema)
            self._load(source, schema, schema, self._login(schema, password),
                       meta_comment(self.ctx.project_id, "workspace", ws, created_at=now(), restored_from=label))

    def drop_checkpoint(self, ws: str, label: str) -> None:
        check_label(label)
        schema = self.schema_name(ws)
        with self._admin() as conn, advisory_lock(conn, schema):
            files = [self._ckpt_dir(schema) / f"{label}.{ext}" for ext in ("sql", "json")]
            if not files[0].exists():
                raise UsageError(f"workspace {ws!r} has no checkpoint {label!r}",
                                 hint=f"see `sandbox db checkpoints {ws}`")
            for f in files:
                f.unlink(missing_ok=True)

    def checkpoints(self, ws: str) -> list[CheckpointInfo]:
        out = []
        for meta_file in sorted(self._ckpt_dir(self.schema_name(ws)).glob("*.json")):
            try:
                meta = json.loads(meta_file.read_text())
            except (OSError, ValueError):
                continue
            out.append(CheckpointInfo(label=str(meta.get("label")), created_at=str(meta.get("created_at", "")),
                                      size_bytes=meta.get("size_bytes")))
        return sorted(out, key=lambda c: (c.created_at, c.label))

    # ------------------------------------------------------------------ scratch

    @contextmanager
    def scratch(self, tag: str) -> Iterator[ConnInfo]:
        """A throwaway copy of the baseline in its own schema and role, dropped on exit."""
        name = pg_name(self.ctx.project_id, f"{name_key(validate_name(tag))}-{_secrets.token_hex(3)}", "scratch")
        password = _secrets.token_urlsafe(24)
        self.server.ensure_running()
        try:
            with self._admin() as conn, translate(f"creating scratch schema {tag!r}"):
                self._create_role(conn, name, password, meta_comment(self.ctx.project_id, "scratch", None, tag=tag))
            with translate(f"creating scratch schema {tag!r}"):
                self._clone_for(None, self._login(name, password), "scratch")
            yield self._conninfo(name, name, password, None)
        finally:
            with translate(f"removing scratch schema {tag!r}"):
                self._drop_schema(name)
                self._drop_role(name)

    # ------------------------------------------------------------------ gc

    def owned(self) -> list[OwnedResource]:
        """Schemas, roles and the shared database named ``sbx_<project_id>_…`` (schemas first)."""
        pfx = prefix(self.ctx.project_id)
        out: list[OwnedResource] = []
        with self._admin() as conn, translate("listing sandbox objects"):
            has_db = exists(conn, "pg_database", self.shared_db)
            roles = conn.execute("SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
                                 "WHERE starts_with(rolname, %s) ORDER BY rolname", (pfx,)).fetchall()
            dbs = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                               "WHERE starts_with(datname, %s) ORDER BY datname", (pfx,)).fetchall()
        schemas: list[tuple[str, str | None]] = []
        if has_db:
            with self._admin(self.shared_db) as conn, translate("listing sandbox schemas"):
                schemas = conn.execute("SELECT nspname, obj_description(oid, 'pg_namespace') FROM pg_namespace "
                                       "WHERE starts_with(nspname, %s) ORDER BY nspname", (pfx,)).fetchall()
        for kind, rows in (("schema", schemas), ("role", roles), ("database", dbs)):
            for name, comment in rows:
                meta = parse_meta(comment)
                out.append(OwnedResource(kind=kind, id=name, workspace=meta.get("workspace"),
                                         detail=str(meta.get("kind", "unlabelled")), transient=is_transient(meta)))
        return out

    def remove_owned(self, resource: OwnedResource) -> None:
        name = self._guard(resource.id)
        with translate(f"removing {resource.kind} {name}"):
            if resource.kind == "schema":
                self._drop_schema(name)
                shutil.rmtree(self._ckpt_dir(name), ignore_errors=True)
            elif resource.kind == "role":
                self._drop_role(name)
                self.secrets.delete(name)
            elif resource.kind == "database":
                with self._admin() as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(name)))
            else:
                raise DatabaseError(f"the schema strategy owns no {resource.kind} ({name})")

    def doctor(self) -> list[Check]:
        try:
            with self._admin() as conn:
                version = server_version(conn)
                row = conn.execute("SELECT current_setting('server_version'), rolsuper, rolcreatedb, rolcreaterole "
                                   "FROM pg_roles WHERE rolname = current_user").fetchone()
        except Exception as exc:  # noqa: BLE001 - doctor reports, never raises
            message = getattr(exc, "message", None) or exc.__class__.__name__
            return [Check("schema: server", False, message, fix="start the database server")]
        assert row is not None
        checks = [Check("schema: server", True, f"PostgreSQL {row[0]}")]
        able = row[1] or (row[2] and row[3])
        checks.append(Check("schema: privileges", bool(able),
                            "may create the shared database and roles" if able else "needs CREATEDB and CREATEROLE",
                            fix=None if able else "use a superuser, or ALTER ROLE … CREATEDB CREATEROLE"))
        try:
            pg_dump = find_tool("pg_dump", self.ctx.config.bin_dir)
            text = run_tool([pg_dump, "--version"], self.server.admin(), "pg_dump --version").stdout.strip()
            major = int(text.split()[-1].split(".")[0])
            fine = major * 10000 >= version // 10000 * 10000
            checks.append(Check("schema: pg_dump", fine, text,
                                fix=None if fine else f"install the PostgreSQL {version // 10000} client programs"))
        except (DatabaseError, ValueError, IndexError, Exception) as exc:  # noqa: BLE001
            checks.append(Check("schema: pg_dump", False, getattr(exc, "message", str(exc)),
                                fix="apt-get install postgresql-client, or set [database] bin_dir"))
        checks.append(Check("schema: isolation", True,
                            "one schema and role per workspace; catalogs (table names) are visible to every role",
                            fix="use the template or snapshot strategy for full isolation", required=False))
        return checks
