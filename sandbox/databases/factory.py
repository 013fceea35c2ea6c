"""Choosing and building the database strategy and server from the config.

``strategy = "auto"`` picks ``snapshot`` where copy-on-write storage exists or can be
provisioned (a loop-mounted btrfs pool, as root), and ``template`` otherwise.
``server = "auto"`` picks ``docker`` when the engine answers and the postgres image is
present, else ``local`` (host binaries). The choice is recorded in the registry at
``init`` so that it does not change under existing workspaces.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any, Callable

from ..checks import Check
from ..config import Config, DatabaseConfig
from ..errors import ServiceUnavailable
from ..registry import Registry, RegistryPorts
from ..runtime.base import LABEL_PROJECT, LABEL_ROLE, LABEL_WORKSPACE
from .base import BackendContext, Server, Strategy
from .storage import data_home, pool_path, pool_paths

DB_PORT_OFFSET = 10000   # database ports live above the workspace blocks
SHARED_SETTINGS = {"max_connections": "300", "superuser_reserved_connections": "5", "shared_buffers": "64MB"}


def _docker_factory() -> Any:
    from ..runtime.docker import shared_client
    return shared_client()


def docker_usable(image: str) -> tuple[bool, str]:
    """Whether the engine answers and ``image`` is present."""
    try:
        import docker
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        return False, f"Docker engine not reachable ({type(exc).__name__})"
    try:
        client.images.get(image)
    except Exception:  # noqa: BLE001
        return False, f"image {image} is missing (scripts/build-images)"
    return True, "ok"


def resolve(config: Config, registry: Registry | None = None) -> tuple[str, str]:
    """(strategy, server) for this project, recorded at the first call."""
    db = config.database
    recorded = (registry.get_meta("db.strategy"), registry.get_meta("db.server")) if registry else (None, None)
    server = db.server
    if server == "auto":
        server = recorded[1] if recorded[1] else None  # type: ignore[assignment]
        if server is None:
            ok, _ = docker_usable(db.image)
            from .cluster import find_bin_dir
            if ok and config.workspace.runtime == "docker":
                server = "docker"
            elif find_bin_dir(db.bin_dir) is not None:
                server = "local"
            elif ok:
                server = "docker"
            else:
                raise ServiceUnavailable("no PostgreSQL available: neither a Docker engine with "
                                         f"{db.image} nor host binaries",
                                         hint="run scripts/setup, or set [database] server = \"url\"")
    strategy = db.strategy
    if strategy == "auto":
        strategy = recorded[0] if recorded[0] else None  # type: ignore[assignment]
        if strategy is None:
            strategy = "template"
            if server != "url":
                from .storage import detect
                # copy-on-write storage is there, or root can make a btrfs pool (make_strategy does)
                if os.geteuid() == 0 or detect(pool_path(config, server)).kind != "copy":
                    strategy = "snapshot"
    if registry is not None:
        registry.set_meta("db.strategy", strategy)
        registry.set_meta("db.server", server)
    return strategy, server


def _context(config: Config, registry: Registry, progress: Callable[[str], None], server: str) -> BackendContext:
    dbc: DatabaseConfig = config.database
    if data_home(config, server) != config.state_dir:
        dbc = dataclasses.replace(dbc, pool=str(pool_path(config, server)))
    return BackendContext(project_id=config.project_id, state_dir=config.state_dir, config=dbc,
                          ports=RegistryPorts(registry, config.workspace.port_base + DB_PORT_OFFSET),
                          progress=progress, docker=_docker_factory,
                          labels={LABEL_PROJECT: config.project_id})


def shared_server(config: Config, ctx: BackendContext, server: str) -> Server:
    """The one server of the template and schema strategies."""
    from ..secretstore import SecretStore
    if server == "url":
        from .urlserver import UrlServer
        assert config.database.url
        return UrlServer(config.database.url)
    from .cluster import DockerCluster, LocalCluster
    home = data_home(config, server) / "db" / "shared"
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    password, _ = SecretStore(config.state_dir).get_or_create("_shared_admin")
    port = ctx.ports.allocate("_shared", "db", 1)[0]
    # Every workspace's clients share this server (SANDBOX_SETTINGS' 20 connections are one workspace's
    # share): 40 workspaces made at once ran out of connections in the load test.
    settings = SHARED_SETTINGS
    cluster: Any
    if server == "docker":
        cluster = DockerCluster(home / "data", port, image=config.database.image,
                                container_name=f"sandbox-{config.project_id}-db-shared",
                                labels={LABEL_PROJECT: config.project_id, LABEL_WORKSPACE: "",
                                        LABEL_ROLE: "database"},
                                docker_factory=_docker_factory, password=password,
                                superuser=config.database.user, settings=settings,
                                # Its own network: never on Docker's default bridge with strangers.
                                # The name sorts before every workspace network ("--"): Docker
                                # routes a container through the network whose name sorts first,
                                # and attaching a workspace network that sorted earlier would move
                                # the server's default route and cut the host's open connections.
                                network=f"sandbox-{config.project_id}--db-shared")
    else:
        cluster = LocalCluster(home / "data", port, password=password, superuser=config.database.user,
                               bin_dir=config.database.bin_dir, settings=settings)
    if not (home / "data" / "PG_VERSION").exists():
        ctx.progress("creating the shared PostgreSQL cluster")
        cluster.initdb()
    return _Running(cluster)


class _Running:
    """Starts the wrapped cluster on first use."""

    def __init__(self, cluster: Any) -> None:
        self._cluster = cluster
        self._started = False
        self._lock = threading.Lock()

    def __getattr__(self, item: str) -> Any:
        return getattr(self._cluster, item)

    def ensure_running(self) -> None:
        with self._lock:
            self._cluster.ensure_running()
            self._started = True

    def admin(self) -> Any:
        if not self._started:
            self.ensure_running()
        return self._cluster.admin()

    def attach(self, network: str | None) -> Any:
        if not self._started:
            self.ensure_running()
        return self._cluster.attach(network)


def make_strategy(config: Config, registry: Registry, *, progress: Callable[[str], None] | None = None) -> Strategy:
    progress = progress or (lambda msg: None)
    strategy, server = resolve(config, registry)
    ctx = _context(config, registry, progress, server)
    if strategy == "snapshot":
        from .snapshot import SnapshotStrategy
        from .storage import detect, provision_pool
        pool = pool_path(config, server)
        st = detect(pool)
        if st.kind == "copy" and os.geteuid() == 0:
            progress(f"making a copy-on-write pool at {pool} ({ctx.config.pool_size}, loop-mounted btrfs)")
            st = provision_pool(pool, ctx.config.pool_size)
        elif st.kind == "copy":
            progress(f"{pool} is not on copy-on-write storage: clones are full copies "
                     "(run `sandbox doctor`)")
        return SnapshotStrategy(ctx, st, server)
    srv = shared_server(config, ctx, server)
    if strategy == "schema":
        from .schema import SchemaStrategy
        return SchemaStrategy(ctx, srv)
    from .template import TemplateStrategy
    return TemplateStrategy(ctx, srv)


def doctor_checks(config: Config) -> list[Check]:
    from .cluster import find_bin_dir
    checks: list[Check] = []
    ok, why = docker_usable(config.database.image)
    checks.append(Check("postgres image", ok, f"{config.database.image}: {why}",
                        None if ok else "scripts/install-docker && scripts/build-images",
                        required=config.database.server == "docker"))
    bins = find_bin_dir(config.database.bin_dir)
    checks.append(Check("postgres binaries", bins is not None, str(bins) if bins else "not found",
                        None if bins else "apt-get install postgresql-15 (for server = \"local\")",
                        required=config.database.server == "local"))
    from .storage import detect
    server = config.database.server if config.database.server != "auto" else ("docker" if ok else "local")
    pool = pool_path(config, server)
    try:
        st = detect(pool) if pool.exists() else detect(config.state_dir) if config.state_dir.exists() else None
    except ServiceUnavailable:
        st = None
    if st is None:
        cow, detail = os.geteuid() == 0, "not initialised yet; as root, sandbox makes a loop-mounted btrfs pool"
    else:
        cow = st.kind != "copy"
        detail = f"{st.kind} on {st.fs}" + ("" if cow else f": {st.reason}")
    checks.append(Check("copy-on-write storage", cow, detail,
                        None if cow else "run sandbox as root once (it makes a btrfs pool), or put .sandbox "
                        "on btrfs/XFS; otherwise strategy template is used", required=False))
    return checks


def destroy_storage(config: Config, strategy: Any, home: Path) -> None:
    """Stop every cluster sandbox runs for this project and remove its data and pool."""
    from .cluster import LocalCluster
    from .storage import is_mountpoint, unmount_pool
    pools = pool_paths(config) | {home / "pool"}
    for pool in pools:
        if not pool.exists():
            continue
        for data in list(pool.glob("*/data")) + list(pool.glob("*/*/data")) + list(pool.glob("*/*/*/data")):
            if (data / "postmaster.pid").exists():
                LocalCluster(data, 0, password="").stop()
        if is_mountpoint(pool):
            unmount_pool(pool)
        img = pool.parent / "pool.img"
        if img.exists():
            img.unlink()
    shared = home / "db" / "shared" / "data"
    if (shared / "postmaster.pid").exists():
        LocalCluster(shared, 0, password="").stop()
    if home != config.state_dir and home.is_relative_to("/var/lib/sandbox"):
        import shutil
        shutil.rmtree(home, ignore_errors=True)
