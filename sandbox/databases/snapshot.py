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
import functools
import os
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Any

from ..disk import usage as disk_usage
from ..errors import DatabaseError, DiskFull, UsageError
from ..intents import kill_point
from ..names import validate_name
from .base import CheckpointInfo, ConnInfo
from .dockercluster import DockerCluster
from .snapshot_baseline import SnapshotBaseline
from .snapshot_core import (
    _DOT,
    BASELINE_OWNER,
    Cluster,
    MeasuredOnRead,
    SnapshotCore,
    _now,
    _read_json,
    _space,
    _write_json,
    replace_conn,
)
from .snapshot_gc import SnapshotHousekeeping
from .storage import POOL_WARN_PERCENT

__all__ = ["SnapshotStrategy", "SnapshotCore", "BASELINE_OWNER", "Cluster", "replace_conn"]


class SnapshotStrategy(SnapshotBaseline, SnapshotHousekeeping):
    """One cluster per workspace on a copy-on-write clone of a stopped baseline cluster.

    ``storage`` defaults to :func:`~sandbox.databases.storage.detect` on
    :meth:`default_pool` (make a btrfs pool first with ``provision_pool`` where there
    is no copy-on-write). ``server_kind`` is ``"local"`` (host binaries;
    ``ctx.config.bin_dir``) or ``"docker"`` (image ``ctx.config.image``). ``dbname``
    is the app database.
    """

    name = "snapshot"
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
            self._secret(f"ws-{ws}")         # made now, so the undo below removes it on failure
            self.ctx.progress(f"starting the database of {ws} on port {cluster.port}")
            cluster.ensure_running()
            undo.callback(cluster.stop, "immediate")
            self._configure_ws(cluster, volume, ws)
            info = self._conninfo(ws, cluster, network)
            undo.pop_all()
            return info

    def info(self, ws: str, network: str | None = None) -> ConnInfo:
        self._require_ws(ws)
        return self._conninfo(ws, self._ws_cluster(ws), network)

    def test_env(self, ws: str, db: ConnInfo, *, container: bool = False) -> dict[str, str]:
        """``SANDBOX_TEST_DATABASE_URL``: the workspace's test role (CREATEDB in the workspace's own
        cluster, nowhere else) on its ``postgres`` database, for the pytest plugin; ``db`` is the
        workspace's :class:`ConnInfo`. Empty until the workspace's cluster has the role."""
        try:
            password = self._secret(f"test-{ws}", create=False)
        except DatabaseError:
            return {}
        test = replace_conn(db, user=self._test_role(ws), password=password, dbname="postgres", options=None)
        return {"SANDBOX_TEST_DATABASE_URL": test.url(container=container)}

    @_space("starting the database")
    def start(self, ws: str, network: str | None = None) -> None:
        self._require_ws(ws)
        with self._lock(f"ws-{ws}"):
            self._bound(ws)             # the quota as configured now
            cluster = self._ws_cluster(ws, network)
            cluster.ensure_running()
            self._configure_ws(cluster, self._ws_dir(ws), ws)
            if network:
                cluster.attach(network)

    def stop(self, ws: str) -> None:
        validate_name(ws)
        if not self.exists(ws):
            return
        with self._lock(f"ws-{ws}"):
            self._ws_cluster(ws).stop(mode="fast")

    def _replace_volume(self, ws: str, src: Path | None, network: str | None) -> ConnInfo:
        """Swap a clone of ``src`` (None: the baseline) in as ``ws``'s volume and start it.

        The clone is made (and capped) while the old database still runs: it depends only on
        the stopped baseline or a checkpoint. PostgreSQL is down only for the swap itself: a
        supervised container stays up (same port, networks, address) and restarts PostgreSQL
        on the new volume; otherwise the cluster is stopped and started around the swap. The
        old volume is deleted while the new PostgreSQL starts."""
        volume = self._ws_dir(ws)
        cluster = self._ws_cluster(ws, network)
        tmp = volume.parent / f".new-{volume.name}"
        if tmp.exists():                            # left by a crash
            self._stop_any(tmp)
            self.storage.delete(tmp)
        if src is None:
            self._require_baseline()
            with self._lock("baseline", shared=True):
                self.storage.clone(self.baseline_dir, tmp)
            self._clean_clone(tmp)
        else:
            self.storage.clone(src, tmp)
            (tmp / "data" / "postmaster.pid").unlink(missing_ok=True)
            (tmp / "checkpoint.json").unlink(missing_ok=True)
        if self.storage.can_bound:              # a new volume: a new qgroup, without the limit
            self.storage.limit(tmp, self._quota())

        old = threading.Thread(target=self._discard_quietly, args=(tmp,), name="sandbox-drop-old")

        def swap() -> None:
            kill_point("snapshot:stopped")
            self.storage.exchange(tmp, volume)      # ``tmp`` now holds the old data
            kill_point("snapshot:swapped")          # a fresh clone in place, its role not yet configured
            old.start()

        configured: list[bool] = []

        def configure(conn: Any) -> None:           # on the connection that saw it ready
            self._configure_ws(cluster, volume, ws, conn)
            configured.append(True)

        try:
            if not (isinstance(cluster, DockerCluster) and cluster.swap_data(swap, on_ready=configure)):
                cluster.stop(mode="immediate")      # its data is being thrown away
                swap()
                cluster.ensure_running()
            if not configured:
                self._configure_ws(cluster, volume, ws)
        finally:
            if old.is_alive():
                old.join()
        return self._conninfo(ws, cluster, network)

    def _discard_quietly(self, volume: Path) -> None:
        """Delete a replaced volume without waiting: renamed to a name of its own first (so the
        next reset can reuse ``.new-db`` at once), then deleted by a detached ``btrfs subvolume
        delete`` that finishes even when this process has exited. A crash leaves a ``.old-*``
        leftover that gc removes."""
        with contextlib.suppress(Exception):
            doomed = volume.with_name(f".old-{secrets.token_hex(4)}")
            os.rename(volume, doomed)
            if self.storage.kind == "btrfs" and self.storage.is_volume(doomed) and \
                    not any(p.is_dir() and self.storage.is_volume(p) for p in doomed.iterdir()):
                subprocess.Popen(["btrfs", "subvolume", "delete", str(doomed)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            else:
                self.storage.delete(doomed)

    @_space("resetting the database")
    def reset(self, ws: str, network: str | None = None) -> ConnInfo:
        validate_name(ws)
        if not self.exists(ws):
            return self.create(ws, network)
        with self._lock(f"ws-{ws}"):
            self.ctx.progress(f"resetting the database of {ws} to the current baseline")
            return self._replace_volume(ws, None, network)

    # -- checkpoints -----------------------------------------------------------------------

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
            # An atomic snapshot is the same whether the cluster runs or not: no need to ask
            # (for a container, that is a Docker API call on the path of every reset).
            running = not self.storage.atomic and cluster.is_running()
            created = _now()
            try:
                if self.storage.atomic:
                    # The snapshot is atomic over the whole data directory, WAL included (and
                    # full_page_writes is on): of a running cluster, crash-consistent, recovered
                    # like after a power cut when it is started. No CHECKPOINT first: that would cost a connection and
                    # a flush on the path of every reset, to shorten a recovery only a restore
                    # of this checkpoint would run.
                    self._snapshot_capped(ws, volume, tmp)
                else:
                    if running:
                        cluster.stop(mode="fast")
                    try:
                        self._snapshot_capped(ws, volume, tmp)
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
            return MeasuredOnRead(label, created, functools.partial(self.storage.usage, dst))

    def _snapshot_capped(self, ws: str, volume: Path, dst: Path) -> None:
        """Clone ``volume``; a volume over its quota (the workspace filled it, or the quota was
        lowered below its size) cannot be snapshotted (EDQUOT): its cap is lifted for the
        snapshot and put back, so the checkpoint before a reset, the remedy, still works."""
        try:
            self.storage.clone(volume, dst)
        except DiskFull:
            if not self.storage.can_bound or self._quota() is None:
                raise
            self.storage.delete(dst)
            self.storage.limit(volume, None)
            try:
                self.storage.clone(volume, dst)
            finally:
                self.storage.limit(volume, self._quota())

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
            # btrfs frees a deleted snapshot's blocks in the background; waiting for that takes
            # as long as the data the workspace changed (a second for a reset 1 GB database).
            # Wait only when the space is needed now: a pool past its warning level.
            used = disk_usage(self.pool)
            if used is None or not used[1] or 100.0 * used[0] / used[1] >= POOL_WARN_PERCENT:
                self.storage.delete(src)
                self.storage.reclaim()
            else:
                self._delete_soon(src)

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
            out.append(MeasuredOnRead(d.name, str(meta.get("created_at", "")), functools.partial(self.storage.usage, d)))
        return sorted(out, key=lambda c: c.created_at)

