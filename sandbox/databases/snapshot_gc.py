"""The snapshot strategy's housekeeping: what it owns (for gc), removing it, and doctor."""

from __future__ import annotations

import time
from pathlib import Path

from ..checks import Check, OwnedResource
from ..errors import DatabaseError
from .cluster import LocalCluster
from .snapshot_core import _DOT, SnapshotCore, _read_json
from .storage import STORAGE_INIT_HINT


class SnapshotHousekeeping(SnapshotCore):
    """gc's view of the pool, and the doctor's checks."""

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
                out += self._ws_owned(d.name)
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

    def _ws_owned(self, ws: str) -> list[OwnedResource]:
        """A workspace's volume, and what an interrupted reset or restore left in its folder."""
        out = []
        volume, home = self._ws_dir(ws), self._ws_home(ws)
        busy = self._busy(f"ws-{ws}")
        if volume != home:
            for d in sorted(home.iterdir()):
                if d.name.startswith(_DOT) and d.is_dir() and not busy and not self._being_deleted(d):
                    out.append(OwnedResource("leftover", str(d), None, f"interrupted reset of {ws}"))
        if volume.exists():
            port = self._stored_port(ws)
            running = LocalCluster(volume / "data", 0, password="").is_running() \
                if self.server_kind == "local" else None
            state = "" if running is None else (", running" if running else ", stopped")
            out.append(OwnedResource("volume", str(volume), ws, f"workspace database, port {port}{state}"))
            out += self._stale_test_databases(ws)
        elif not busy:
            out.append(OwnedResource("leftover", str(home), None, f"folder of {ws} without a database"))
        return out

    @staticmethod
    def _being_deleted(d: Path) -> bool:
        """A replaced volume a reset handed to a detached delete moments ago (renamed ``.old-*``:
        the rename set its ctime); an older one is what a crash left."""
        try:
            return d.name.startswith(".old-") and time.time() - d.stat().st_ctime < 60
        except OSError:
            return True          # gone meanwhile

    def _stale_test_databases(self, ws: str) -> list[OwnedResource]:
        """Databases a killed pytest run (the plugin) left in ``ws``'s running cluster."""
        cluster = self._ws_cluster(ws)
        if not cluster.is_running():
            return []
        from .testdbs import stale  # psycopg: only when gc looks into a running cluster
        try:
            with self._connect(cluster.admin()) as c:
                names = stale(c)
        except DatabaseError:
            return []
        return [OwnedResource("test-database", f"{ws}/{n}", None, "stale test database of a pytest run that "
                              "is over") for n in names]

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
        if resource.kind == "test-database":
            from .testdbs import drop
            ws, _, name = resource.id.partition("/")
            with self._connect(self._ws_cluster(ws).admin()) as c:
                drop(c, name)
            return
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

