"""The snapshot strategy's baseline: building, updating, importing and viewing it, and
the throwaway scratch clones of the merge gate (see :mod:`sandbox.databases.snapshot`)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UsageError
from ..names import pg_name
from .base import ConnInfo
from .snapshot_core import (
    BASELINE_OWNER,
    Cluster,
    SnapshotCore,
    _flock,
    _now,
    _read_json,
    _write_json,
    replace_conn,
)


class SnapshotBaseline(SnapshotCore):
    """The baseline cluster and clones of it."""

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

