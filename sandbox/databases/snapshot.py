"""The ``snapshot`` strategy: one PostgreSQL cluster per workspace on a copy-on-write clone.

The baseline is a *stopped* cluster in a volume of the pool; each workspace runs
its own cluster (host binaries or a container) on a clone of that volume::

    <pool>/baseline/              the baseline: data/, baseline.json (generation)
    <pool>/baseline.new           a baseline being built (swapped in when complete)
    <pool>/view/                  a read-only running clone that serves baseline()
    <pool>/ws/<name>/             a workspace: data/, postgres.log, workspace.json
    <pool>/ws/.new-<name>         a clone being made (renamed into place last)
    <pool>/ckpt/<name>/<label>/   a checkpoint of a workspace
    <pool>/scratch/<tag>-<id>/    a throwaway clone for the merge gate
    <state>/secrets/snapshot-*.password   passwords, mode 0600
    <state>/db/snapshot/          per-workspace port, locks

Why it is safe:

* The baseline volume is only ever cloned while stopped (cleanly shut down), so a
  clone starts without recovery. It is rebuilt in ``baseline.new`` and swapped in
  with one atomic rename (``renameat2(RENAME_EXCHANGE)``); a failure or a SIGKILL
  leaves the old one untouched. Clones hold a shared lock, the swap an exclusive one.
* Every multi-step change builds under a dot-name (``.new-*``) and renames it into
  place last; what a crash leaves behind is listed by :meth:`owned` as ``leftover``
  (unless the operation is still running: its lock is held) and removed by
  :meth:`remove_owned`.
* Checkpoints of a running workspace are atomic btrfs snapshots after a
  ``CHECKPOINT`` (crash-consistent: PostgreSQL recovers them like after a power
  cut); on storage without atomic snapshots the cluster is stopped for the copy.

Roles: the baseline's app database and everything in it is owned by a non-login
role; ``populate`` runs as the superuser with ``role`` set to that owner, so what it
creates belongs to the owner. A clone renames the owner to the workspace's role
and gives it the workspace's password: the workspace can migrate its schema, but
is not a superuser, and its password opens no other workspace's cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..checks import Check, OwnedResource
from ..disk import disk_full_translated
from ..errors import DatabaseError, UsageError
from ..intents import kill_point
from ..names import pg_name, validate_label, validate_name
from .base import BackendContext, CheckpointInfo, ConnInfo
from .cluster import DockerCluster, LocalCluster
from .storage import STORAGE_INIT_HINT, Storage, detect, parse_size

if TYPE_CHECKING:       # psycopg loads when a database is first talked to, not at import
    import psycopg

Cluster = LocalCluster | DockerCluster

BASELINE_OWNER = ".baseline"       # port owner names that no workspace can have
_DOT = "."


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def _flock(path: Path, *, shared: bool = False) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _lock_busy(path: Path) -> bool:
    """True if someone holds ``path``'s lock right now (an operation is in progress)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


_F = TypeVar("_F", bound=Callable[..., Any])


def _space(what: str) -> Callable[[_F], _F]:
    """Run a workspace operation so that a full pool is :class:`~sandbox.errors.DiskFull` (exit 3)."""
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(self: "SnapshotStrategy", ws: str, *args: Any, **kwargs: Any) -> Any:
            with disk_full_translated(f"{what} of {ws!r}", self.pool):
                return fn(self, ws, *args, **kwargs)
        return cast(_F, inner)
    return wrap


