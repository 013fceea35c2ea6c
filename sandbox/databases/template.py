"""The ``template`` strategy: one database per workspace, ``CREATE DATABASE … TEMPLATE baseline``.

Objects on the server (``pid`` is the project id, every name made by ``pg_name``)::

    sbx_<pid>_base_baseline     the baseline database: IS_TEMPLATE, ALLOW_CONNECTIONS false
    sbx_<pid>_base_owner        a LOGIN role that owns every object inside the baseline
    sbx_<pid>_base_view         a read-only copy of the baseline, made on demand by baseline()
    sbx_<pid>_ws_<name>         a workspace's database AND its role (same name)
    sbx_<pid>_ckpt_<…>          a checkpoint: a copy of a workspace database, no connections
    sbx_<pid>_tmp_<…>/_old_<…>  short-lived names used while a copy is built or swapped in

How a workspace database is made, and why:

* ``CREATE DATABASE ws TEMPLATE baseline OWNER ws STRATEGY FILE_COPY`` (PostgreSQL 15+;
  older servers get their only strategy). A template must have no sessions, so the
  baseline is sealed (``ALLOW_CONNECTIONS false``) and any session still on it is
  terminated before a copy; a copy that still meets "being accessed by other users" is
  retried. Readers use :meth:`TemplateStrategy.baseline`, a separate read-only copy.
* The baseline database itself belongs to the admin role and the objects inside it to
  ``sbx_<pid>_base_owner``; in each clone ``REASSIGN OWNED BY base_owner TO ws`` hands
  every object (``public`` included) to the workspace role, so it can ALTER and DROP its
  tables (migrations). The baseline database is deliberately *not* owned by base_owner:
  REASSIGN OWNED also moves shared objects, and would give the baseline away.
* The workspace role is ``LOGIN`` and nothing more (no superuser, CREATEDB, CREATEROLE).
  ``CONNECT`` and ``TEMPORARY`` are revoked from ``PUBLIC`` on each workspace database
  and granted to its own role only: A's credentials cannot connect to B's database.
* Every copy is built under a temporary name and renamed into place in one transaction,
  so a crash or a failure never leaves a half-made database under a workspace's name,
  and reset/restore/baseline rebuilds replace the old database only once the new one
  is complete.
* Checkpoints copy a workspace's database, which needs it to have no sessions:
  **taking a checkpoint (like reset and restore) disconnects the workspace's clients.**
* Every DROP, ALTER and REASSIGN goes through :func:`~sandbox.databases.pgadmin.guard`,
  which refuses names that do not start with ``sbx_<pid>_``.
"""

from __future__ import annotations

import hashlib
import secrets as _secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..checks import Check, OwnedResource
from ..errors import DatabaseError, UsageError
from ..host import now
from ..intents import kill_point
from ..names import pg_name, validate_name
from .base import BackendContext, CheckpointInfo, ConnInfo, Server, is_transient
from .shared import SharedServerStrategy
from .pgadmin import (
    advisory_lock,
    check_label,
    create_or_update_role,
    exists,
    ident,
    label_key,
    meta_comment,
    name_key,
    parse_meta,
    prefix,
    restore_dump,
    server_version,
    terminate,
    translate,
)

COPY_RETRIES = 6


