"""The snapshot strategy's common ground: paths, locks, secrets, ports and the clusters.

:class:`SnapshotCore` is the base of :class:`~sandbox.databases.snapshot.SnapshotStrategy`
(the layout and the guarantees are described there); the baseline, the workspace
operations and the housekeeping (gc, doctor) build on it in their own modules.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..disk import disk_full_translated
from ..errors import DatabaseError
from ..host import file_lock, lock_busy, now
from ..names import pg_name, validate_label, validate_name
from ..runtime.labels import (
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_VOLUME,
    LABEL_WORKSPACE,
    ROLE_DATABASE,
    project_filter,
)
from ..secretstore import SecretStore, new_password
from .base import BackendContext, CheckpointInfo, ConnInfo
from .cluster import DockerCluster, LocalCluster
from .storage import Storage, _run, parse_size

if TYPE_CHECKING:       # psycopg loads when a database is first talked to, not at import
    import psycopg

Cluster = LocalCluster | DockerCluster

BASELINE_OWNER = ".baseline"       # port owner names that no workspace can have
_DOT = "."


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


_F = TypeVar("_F", bound=Callable[..., Any])


def _space(what: str) -> Callable[[_F], _F]:
    """Run a workspace operation so that a full pool is :class:`~sandbox.errors.DiskFull` (exit 3)."""
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(self: "SnapshotCore", ws: str, *args: Any, **kwargs: Any) -> Any:
            with disk_full_translated(f"{what} of {ws!r}", self.pool):
                return fn(self, ws, *args, **kwargs)
        return cast(_F, inner)
    return wrap


class MeasuredOnRead(CheckpointInfo):
    """A checkpoint whose ``size_bytes`` (a ``btrfs filesystem du``: tens of ms on a 1 GB volume)
    is measured when first read: listing checkpoints to pick a label or prune the oldest does
    not pay for it, ``db checkpoints`` and ``to_json`` still show it."""

    def __init__(self, label: str, created_at: str, measure: Callable[[], int | None]) -> None:
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "created_at", created_at)
        object.__setattr__(self, "_measure", measure)

    @property  # type: ignore[override]
    def size_bytes(self) -> int | None:
        if "_size" not in self.__dict__:
            object.__setattr__(self, "_size", self.__dict__["_measure"]())
        return cast("int | None", self.__dict__["_size"])


class SnapshotCore:
    """Paths, locks, secrets, ports and cluster objects of one snapshot pool."""

    _reclaim_deferred = False          # see reclaiming_once

    name = "snapshot"

    def __init__(self, ctx: BackendContext, storage: Storage, server_kind: str = "local", *,
                 dbname: str = "app") -> None:
        if server_kind not in ("local", "docker"):
            raise ValueError(f"server_kind must be 'local' or 'docker', not {server_kind!r}")
        if server_kind == "docker" and ctx.docker is None:
            raise ValueError("server_kind 'docker' needs ctx.docker")
        self.ctx = ctx
        self.storage = storage
        self.server_kind = server_kind
        self.dbname = dbname
        self.pool = self.storage.root
        self.meta_dir = ctx.state_dir / "db" / "snapshot"
        self.secrets = SecretStore(ctx.state_dir)
        self.owner_role = pg_name(ctx.project_id, "baseline", "owner")

    # -- paths, secrets, ports -------------------------------------------------------------

    @property
    def baseline_dir(self) -> Path:
        return self.pool / "baseline"

    def _ws_home(self, ws: str) -> Path:
        """A workspace's folder: its volume ``db``, and what a swap of it needs next to it."""
        return self.pool / "ws" / ws

    def _ws_dir(self, ws: str) -> Path:
        """A workspace's volume: ``ws/<name>/db`` (its folder is what a container mounts, so the
        volume can be swapped under it), or ``ws/<name>`` itself for a workspace made before."""
        home = self._ws_home(ws)
        if (home / "data").is_dir():
            return home
        return home / "db"

    def _ckpt_dir(self, ws: str) -> Path:
        return self.pool / "ckpt" / ws

    def _lock(self, key: str, *, shared: bool = False) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.meta_dir / "locks" / f"{key}.lock", shared=shared)

    def _busy(self, key: str) -> bool:
        return lock_busy(self.meta_dir / "locks" / f"{key}.lock")

    @staticmethod
    def _secret_name(key: str) -> str:
        """The secret store's name of a role's password (``snapshot-ws-<name>``, ...): the name an
        older sandbox gave its plain-text file, which the store still reads."""
        return f"snapshot-{key}"

    def _secret(self, key: str, *, create: bool = True) -> str:
        name = self._secret_name(key)
        if not create:
            value = self.secrets.read(name)
            if not value:
                raise DatabaseError(f"missing secret {name} in {self.secrets.dir}")
            return value
        return self.secrets.get_or_create(name)[0]

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
        _write_json(meta_path, {**meta, "port": port, "created_at": now()})
        return port

    def _stored_port(self, ws: str) -> int | None:
        port = _read_json(self.meta_dir / f"{ws}.json").get("port")
        return port if isinstance(port, int) else None

    # -- clusters --------------------------------------------------------------------------

    def _container_name(self, key: str) -> str:
        sep = "_" if key.startswith(_DOT) else "-"          # special clusters never clash
        return f"sbx-{self.ctx.project_id}-db{sep}{key.lstrip(_DOT)}"

    def _cluster(self, volume: Path, port: int, key: str, workspace: str | None = None,
                 password: str | None = None, network: str | None = None, mount: Path | None = None) -> Cluster:
        password = self._admin_password() if password is None else password
        if self.server_kind == "local":
            return LocalCluster(volume / "data", port, password=password, superuser=self.ctx.config.user,
                                bin_dir=self.ctx.config.bin_dir)
        assert self.ctx.docker is not None
        labels = {**self.ctx.labels, LABEL_PROJECT: self.ctx.project_id,
                  LABEL_WORKSPACE: workspace or "", LABEL_ROLE: ROLE_DATABASE, LABEL_VOLUME: str(volume)}
        return DockerCluster(volume / "data", port, image=self.ctx.config.image,
                             container_name=self._container_name(key), labels=labels,
                             docker_factory=self.ctx.docker, password=password,
                             superuser=self.ctx.config.user, network=network, mount=mount)

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
        volume = self._ws_dir(ws)
        return self._cluster(volume, port, ws, ws, network=network, mount=volume.parent
                             if volume != self._ws_home(ws) else None)

    def _stop_any(self, volume: Path) -> None:
        """Stop whatever cluster runs on ``volume`` (crash leftovers included)."""
        LocalCluster(volume / "data", 0, password="").stop(mode="immediate")
        if self.server_kind == "docker" and self.ctx.docker is not None:
            from ..runtime.errors import translated

            with translated(f"cannot remove the container of {volume}", DatabaseError):
                client = self.ctx.docker()
                for c in client.containers.list(all=True, ignore_removed=True, filters=project_filter(
                        self.ctx.project_id, **{LABEL_VOLUME: str(volume)})):
                    c.remove(force=True)

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

        password = new_password()
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

    def _configure(self, cluster: Cluster, volume: Path, role: str, password: str,
                   test_role: tuple[str, str] | None = None, conn: Any = None) -> None:
        """Give a fresh clone its role: the baseline owner, renamed, with its own password; and,
        for a workspace, its test role ``(name, password)``: CREATEDB in this cluster alone (the
        workspace's own), so its test suite can make a database per test (see the README).
        ``conn``: an admin session already open on the cluster (else one is opened)."""
        want = {"role": role, "test_role": test_role[0] if test_role else None}
        seen = _read_json(volume / "workspace.json")
        if all(seen.get(k) == v for k, v in want.items()):
            return
        if conn is not None:
            self._set_roles(conn, role, password, test_role)
        else:
            with self._connect(cluster.admin()) as c:
                self._set_roles(c, role, password, test_role)
        _write_json(volume / "workspace.json", {**want, "configured_at": now()})

    def _set_roles(self, c: Any, role: str, password: str, test_role: tuple[str, str] | None) -> None:
        from psycopg import sql

        have = {r for (r,) in c.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)",
                                        [[role, self.owner_role] + ([test_role[0]] if test_role else [])])}
        if role not in have:
            if self.owner_role not in have:
                raise DatabaseError("the baseline has no owner role; rebuild it with `sandbox db baseline`")
            c.execute(sql.SQL("ALTER ROLE {} RENAME TO {}").format(
                sql.Identifier(self.owner_role), sql.Identifier(role)))
        # A literal, composed client-side: utility statements take no parameters.
        c.execute(sql.SQL("ALTER ROLE {} WITH LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION "
                          "CONNECTION LIMIT 15 PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        if test_role:
            verb = "ALTER" if test_role[0] in have else "CREATE"
            c.execute(sql.SQL(verb + " ROLE {} WITH LOGIN CREATEDB NOSUPERUSER NOCREATEROLE NOREPLICATION "
                              "CONNECTION LIMIT 30 PASSWORD {}").format(
                sql.Identifier(test_role[0]), sql.Literal(test_role[1])))

    def _test_role(self, ws: str) -> str:
        return pg_name(self.ctx.project_id, ws, "test")

    def _configure_ws(self, cluster: Cluster, volume: Path, ws: str, conn: Any = None) -> None:
        self._configure(cluster, volume, self._role(ws), self._secret(f"ws-{ws}"),
                        (self._test_role(ws), self._secret(f"test-{ws}")), conn)

    def _conninfo(self, ws: str, cluster: Cluster, network: str | None, *, attach: bool = True,
                  password: str | None = None) -> ConnInfo:
        seen = (cluster.attach(network) if attach else cluster.address(network)) if network else None
        if password is None:
            password = self._secret(f"ws-{ws}", create=False)
        return ConnInfo(host="127.0.0.1", port=cluster.port, user=self._role(ws),
                        password=password, dbname=self.dbname, container=getattr(cluster, "container_name", None),
                        container_host=seen[0] if seen else None,
                        container_port=seen[1] if seen else None)

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

    def _delete_soon(self, volume: Path) -> None:
        """Delete ``volume`` without waiting for btrfs to commit it (``storage.delete`` commits,
        which flushes the whole pool: hundreds of ms under write load). A crash before btrfs's
        next commit (within 30 s) brings the volume back under its dot-name: gc removes it."""
        if self.storage.kind == "btrfs" and self.storage.is_volume(volume) and \
                not any(p.is_dir() and self.storage.is_volume(p) for p in volume.iterdir()):
            _run(["btrfs", "subvolume", "delete", str(volume)], f"deleting subvolume {volume}")
        else:
            self.storage.delete(volume)

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

    def drop(self, ws: str) -> None:
        validate_name(ws)
        with self._lock(f"ws-{ws}"):
            home = self._ws_home(ws)
            for volume in (self._ws_dir(ws), home / ".new-db", self.pool / "ws" / f".new-{ws}"):
                self._stop_any(volume)
                self.storage.delete(volume)
            self.storage.delete(home)
            self.storage.delete(self._ckpt_dir(ws))
            self.secrets.delete(self._secret_name(f"ws-{ws}"))
            self.secrets.delete(self._secret_name(f"test-{ws}"))
            self._forget(ws)
        if not self._reclaim_deferred:
            self.storage.reclaim()

    @contextlib.contextmanager
    def reclaiming_once(self) -> Iterator[None]:
        """Drops inside do not each wait for btrfs to free their space: one wait at the end
        (``deinit``, which drops every workspace's database at once)."""
        self._reclaim_deferred = True
        try:
            yield
        finally:
            self._reclaim_deferred = False
            self.storage.reclaim()

    # -- checkpoints -----------------------------------------------------------------------

    @staticmethod
    def _check_label(label: str) -> str:
        return validate_label(label)

    def _sql(self, cluster: Cluster, statement: str, what: str) -> None:
        import psycopg

        with self._connect(cluster.admin()) as c:
            try:
                c.execute(statement)  # type: ignore[arg-type] # a constant of this module
            except psycopg.Error as exc:
                raise DatabaseError(f"{what}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") \
                    from exc


def replace_conn(conn: ConnInfo, **changes: Any) -> ConnInfo:
    from dataclasses import replace

    return replace(conn, **changes)