class SnapshotStrategy:
    """One cluster per workspace on a copy-on-write clone of a stopped baseline cluster.

    ``storage`` defaults to :func:`~sandbox.databases.storage.detect` on
    :meth:`default_pool` (make a btrfs pool first with ``provision_pool`` where there
    is no copy-on-write). ``server_kind`` is ``"local"`` (host binaries;
    ``ctx.config.bin_dir``) or ``"docker"`` (image ``ctx.config.image``). ``dbname``
    is the app database.
    """

    name = "snapshot"

    def __init__(self, ctx: BackendContext, storage: Storage | None = None, server_kind: str = "local", *,
                 dbname: str = "app") -> None:
        if server_kind not in ("local", "docker"):
            raise ValueError(f"server_kind must be 'local' or 'docker', not {server_kind!r}")
        if server_kind == "docker" and ctx.docker is None:
            raise ValueError("server_kind 'docker' needs ctx.docker")
        self.ctx = ctx
        self.storage = storage if storage is not None else detect(self.default_pool(ctx))
        self.server_kind = server_kind
        self.dbname = dbname
        self.pool = self.storage.root
        self.meta_dir = ctx.state_dir / "db" / "snapshot"
        self.secrets_dir = ctx.state_dir / "secrets"
        self.owner_role = pg_name(ctx.project_id, "baseline", "owner")

    @staticmethod
    def default_pool(ctx: BackendContext) -> Path:
        """``[database] pool`` relative to the repository root (the state folder's parent)."""
        return ctx.state_dir.parent / ctx.config.pool

    # -- paths, secrets, ports -------------------------------------------------------------

    @property
    def baseline_dir(self) -> Path:
        return self.pool / "baseline"

    def _ws_dir(self, ws: str) -> Path:
        return self.pool / "ws" / ws

    def _ckpt_dir(self, ws: str) -> Path:
        return self.pool / "ckpt" / ws

    def _lock(self, key: str, *, shared: bool = False) -> contextlib.AbstractContextManager[None]:
        return _flock(self.meta_dir / "locks" / f"{key}.lock", shared=shared)

    def _busy(self, key: str) -> bool:
        return _lock_busy(self.meta_dir / "locks" / f"{key}.lock")

    def _secret(self, key: str, *, create: bool = True) -> str:
        path = self.secrets_dir / f"snapshot-{key}.password"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            if not create:
                raise DatabaseError(f"missing secret {path.name} in {self.secrets_dir}") from None
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        value = secrets.token_urlsafe(24)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:           # another process won the race: use theirs
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value

    def _admin_password(self) -> str:
        return self._secret("admin")

    def _role(self, ws: str) -> str:
        return pg_name(self.ctx.project_id, ws, "ws")

    def _port(self, ws: str) -> int:
        meta_path = self.meta_dir / f"{ws}.json"
        meta = _read_json(meta_path)
        if isinstance(meta.get("port"), int):
            return int(meta["port"])
        port = self.ctx.ports.allocate(owner=ws, purpose="db")[0]
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        _write_json(meta_path, {**meta, "port": port, "created_at": _now()})
        return port

    def _stored_port(self, ws: str) -> int | None:
        port = _read_json(self.meta_dir / f"{ws}.json").get("port")
        return port if isinstance(port, int) else None

    # -- clusters --------------------------------------------------------------------------

    def _container_name(self, key: str) -> str:
        sep = "_" if key.startswith(_DOT) else "-"          # special clusters never clash
        return f"sbx-{self.ctx.project_id}-db{sep}{key.lstrip(_DOT)}"

    def _cluster(self, volume: Path, port: int, key: str, workspace: str | None = None,
                 password: str | None = None, network: str | None = None) -> Cluster:
        password = self._admin_password() if password is None else password
        if self.server_kind == "local":
            return LocalCluster(volume / "data", port, password=password, superuser=self.ctx.config.user,
                                bin_dir=self.ctx.config.bin_dir)
        assert self.ctx.docker is not None
        labels = {**self.ctx.labels, "dev.sandbox.project": self.ctx.project_id,
                  "dev.sandbox.workspace": workspace or "", "dev.sandbox.role": "database",
                  "dev.sandbox.volume": str(volume)}
        return DockerCluster(volume / "data", port, image=self.ctx.config.image,
                             container_name=self._container_name(key), labels=labels,
                             docker_factory=self.ctx.docker, password=password,
                             superuser=self.ctx.config.user, network=network)

    def _ws_cluster(self, ws: str, network: str | None = None) -> Cluster:
        """The cluster of ``ws``; a container it gets is created on ``network`` (remembered, so
        a restart for a checkpoint puts it back on the workspace's network)."""
        port = self._port(ws)                     # the stored one, else allocated and stored
        meta_path = self.meta_dir / f"{ws}.json"
        meta = _read_json(meta_path)
        if network is None:
            network = meta.get("network")
        elif self.server_kind == "docker" and meta.get("network") != network:
            _write_json(meta_path, {**meta, "network": network})
        return self._cluster(self._ws_dir(ws), port, ws, ws, network=network)

    def _stop_any(self, volume: Path) -> None:
        """Stop whatever cluster runs on ``volume`` (crash leftovers included)."""
        LocalCluster(volume / "data", 0, password="").stop(mode="immediate")
        if self.server_kind == "docker" and self.ctx.docker is not None:
            import docker.errors

            try:
                client = self.ctx.docker()
                for c in client.containers.list(all=True, ignore_removed=True, filters={"label": [
                        f"dev.sandbox.project={self.ctx.project_id}", f"dev.sandbox.volume={volume}"]}):
                    c.remove(force=True)
            except docker.errors.DockerException as exc:
                raise DatabaseError(f"cannot remove the container of {volume}: {exc}") from exc

    def _connect(self, conn: ConnInfo) -> psycopg.Connection[Any]:
        """An admin session on a cluster: role DDL and CHECKPOINT in the ``postgres`` database,
        with the catalog-only search_path of :func:`~sandbox.databases.pgadmin.hardened`."""
        import psycopg

        from .pgadmin import hardened
        try:
            return psycopg.connect(**hardened(conn).kwargs(), autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL on port {conn.port}: "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from exc

    def _clean_clone(self, volume: Path) -> None:
        """A fresh clone must not inherit its source's lock file, log or identity."""
        for name in ("data/postmaster.pid", "postgres.log", "workspace.json", "checkpoint.json"):
            (volume / name).unlink(missing_ok=True)
        for f in volume.glob(".input-*"):
            f.unlink(missing_ok=True)

    def _populate_with(self, cluster: Cluster, populate: Callable[[ConnInfo], None]) -> None:
        """Run ``populate`` logged in as the owner role (what it creates, the owner owns), with
        a password that lives only as long as the call: the URL the project's code gets is a
        plain one, with no ``options=-c role=…`` (which asyncpg, for one, refuses)."""
        from psycopg import sql

        password = secrets.token_urlsafe(24)
        owner = sql.Identifier(self.owner_role)
        with self._connect(cluster.admin()) as c:
            c.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(owner, sql.Literal(password)))
        try:
            populate(replace_conn(cluster.admin(), dbname=self.dbname, user=self.owner_role, password=password))
        finally:
            with self._connect(cluster.admin()) as c:
                c.execute(sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s"),
                          [self.owner_role])
                c.execute(sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(owner))

    # -- baseline --------------------------------------------------------------------------

    def _recover_baseline(self) -> None:
        """Finish a swap that a crash interrupted (only possible without renameat2)."""
        swap = self.pool / "baseline.new.swap"
        if not self.baseline_dir.exists() and swap.exists():
            os.rename(swap, self.baseline_dir)

    def has_baseline(self) -> bool:
        self._recover_baseline()
        return (self.baseline_dir / "baseline.json").exists()

    def _require_baseline(self) -> None:
        if not self.has_baseline():
            raise DatabaseError("there is no baseline database yet",
                                hint="run `sandbox init` or `sandbox db baseline`")

    def build_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        self._build(lambda cluster: self._populate_with(cluster, populate), source="build", fresh=True)

    def update_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        self._build(lambda cluster: self._populate_with(cluster, populate), source="update", fresh=False)

    def import_baseline(self, dump: Path) -> None:
        dump = Path(dump)
        if not dump.is_file():
            raise UsageError(f"cannot import {dump}: not a file (plain SQL or pg_dump -Fc/-Ft)")
        with open(dump, "rb") as f:
            head = f.read(512)
        if head.startswith(b"PGDMP"):
            kind = "custom"
        elif len(head) >= 262 and head[257:262] == b"ustar":
            kind = "tar"
        else:
            kind = "plain"

        def load(cluster: Cluster) -> None:
            self.ctx.progress(f"loading {dump.name} ({kind} format) into the new baseline")
            if kind == "plain":
                cluster.run_client("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", self.dbname],
                                   dbname=self.dbname, input_file=dump,
                                   options=f"-c role={self.owner_role}")
            else:
                cluster.run_client("pg_restore", ["--no-owner", "--no-privileges",
                                                  f"--role={self.owner_role}", "--exit-on-error",
                                                  "-d", self.dbname],
                                   dbname=self.dbname, input_file=dump)
        self._build(load, source=f"import {dump.name}", fresh=True)

    def _build(self, fill: Callable[[Cluster], None], *, source: str, fresh: bool) -> None:
        new = self.pool / "baseline.new"
        with self._lock("baseline-build"):
            self._recover_baseline()
            if not fresh:
                self._require_baseline()
            self._stop_any(new)
            self.storage.delete(new)              # a leftover of an interrupted build
            from psycopg import sql

            port = self.ctx.ports.allocate(owner=BASELINE_OWNER, purpose="build")[0]
            cluster = self._cluster(new, port, ".build")
            try:
                if fresh:
                    self.ctx.progress("creating a new baseline cluster")
                    self.storage.create_volume(new)
                    cluster.initdb()
                    cluster.ensure_running()
                    with self._connect(cluster.admin()) as c:
                        c.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(self.owner_role)))
                        c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(self.dbname), sql.Identifier(self.owner_role)))
                else:
                    self.ctx.progress("cloning the baseline to update it")
                    with self._lock("baseline", shared=True):
                        self.storage.clone(self.baseline_dir, new)
                    self._clean_clone(new)
                    (new / "baseline.json").unlink(missing_ok=True)
                    cluster.ensure_running()
                fill(cluster)
                self.ctx.progress("sealing the baseline")
                cluster.stop(mode="fast")            # clean shutdown: clones start without recovery
                (new / "postgres.log").unlink(missing_ok=True)
                _write_json(new / "baseline.json", {"generation": secrets.token_hex(8),
                                                   "created_at": _now(), "source": source})
                self.storage.sync()
            except BaseException:
                with contextlib.suppress(Exception):
                    cluster.stop(mode="immediate")
                with contextlib.suppress(Exception):
                    self.storage.delete(new)
                raise
            finally:
                self.ctx.ports.release(owner=BASELINE_OWNER, purpose="build")
            with self._lock("baseline"):
                if self.baseline_dir.exists():
                    self.storage.exchange(new, self.baseline_dir)
                    self.storage.delete(new)        # now holds the previous baseline
                else:
                    os.rename(new, self.baseline_dir)
            self.ctx.progress("baseline ready")

    def _baseline_generation(self, volume: Path) -> str | None:
        gen = _read_json(volume / "baseline.json").get("generation")
        return gen if isinstance(gen, str) else None

    def baseline(self) -> ConnInfo:
        """A read-only session on a running clone of the current baseline (``<pool>/view``)."""
        self._require_baseline()
        view = self.pool / "view"
        with self._lock("view"):
            port = self.ctx.ports.allocate(owner=BASELINE_OWNER, purpose="db")[0]
            cluster = self._cluster(view, port, ".view")
            if self._baseline_generation(view) != self._baseline_generation(self.baseline_dir):
                self._stop_any(view)
                self.storage.delete(view)
                with self._lock("baseline", shared=True):
                    self.storage.clone(self.baseline_dir, view)
                self._clean_clone(view)
            cluster.ensure_running()
        return replace_conn(cluster.admin(), dbname=self.dbname,
                            options="-c default_transaction_read_only=on")

    # -- workspaces ------------------------------------------------------------------------

    def _clone_baseline(self, target: Path) -> None:
        """Clone the baseline to ``target`` via a dot-name, renamed into place last."""
        self._require_baseline()
        tmp = target.parent / f".new-{target.name}"
        self._stop_any(tmp)
        self.storage.delete(tmp)
        with self._lock("baseline", shared=True):
            self.storage.clone(self.baseline_dir, tmp)
        self._clean_clone(tmp)
        if target.exists():
            self.storage.exchange(tmp, target)
            self.storage.delete(tmp)
        else:
            os.rename(tmp, target)

    def _configure(self, cluster: Cluster, volume: Path, role: str, password: str) -> None:
        """Give a fresh clone its role: the baseline owner, renamed, with its own password."""
        from psycopg import sql

        if _read_json(volume / "workspace.json").get("role") == role:
            return
        with self._connect(cluster.admin()) as c:
            have = {r for (r,) in c.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                            [[role, self.owner_role]])}
            if role not in have:
                if self.owner_role not in have:
                    raise DatabaseError("the baseline has no owner role; rebuild it with `sandbox db baseline`")
                c.execute(sql.SQL("ALTER ROLE {} RENAME TO {}").format(
                    sql.Identifier(self.owner_role), sql.Identifier(role)))
            # A literal, composed client-side: utility statements take no parameters.
            c.execute(sql.SQL("ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION "
                              "CONNECTION LIMIT 15 PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))
        _write_json(volume / "workspace.json", {"role": role, "configured_at": _now()})

    def _conninfo(self, ws: str, cluster: Cluster, network: str | None, *, attach: bool = True,
                  password: str | None = None) -> ConnInfo:
        seen = (cluster.attach(network) if attach else cluster.address(network)) if network else None
        if password is None:
            password = self._secret(f"ws-{ws}", create=False)
        return ConnInfo(host="127.0.0.1", port=cluster.port, user=self._role(ws),
                        password=password, dbname=self.dbname, container=getattr(cluster, "container_name", None),
                        container_host=seen[0] if seen else None,
                        container_port=seen[1] if seen else None)

    def planned(self, ws: str, network: str | None = None) -> ConnInfo:
        """Reserves the port and the role's secret (``drop`` releases them); starts nothing."""
        validate_name(ws)
        with self._lock(f"ws-{ws}"):
            return self._conninfo(ws, self._ws_cluster(ws, network), network, attach=False,
                                  password=self._secret(f"ws-{ws}"))

    @_space("creating the database")
    def create(self, ws: str, network: str | None = None) -> ConnInfo:
        validate_name(ws)
        with self._lock(f"ws-{ws}"), contextlib.ExitStack() as undo:
            volume = self._ws_dir(ws)
            fresh = not self.storage.is_volume(volume)
            if fresh:
                self._require_baseline()
                if self._stored_port(ws) is None:
                    self._port(ws)
                    undo.callback(self._forget, ws)
                secret = self.secrets_dir / f"snapshot-ws-{ws}.password"
                if not secret.exists():
                    undo.callback(secret.unlink, missing_ok=True)
                self.ctx.progress(f"cloning the baseline for {ws}")
                self._clone_baseline(volume)
                undo.callback(self._discard, volume)
            self._bound(ws)
            cluster = self._ws_cluster(ws, network)
            password = self._secret(f"ws-{ws}")
            self.ctx.progress(f"starting the database of {ws} on port {cluster.port}")
            cluster.ensure_running()
            undo.callback(cluster.stop, "immediate")
            self._configure(cluster, volume, self._role(ws), password)
            info = self._conninfo(ws, cluster, network)
            undo.pop_all()
            return info

    def _quota(self) -> int | None:
        """``[database] workspace_quota`` in bytes (a share of the pool as it is now), or None."""
        value = str(getattr(self.ctx.config, "workspace_quota", "off")).strip().lower()
        if value == "off":
            return None
        if value.endswith("%"):
            total = self.storage.pool_size()
            return total * int(value[:-1]) // 100 if total else None
        return parse_size(value)

    def _bound(self, ws: str) -> None:
        """Cap the workspace's data directory at its quota, so that filling it fails there alone
        (its PostgreSQL gets EDQUOT) while the pool keeps room for the others and for sandbox."""
        if self.storage.can_bound:
            self.storage.limit(self._ws_dir(ws), self._quota())

    def _forget(self, ws: str) -> None:
        self.ctx.ports.release(owner=ws, purpose="db")
        (self.meta_dir / f"{ws}.json").unlink(missing_ok=True)

    def _discard(self, volume: Path) -> None:
        self._stop_any(volume)
        self.storage.delete(volume)

    def _require_ws(self, ws: str) -> None:
        validate_name(ws)
        if not self.exists(ws):
            raise DatabaseError(f"workspace {ws!r} has no database", hint=f"run `sandbox up {ws}`")

    def info(self, ws: str, network: str | None = None) -> ConnInfo:
        self._require_ws(ws)
        return self._conninfo(ws, self._ws_cluster(ws), network)

    def exists(self, ws: str) -> bool:
        return self.storage.is_volume(self._ws_dir(ws)) and (self._ws_dir(ws) / "data" / "PG_VERSION").exists()

    @_space("starting the database")
    def start(self, ws: str, network: str | None = None) -> None:
        self._require_ws(ws)
        with self._lock(f"ws-{ws}"):
            self._bound(ws)             # the quota as configured now
            cluster = self._ws_cluster(ws, network)
            cluster.ensure_running()
            self._configure(cluster, self._ws_dir(ws), self._role(ws), self._secret(f"ws-{ws}"))
            if network:
                cluster.attach(network)

    def stop(self, ws: str) -> None:
        validate_name(ws)
        if not self.exists(ws):
            return
        with self._lock(f"ws-{ws}"):
            self._ws_cluster(ws).stop(mode="fast")

    def _replace_volume(self, ws: str, src: Path | None, network: str | None) -> ConnInfo:
        """Stop ``ws``, swap in a clone of ``src`` (None: the baseline), start it."""
        volume = self._ws_dir(ws)
        cluster = self._ws_cluster(ws, network)
        cluster.stop(mode="immediate")          # its data is being thrown away
        kill_point("snapshot:stopped")
        if src is None:
            self._clone_baseline(volume)
        else:
            tmp = volume.parent / f".new-{ws}"
            self._stop_any(tmp)
            self.storage.delete(tmp)
            self.storage.clone(src, tmp)
            (tmp / "data" / "postmaster.pid").unlink(missing_ok=True)
            (tmp / "checkpoint.json").unlink(missing_ok=True)
            if volume.exists():
                self.storage.exchange(tmp, volume)
                self.storage.delete(tmp)
            else:
                os.rename(tmp, volume)
        kill_point("snapshot:swapped")          # a fresh clone in place, its role not yet configured
        self._bound(ws)                         # a new volume: a new qgroup, without the limit
        cluster.ensure_running()
        self._configure(cluster, volume, self._role(ws), self._secret(f"ws-{ws}"))
        return self._conninfo(ws, cluster, network)

    @_space("resetting the database")
    def reset(self, ws: str, network: str | None = None) -> ConnInfo:
        validate_name(ws)
        if not self.exists(ws):
            return self.create(ws, network)
        with self._lock(f"ws-{ws}"):
            self.ctx.progress(f"resetting the database of {ws} to the current baseline")
            return self._replace_volume(ws, None, network)

    def drop(self, ws: str) -> None:
        validate_name(ws)
        with self._lock(f"ws-{ws}"):
            for volume in (self._ws_dir(ws), self.pool / "ws" / f".new-{ws}"):
                self._stop_any(volume)
                self.storage.delete(volume)
            self.storage.delete(self._ckpt_dir(ws))
            (self.secrets_dir / f"snapshot-ws-{ws}.password").unlink(missing_ok=True)
            self._forget(ws)
        self.storage.reclaim()

    # -- checkpoints -----------------------------------------------------------------------

    @staticmethod
    def _check_label(label: str) -> str:
        return validate_label(label)

    @_space("checkpoint")
    def checkpoint(self, ws: str, label: str) -> CheckpointInfo:
        self._require_ws(ws)
        self._check_label(label)
        with self._lock(f"ws-{ws}"):
            volume = self._ws_dir(ws)
            cluster = self._ws_cluster(ws)
            dst = self._ckpt_dir(ws) / label
            tmp = dst.parent / f".new-{label}"
            self.storage.delete(tmp)
            running = cluster.is_running()
            created = _now()
            try:
                if running and self.storage.atomic:
                    # Flush first so recovery from the snapshot is short; the snapshot is atomic
                    # over the whole data directory, WAL included: crash-consistent. A cluster
                    # still recovering (e.g. after a full disk) is waited for first.
                    cluster.ensure_running()
                    self._sql(cluster, "CHECKPOINT", f"flushing {ws!r} before the checkpoint")
                    self.storage.clone(volume, tmp)
                else:
                    if running:
                        cluster.stop(mode="fast")
                    try:
                        self.storage.clone(volume, tmp)
                    finally:
                        if running:
                            cluster.ensure_running()
                (tmp / "data" / "postmaster.pid").unlink(missing_ok=True)
                _write_json(tmp / "checkpoint.json", {"label": label, "created_at": created})
            except BaseException:
                with contextlib.suppress(Exception):     # a half copy holds space it must give back
                    self.storage.delete(tmp)
                raise
            if dst.exists():
                self.storage.exchange(tmp, dst)
                self.storage.delete(tmp)
            else:
                os.rename(tmp, dst)
            return CheckpointInfo(label, created, self.storage.usage(dst))

    def _sql(self, cluster: Cluster, statement: str, what: str) -> None:
        import psycopg

        with self._connect(cluster.admin()) as c:
            try:
                c.execute(statement)  # type: ignore[arg-type] # a constant of this module
            except psycopg.Error as exc:
                raise DatabaseError(f"{what}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") \
                    from exc

    @_space("restoring the database")
    def restore(self, ws: str, label: str, network: str | None = None) -> None:
        validate_name(ws)
        self._check_label(label)
        src = self._ckpt_dir(ws) / label
        if not self.storage.is_volume(src):
            raise UsageError(f"workspace {ws!r} has no checkpoint {label!r}",
                             hint=f"see `sandbox db checkpoints {ws}`")
        with self._lock(f"ws-{ws}"):
            self.ctx.progress(f"restoring {ws} to checkpoint {label}")
            self._replace_volume(ws, src, network)

    @_space("dropping a checkpoint")
    def drop_checkpoint(self, ws: str, label: str) -> None:
        validate_name(ws)
        self._check_label(label)
        src = self._ckpt_dir(ws) / label
        with self._lock(f"ws-{ws}"):
            if not self.storage.is_volume(src):
                raise UsageError(f"workspace {ws!r} has no checkpoint {label!r}",
                                 hint=f"see `sandbox db checkpoints {ws}`")
            self.storage.delete(src)
        self.storage.reclaim()

    def checkpoints(self, ws: str) -> list[CheckpointInfo]:
        validate_name(ws)
        root = self._ckpt_dir(ws)
        if not root.is_dir():
            return []
        out = []
        for d in sorted(root.iterdir()):
            if d.name.startswith(_DOT) or not d.is_dir():
                continue
            meta = _read_json(d / "checkpoint.json")
            out.append(CheckpointInfo(d.name, str(meta.get("created_at", "")), self.storage.usage(d)))
        return sorted(out, key=lambda c: c.created_at)

    # -- scratch ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def scratch(self, tag: str) -> Iterator[ConnInfo]:
        """A throwaway fresh clone of the baseline, removed on exit."""
        self._require_baseline()
        sid = f"{re.sub(r'[^A-Za-z0-9._-]', '_', tag)[:40]}-{secrets.token_hex(3)}"
        volume = self.pool / "scratch" / sid
        owner = f".scratch-{sid}"
        lock = self.meta_dir / "locks" / f"scratch-{sid}.lock"
        with _flock(lock), contextlib.ExitStack() as cleanup:
            cleanup.callback(lock.unlink, missing_ok=True)
            cleanup.callback(self.ctx.ports.release, owner=owner, purpose="db")
            port = self.ctx.ports.allocate(owner=owner, purpose="db")[0]
            cleanup.callback(self._discard, volume)
            with self._lock("baseline", shared=True):
                self.storage.clone(self.baseline_dir, volume)
            self._clean_clone(volume)
            cluster = self._cluster(volume, port, f".scratch-{sid}")
            cluster.ensure_running()
            role = pg_name(self.ctx.project_id, tag, "scratch")
            password = secrets.token_urlsafe(24)
            self._configure(cluster, volume, role, password)
            yield ConnInfo(host="127.0.0.1", port=port, user=role, password=password, dbname=self.dbname,
                           container=getattr(cluster, "container_name", None))

    # -- gc and doctor ---------------------------------------------------------------------

    def owned(self) -> list[OwnedResource]:
        out: list[OwnedResource] = []
        pool = self.pool
        if not pool.is_dir():
            return out
        build_busy = self._busy("baseline-build")
        if self.baseline_dir.exists():
            out.append(OwnedResource("baseline", str(self.baseline_dir), None, "the baseline (never removed)"))
        for name in ("baseline.new", "baseline.new.swap"):
            if (pool / name).exists() and not build_busy:
                out.append(OwnedResource("leftover", str(pool / name), None, "interrupted baseline build"))
        if (pool / "view").exists():
            out.append(OwnedResource("baseline-view", str(pool / "view"), None, "read-only baseline clone"))
        ws_root = pool / "ws"
        for d in sorted(ws_root.iterdir()) if ws_root.is_dir() else []:
            if d.name.startswith(_DOT):
                ws = d.name.split("-", 1)[-1]
                if not self._busy(f"ws-{ws}"):
                    out.append(OwnedResource("leftover", str(d), None, f"interrupted clone for {ws}"))
            else:
                port = self._stored_port(d.name)
                running = LocalCluster(d / "data", 0, password="").is_running() if self.server_kind == "local" else None
                state = "" if running is None else (", running" if running else ", stopped")
                out.append(OwnedResource("volume", str(d), d.name, f"workspace database, port {port}{state}"))
        ck_root = pool / "ckpt"
        for wsd in sorted(ck_root.iterdir()) if ck_root.is_dir() else []:
            for d in sorted(wsd.iterdir()) if wsd.is_dir() else []:
                if d.name.startswith(_DOT):
                    if not self._busy(f"ws-{wsd.name}"):
                        out.append(OwnedResource("leftover", str(d), None, f"interrupted checkpoint of {wsd.name}"))
                else:
                    out.append(OwnedResource("checkpoint", str(d), wsd.name, f"checkpoint {d.name}"))
        sc_root = pool / "scratch"
        for d in sorted(sc_root.iterdir()) if sc_root.is_dir() else []:
            if not self._busy(f"scratch-{d.name}"):
                out.append(OwnedResource("leftover", str(d), None, "scratch clone of a finished gate"))
        if self.server_kind == "docker" and self.ctx.docker is not None:
            out += self._orphan_containers()
        return out

    def _orphan_containers(self) -> list[OwnedResource]:
        import docker.errors

        try:
            containers = self.ctx.docker().containers.list(  # type: ignore[misc]
                all=True, ignore_removed=True,
                filters={"label": [f"dev.sandbox.project={self.ctx.project_id}", "dev.sandbox.role=database"]})
        except docker.errors.DockerException:
            return []
        out = []
        for c in containers:
            vol = c.labels.get("dev.sandbox.volume", "")
            if vol and Path(vol).is_relative_to(self.pool) and not Path(vol).exists():
                out.append(OwnedResource("container", c.name, c.labels.get("dev.sandbox.workspace") or None,
                                         "database container without its volume"))
        return out

    def remove_owned(self, resource: OwnedResource) -> None:
        if resource.kind == "baseline":
            raise DatabaseError("refusing to remove the baseline",
                                hint="rebuild it with `sandbox db baseline` instead")
        if resource.kind == "container":
            import docker.errors

            try:
                self.ctx.docker().containers.get(resource.id).remove(force=True)  # type: ignore[misc]
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:
                raise DatabaseError(f"cannot remove container {resource.id}: {exc}") from exc
            return
        path = Path(resource.id)
        if not path.is_relative_to(self.pool) or path == self.baseline_dir or path == self.pool:
            raise DatabaseError(f"refusing to remove {path}: not a sandbox clone")
        if resource.kind == "volume" and resource.workspace:
            self.drop(resource.workspace)
            return
        self._stop_any(path)
        self.storage.delete(path)
        self.storage.reclaim()

    def doctor(self) -> list[Check]:
        checks = self.storage.doctor()
        quota = str(getattr(self.ctx.config, "workspace_quota", "off"))
        if quota.strip().lower() == "off":
            checks.append(Check("workspace quota", True, "off: one workspace can fill the whole pool",
                                "set [database] workspace_quota", required=False))
        elif self.storage.can_bound:
            checks.append(Check("workspace quota", True, f"each workspace's data directory is capped at {quota} "
                                "(btrfs qgroups): filling it fails in that workspace alone"))
        else:
            checks.append(Check("workspace quota", False, f"{quota} is not enforced on {self.storage.kind} storage "
                                "(btrfs qgroups as root only): one workspace can fill the pool",
                                STORAGE_INIT_HINT if self.storage.kind != "btrfs" else "run sandbox as root",
                                required=False))
        probe = self._cluster(self.pool / "baseline", 0, ".doctor", password="")
        checks += probe.doctor()
        if self.has_baseline():
            meta = _read_json(self.baseline_dir / "baseline.json")
            checks.append(Check("baseline", True, f"built {meta.get('created_at')} ({meta.get('source')})"))
        else:
            checks.append(Check("baseline", False, "no baseline database yet", "run `sandbox db baseline`"))
        return checks


def replace_conn(conn: ConnInfo, **changes: Any) -> ConnInfo:
    from dataclasses import replace

    return replace(conn, **changes)