class TemplateStrategy(SharedServerStrategy):
    """A :class:`~sandbox.databases.base.Strategy` on any server sandbox may administer."""

    name = "template"

    def __init__(self, ctx: BackendContext, server: Server) -> None:
        super().__init__(ctx, server)
        pid = ctx.project_id
        self.baseline_db = pg_name(pid, "baseline", "base")
        self.view_db = pg_name(pid, "view", "base")

    # ------------------------------------------------------------------ names

    def db_name(self, ws: str) -> str:
        """The database of a workspace; its role has the same name."""
        return self._ws_ident(ws)

    def _checkpoint_db(self, ws: str, label: str) -> str:
        return pg_name(self.ctx.project_id, label_key(ws, label), "ckpt")

    def _aux(self, target: str, kind: str) -> str:
        """A short-lived name derived from ``target`` (``tmp`` while building, ``old`` while swapping)."""
        return pg_name(self.ctx.project_id, hashlib.sha1(target.encode()).hexdigest()[:12], kind)

    # ------------------------------------------------------------------ connections

    def _conninfo(self, db: str, user: str, password: str, network: str | None, *,
                  attach: bool = True) -> ConnInfo:
        return self._server_info(user, password, db, network, attach=attach)

    def _ensure_role(self, conn: psycopg.Connection[Any], role: str, kind: str, ws: str | None) -> str:
        """The role's password; the role is created, or repaired when its secret was lost."""
        return self._role_password(conn, role, lambda password: create_or_update_role(
            conn, role, password, meta_comment(self.ctx.project_id, kind, ws), self.ctx.project_id))

    # ------------------------------------------------------------------ database primitives

    def _db_comment(self, conn: psycopg.Connection[Any], db: str) -> dict[str, Any]:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (db,)).fetchone()
        return parse_meta(row[0]) if row else {}

    def _drop_db(self, conn: psycopg.Connection[Any], db: str) -> None:
        self._guard(db)
        if not exists(conn, "pg_database", db):
            return
        conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(ident(db)))
        if server_version(conn) >= 130000:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(db)))
        else:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident(db)))
            terminate(conn, dbname=db)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident(db)))

    def _copy_db(self, conn: psycopg.Connection[Any], template: str, db: str, owner: str | None) -> None:
        """CREATE DATABASE db TEMPLATE template, clearing sessions off the template first."""
        self._guard(db)
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(ident(db), ident(template))
        if owner:
            stmt += sql.SQL(" OWNER {}").format(ident(owner))
        if server_version(conn) >= 150000:
            stmt += sql.SQL(" STRATEGY FILE_COPY")
        for attempt in range(COPY_RETRIES):
            terminate(conn, dbname=template)
            try:
                conn.execute(stmt)
                return
            except psycopg.errors.ObjectInUse:
                # a session slipped in between terminate and copy: clear it and try again
                if attempt == COPY_RETRIES - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _lock_down(self, conn: psycopg.Connection[Any], db: str, role: str | None) -> None:
        """Only ``role`` (and superusers) may connect; no role at all means no connections."""
        self._guard(db)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident(db)))
        if role:
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(ident(db), ident(role)))
        else:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident(db)))

    def _reassign(self, db: str, role: str) -> None:
        """Inside ``db``: every object of the baseline owner now belongs to ``role``."""
        self._guard(db)
        self._guard(role)
        with self._admin(db) as c:
            if exists(c, "pg_roles", self.owner_role):
                c.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident(self.owner_role), ident(role)))

    def _swap_in(self, conn: psycopg.Connection[Any], tmp: str, target: str) -> None:
        """Put the finished ``tmp`` in place of ``target`` atomically, then drop the old one."""
        old = self._aux(target, "old")
        for name in (tmp, target, old):
            self._guard(name)
        self._drop_db(conn, old)
        for attempt in range(COPY_RETRIES):
            terminate(conn, dbname=target)
            terminate(conn, dbname=tmp)
            try:
                with conn.transaction():
                    if exists(conn, "pg_database", target):
                        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(target), ident(old)))
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(tmp), ident(target)))
                break
            except psycopg.errors.ObjectInUse:
                if attempt == COPY_RETRIES - 1:
                    raise
                time.sleep(0.1 * (attempt + 1))
        self._drop_db(conn, old)

    def _build(self, conn: psycopg.Connection[Any], template: str, target: str, *, owner: str | None,
               comment: str, reassign_to: str | None, finish: Callable[[str], None] | None = None) -> None:
        """Copy ``template`` to ``target`` through a temporary name; ``finish(tmp)`` runs before the swap."""
        tmp = self._aux(target, "tmp")
        self._drop_db(conn, tmp)                                  # leftover of a crash
        self._copy_db(conn, template, tmp, owner)
        try:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident(tmp), sql.Literal(comment)))
            self._lock_down(conn, tmp, owner if owner != self._admin_user() else None)
            if reassign_to:
                self._reassign(tmp, reassign_to)
            if finish:
                finish(tmp)
            kill_point("template:copied")
            self._swap_in(conn, tmp, target)
        except BaseException:
            try:
                self._drop_db(conn, tmp)
            except psycopg.Error:
                pass
            raise

    def _admin_user(self) -> str:
        return self.server.admin().user

    def _drop_role(self, conn: psycopg.Connection[Any], role: str) -> None:
        self._guard(role)
        row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if row is None:
            return
        # privileges and objects the role still holds in other databases (ours only)
        dbs = [r[0] for r in conn.execute(
            "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = %s", (row[0],))]
        for db in dbs:
            if db.startswith(prefix(self.ctx.project_id)) and db not in (self.baseline_db,):
                with self._admin(db) as c:
                    c.execute(sql.SQL("DROP OWNED BY {}").format(ident(role)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident(role)))   # shared privileges
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)))

    # ------------------------------------------------------------------ baseline

    def has_baseline(self) -> bool:
        with self._admin() as conn, translate("looking for the baseline"):
            return exists(conn, "pg_database", self.baseline_db)

    def _owner_info(self, db: str, password: str) -> ConnInfo:
        return self._conninfo(db, self.owner_role, password, None)

    def _populate(self, conn: psycopg.Connection[Any], tmp: str, populate: Callable[[ConnInfo], None]) -> None:
        self._guard(tmp)
        password = self._ensure_role(conn, self.owner_role, "baseline-owner", None)
        conn.execute(sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}")
                     .format(ident(tmp), ident(self.owner_role)))
        self.ctx.progress("populating the baseline")
        with translate("populating the baseline"):
            populate(self._owner_info(tmp, password))
        terminate(conn, dbname=tmp)                     # pools left open by populate
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(ident(tmp), ident(self.owner_role)))
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
                     .format(ident(tmp)))
        terminate(conn, dbname=tmp)

    def _baseline_comment(self, source: str) -> str:
        return meta_comment(self.ctx.project_id, "baseline", None, generation=uuid.uuid4().hex,
                            built_at=now(), source=source)

    def build_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        """A new baseline from an empty database; the old one is replaced only on success."""
        self.server.ensure_running()
        with self._admin() as conn, advisory_lock(conn, self.baseline_db):
            with translate("preparing the baseline"):
                self._ensure_role(conn, self.owner_role, "baseline-owner", None)
                tmp = self._aux(self.baseline_db, "tmp")
                self._drop_db(conn, tmp)
                self.ctx.progress("creating an empty baseline database")
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident(tmp)))
            try:
                with translate("preparing the baseline"):
                    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        ident(tmp), sql.Literal(self._baseline_comment("build"))))
                    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident(tmp)))
                    with self._admin(tmp) as c:
                        # PG15+: public belongs to pg_database_owner; hand it to the owner role so
                        # that the clones' REASSIGN gives it to each workspace
                        c.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(ident(self.owner_role)))
                self._populate(conn, tmp, populate)
                with translate("installing the new baseline"):
                    self._swap_in(conn, tmp, self.baseline_db)
            except BaseException:
                with translate("removing the unfinished baseline"):
                    self._drop_db(conn, tmp)
                raise
            self._drop_view(conn)
        self.ctx.progress("baseline ready")

    def update_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        """Run ``populate`` on a copy of the baseline and swap it in (the old one stays on failure)."""
        self.server.ensure_running()
        with self._admin() as conn, advisory_lock(conn, self.baseline_db):
            with translate("updating the baseline"):
                if not exists(conn, "pg_database", self.baseline_db):
                    raise DatabaseError("there is no baseline to update", hint="run `sandbox db baseline`")
            self._drop_view(conn)
            with translate("updating the baseline"):
                self._build(conn, self.baseline_db, self.baseline_db, owner=None,
                            comment=self._baseline_comment("update"), reassign_to=None,
                            finish=lambda tmp: self._reopen_and_populate(conn, tmp, populate))

    def _reopen_and_populate(self, conn: psycopg.Connection[Any], tmp: str,
                             populate: Callable[[ConnInfo], None]) -> None:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true")
                     .format(ident(self._guard(tmp))))
        self._populate(conn, tmp, populate)

    def import_baseline(self, dump: Path) -> None:
        """The baseline becomes the content of a pg_dump file (custom, tar, directory or plain SQL).

        It is restored as the baseline owner without the dump's owners and privileges, so
        objects that need a superuser (untrusted extensions) must already exist in ``template0``'s
        image or be left out of the dump.
        """
        dump = Path(dump)
        if not dump.exists():
            raise UsageError(f"dump file not found: {dump}")
        bin_dir = self.ctx.config.bin_dir
        self.build_baseline(lambda info: restore_dump(info, dump, bin_dir=bin_dir,
                                                      what=f"importing {dump.name} into the baseline"))

    def _drop_view(self, conn: psycopg.Connection[Any]) -> None:
        with translate("removing the baseline view"):
            self._drop_db(conn, self.view_db)

    def baseline(self) -> ConnInfo:
        """A read-only copy of the baseline (the baseline itself accepts no connections).

        Made on first use after each rebuild; sessions default to read-only transactions.
        """
        with self._admin() as conn, advisory_lock(conn, self.view_db), translate("opening the baseline"):
            base = self._db_comment(conn, self.baseline_db)
            if not exists(conn, "pg_database", self.baseline_db):
                raise DatabaseError("there is no baseline yet", hint="run `sandbox init` or `sandbox db baseline`")
            password = self._ensure_role(conn, self.owner_role, "baseline-owner", None)
            view = self._db_comment(conn, self.view_db)
            if not view or view.get("generation") != base.get("generation"):
                comment = meta_comment(self.ctx.project_id, "baseline-view", None,
                                       generation=base.get("generation"))
                self._build(conn, self.baseline_db, self.view_db, owner=None, comment=comment, reassign_to=None,
                            finish=lambda tmp: self._open_view(conn, tmp))
        return self._owner_info(self.view_db, password)

    def _open_view(self, conn: psycopg.Connection[Any], tmp: str) -> None:
        self._guard(tmp)
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true").format(ident(tmp)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on").format(ident(tmp)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(ident(tmp), ident(self.owner_role)))

    # ------------------------------------------------------------------ workspaces

    def _claim(self, conn: psycopg.Connection[Any], db: str, ws: str) -> None:
        """Refuse a database that another workspace name maps to (a crafted or legacy name)."""
        owner = self._db_comment(conn, db).get("workspace")
        if owner is not None and owner != ws:
            raise DatabaseError(f"database {db} belongs to workspace {owner!r}, not {ws!r}")

    def _clone_for(self, conn: psycopg.Connection[Any], ws: str, db: str) -> None:
        """(Re)make ``db``, the database of ``ws``, as a copy of the baseline owned by its role."""
        self._build(conn, self.baseline_db, db, owner=db, reassign_to=db,
                    comment=meta_comment(self.ctx.project_id, "workspace", ws, created_at=now()))

    def create(self, ws: str, network: str | None = None) -> ConnInfo:
        db = self.db_name(ws)
        self.server.ensure_running()
        with self._admin() as conn, advisory_lock(conn, db), translate(f"creating the database of {ws!r}"):
            self._claim(conn, db, ws)
            if not exists(conn, "pg_database", self.baseline_db):
                raise DatabaseError("there is no baseline yet", hint="run `sandbox init` or `sandbox db baseline`")
            password = self._ensure_role(conn, db, "workspace", ws)
            if not exists(conn, "pg_database", db):
                self.ctx.progress(f"cloning the baseline for {ws}")
                self._clone_for(conn, ws, db)
        return self._conninfo(db, db, password, network)

    def exists(self, ws: str) -> bool:
        db = self.db_name(ws)
        with self._admin() as conn, translate(f"looking for the database of {ws!r}"):
            return exists(conn, "pg_database", db)

    def reset(self, ws: str, network: str | None = None) -> ConnInfo:
        """A fresh clone of the current baseline; role and password stay. Disconnects clients."""
        db = self.db_name(ws)
        self.server.ensure_running()
        with self._admin() as conn, advisory_lock(conn, db), translate(f"resetting the database of {ws!r}"):
            self._claim(conn, db, ws)
            password = self._ensure_role(conn, db, "workspace", ws)
            self.ctx.progress(f"re-cloning the baseline for {ws}")
            self._clone_for(conn, ws, db)
        return self._conninfo(db, db, password, network)

    def drop(self, ws: str) -> None:
        db = self.db_name(ws)
        with self._admin() as conn, advisory_lock(conn, db), translate(f"dropping the database of {ws!r}"):
            self._claim(conn, db, ws)
            for name, _ in self._checkpoint_rows(conn, ws):
                self._drop_db(conn, name)
            for name in (self._aux(db, "tmp"), self._aux(db, "old"), db):
                self._drop_db(conn, name)
            self._drop_role(conn, db)
        self.secrets.delete(db)

    # ------------------------------------------------------------------ checkpoints

    def _checkpoint_rows(self, conn: psycopg.Connection[Any], ws: str) -> list[tuple[str, dict[str, Any]]]:
        rows = conn.execute(
            "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
            "WHERE starts_with(datname, %s)", (prefix(self.ctx.project_id) + "ckpt_",)).fetchall()
        out = []
        for name, comment in rows:
            meta = parse_meta(comment)
            if meta.get("kind") == "checkpoint" and meta.get("workspace") == ws:
                out.append((name, meta))
        return out

    def checkpoint(self, ws: str, label: str) -> CheckpointInfo:
        """Copy the workspace's database under ``label`` (replacing one of the same label).

        The copy needs the database to have no sessions: its clients are disconnected.
        """
        check_label(label)
        db = self.db_name(ws)
        ckpt = self._checkpoint_db(ws, label)
        created = now()
        with self._admin() as conn, advisory_lock(conn, db), translate(f"checkpointing {ws!r}"):
            if not exists(conn, "pg_database", db):
                raise DatabaseError(f"workspace {ws!r} has no database")
            self.ctx.progress(f"checkpoint {label!r} of {ws} (disconnects its clients)")
            comment = meta_comment(self.ctx.project_id, "checkpoint", ws, label=label, created_at=created)
            self._build(conn, db, ckpt, owner=None, comment=comment, reassign_to=None)
            size = conn.execute("SELECT pg_database_size(%s)", (ckpt,)).fetchone()
        return CheckpointInfo(label=label, created_at=created, size_bytes=int(size[0]) if size else None)

    def restore(self, ws: str, label: str, network: str | None = None) -> None:
        """The workspace's database becomes a copy of checkpoint ``label``. Disconnects clients."""
        check_label(label)
        db = self.db_name(ws)
        ckpt = self._checkpoint_db(ws, label)
        with self._admin() as conn, advisory_lock(conn, db), translate(f"restoring {ws!r} to {label!r}"):
            meta = self._db_comment(conn, ckpt)
            if meta.get("workspace") != ws or meta.get("label") != label:
                raise UsageError(f"workspace {ws!r} has no checkpoint {label!r}",
                                 hint=f"see `sandbox db checkpoints {ws}`")
            self._ensure_role(conn, db, "workspace", ws)
            self._build(conn, ckpt, db, owner=db, reassign_to=db,
                        comment=meta_comment(self.ctx.project_id, "workspace", ws, created_at=now(),
                                             restored_from=label))

    def drop_checkpoint(self, ws: str, label: str) -> None:
        check_label(label)
        ckpt = self._checkpoint_db(ws, label)
        with self._admin() as conn, advisory_lock(conn, self.db_name(ws)), \
                translate(f"dropping checkpoint {label!r} of {ws!r}"):
            meta = self._db_comment(conn, ckpt)
            if meta.get("kind") != "checkpoint" or meta.get("workspace") != ws or meta.get("label") != label:
                raise UsageError(f"workspace {ws!r} has no checkpoint {label!r}",
                                 hint=f"see `sandbox db checkpoints {ws}`")
            self._drop_db(conn, ckpt)

    def checkpoints(self, ws: str) -> list[CheckpointInfo]:
        with self._admin() as conn, translate(f"listing the checkpoints of {ws!r}"):
            out = []
            for name, meta in self._checkpoint_rows(conn, ws):
                size = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
                out.append(CheckpointInfo(label=str(meta.get("label")), created_at=str(meta.get("created_at", "")),
                                          size_bytes=int(size[0]) if size else None))
        return sorted(out, key=lambda c: (c.created_at, c.label))

    # ------------------------------------------------------------------ scratch

    @contextmanager
    def scratch(self, tag: str) -> Iterator[ConnInfo]:
        """A throwaway clone of the baseline with its own role, dropped on exit."""
        key = f"{name_key(validate_name(tag))}-{_secrets.token_hex(3)}"
        db = pg_name(self.ctx.project_id, key, "scratch")
        password = _secrets.token_urlsafe(24)
        self.server.ensure_running()
        with self._admin() as conn, translate(f"creating scratch database {tag!r}"):
            create_or_update_role(conn, db, password, meta_comment(self.ctx.project_id, "scratch", None, tag=tag),
                                  self.ctx.project_id)
            try:
                self._build(conn, self.baseline_db, db, owner=db, reassign_to=db,
                            comment=meta_comment(self.ctx.project_id, "scratch", None, tag=tag, created_at=now()))
            except BaseException:
                self._drop_role(conn, db)
                raise
        try:
            yield self._conninfo(db, db, password, None)
        finally:
            with self._admin() as conn, translate(f"removing scratch database {tag!r}"):
                self._drop_db(conn, db)
                self._drop_role(conn, db)

    # ------------------------------------------------------------------ gc

    def owned(self) -> list[OwnedResource]:
        """Every database and role on the server named ``sbx_<project_id>_…`` (databases first)."""
        pfx = prefix(self.ctx.project_id)
        with self._admin() as conn, translate("listing sandbox databases"):
            dbs = conn.execute("SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database "
                               "WHERE starts_with(datname, %s) ORDER BY datname", (pfx,)).fetchall()
            roles = conn.execute("SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles "
                                 "WHERE starts_with(rolname, %s) ORDER BY rolname", (pfx,)).fetchall()
            out = []
            for kind, rows in (("database", dbs), ("role", roles)):
                for name, comment in rows:
                    meta = parse_meta(comment)
                    detail = str(meta.get("kind", "unlabelled"))
                    if meta.get("label"):
                        detail += f" {meta['label']}"
                    if kind == "database" and name.startswith((pfx + "tmp_", pfx + "old_")) \
                            and meta.get("kind") not in (None, "scratch"):     # a gate's copy stays "scratch"
                        # a copy under its temporary name: debris of a killed operation unless one runs
                        if self._busy(conn, meta):
                            continue
                        out.append(OwnedResource(kind=kind, id=name, workspace=None, detail=f"interrupted {detail}",
                                                 transient=True))
                        continue
                    out.append(OwnedResource(kind=kind, id=name, workspace=meta.get("workspace"), detail=detail,
                                             transient=is_transient(meta)))
        return out

    def _busy(self, conn: psycopg.Connection[Any], meta: dict[str, Any]) -> bool:
        """Whether an operation holds the advisory lock that guards the copy ``meta`` describes."""
        kind = meta.get("kind")
        key = (self.db_name(str(meta["workspace"])) if kind in ("workspace", "checkpoint") and meta.get("workspace")
               else self.baseline_db if kind == "baseline" else self.view_db if kind == "baseline-view" else None)
        if key is None:
            return False
        row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
        if row and row[0]:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
            return False
        return True

    def remove_owned(self, resource: OwnedResource) -> None:
        name = self._guard(resource.id)
        with self._admin() as conn, translate(f"removing {resource.kind} {name}"):
            if resource.kind == "database":
                self._drop_db(conn, name)
            elif resource.kind == "role":
                self._drop_role(conn, name)
                self.secrets.delete(name)
            else:
                raise DatabaseError(f"the template strategy owns no {resource.kind} ({name})")

    def doctor(self) -> list[Check]:
        try:
            with self._admin() as conn:
                version = server_version(conn)
                row = conn.execute("SELECT current_setting('server_version'), rolsuper, rolcreatedb, rolcreaterole "
                                   "FROM pg_roles WHERE rolname = current_user").fetchone()
                fcm = conn.execute("SELECT setting FROM pg_settings WHERE name = 'file_copy_method'").fetchone()
                has_base = exists(conn, "pg_database", self.baseline_db)
        except Exception as exc:  # noqa: BLE001 - doctor reports, never raises
            message = getattr(exc, "message", None) or exc.__class__.__name__
            return [Check("template: server", False, message, fix="start the database server")]
        assert row is not None
        checks = [Check("template: server", True, f"PostgreSQL {row[0]}")]
        able = row[1] or (row[2] and row[3])
        checks.append(Check("template: privileges", bool(able),
                            "may create databases and roles" if able else "needs CREATEDB and CREATEROLE",
                            fix=None if able else "use a superuser, or ALTER ROLE … CREATEDB CREATEROLE"))
        checks.append(Check("template: FILE_COPY", version >= 150000,
                            "CREATE DATABASE … STRATEGY FILE_COPY" if version >= 150000
                            else "PostgreSQL < 15: copies use the only strategy available",
                            fix=None if version >= 150000 else "use PostgreSQL 15 or newer", required=False))
        if fcm is None:
            checks.append(Check("template: copy-on-write clone", False,
                                "PostgreSQL < 18: every clone copies the files (about 0.7 s per GB)",
                                fix="PostgreSQL 18 with file_copy_method = clone on XFS/btrfs clones in ~60 ms",
                                required=False))
        else:
            clone = fcm[0] == "clone"
            checks.append(Check("template: copy-on-write clone", clone, f"file_copy_method = {fcm[0]}",
                                fix=None if clone else "SET file_copy_method = clone (needs XFS or btrfs; "
                                                       "on ext4 it silently copies)", required=False))
        checks.append(Check("template: baseline", has_base, "present" if has_base else "not built yet",
                            fix=None if has_base else "sandbox db baseline", required=False))
        return checks
