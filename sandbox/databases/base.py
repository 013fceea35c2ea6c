"""Protocols and values shared by the database strategies and servers.

A *server* is a running PostgreSQL that sandbox can administer (a cluster it runs
on the host or in Docker, or an existing server given by URL). A *strategy* turns
the baseline into one database per workspace: ``snapshot`` (one cluster per
workspace on a copy-on-write clone of the baseline's data directory),
``template`` (``CREATE DATABASE … TEMPLATE``) or ``schema`` (one schema and role
per workspace in a shared database).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import quote

from ..checks import Check, OwnedResource
from ..config import DatabaseConfig

# kinds (in an object's metadata comment) of copies that only exist while an operation runs: a
# gate's scratch clone, a baseline being built; an object without a label was never finished
TRANSIENT_KINDS = frozenset({"scratch", "baseline-building", "unlabelled"})


def is_transient(meta: Mapping[str, Any]) -> bool:
    """Whether an object with this metadata is a crash's debris once no operation runs."""
    return str(meta.get("kind", "unlabelled")) in TRANSIENT_KINDS

Progress = Callable[[str], None]          # one human-readable step, e.g. "cloning baseline"


@dataclass(frozen=True)
class ConnInfo:
    """How to connect to one database, from the host and from inside the workspace."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    options: str | None = None            # e.g. "-csearch_path=sbx_..." for the schema strategy
    container_host: str | None = None     # host name/IP as seen from the workspace's container
    container_port: int | None = None
    container: str | None = None          # the Docker container serving it (None: not in Docker)

    def url(self, *, container: bool = False, secret: bool = True) -> str:
        """``postgresql://…``; ``secret=False`` leaves the password out (for listings and logs)."""
        host, port = self.host, self.port
        if container and self.container_host:
            host, port = self.container_host, self.container_port or self.port
        password = f":{quote(self.password, safe='')}" if secret else ""
        u = (f"postgresql://{quote(self.user, safe='')}{password}"
             f"@{host}:{port}/{quote(self.dbname, safe='')}")
        if self.options:
            u += "?options=" + quote(self.options, safe="")
        return u

    def env(self, *, container: bool = False) -> dict[str, str]:
        """DATABASE_URL and the PG* variables."""
        host, port = self.host, self.port
        if container and self.container_host:
            host, port = self.container_host, self.container_port or self.port
        env = {"DATABASE_URL": self.url(container=container), "PGHOST": host, "PGPORT": str(port),
               "PGUSER": self.user, "PGPASSWORD": self.password, "PGDATABASE": self.dbname}
        if self.options:
            env["PGOPTIONS"] = self.options
        return env

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (host view)."""
        kw: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user,
                              "password": self.password, "dbname": self.dbname}
        if self.options:
            kw["options"] = self.options
        return kw

    def with_db(self, dbname: str) -> "ConnInfo":
        return replace(self, dbname=dbname)

    def __repr__(self) -> str:  # never leak the password into logs or tracebacks
        return f"ConnInfo(host={self.host!r}, port={self.port}, user={self.user!r}, dbname={self.dbname!r})"


@dataclass(frozen=True)
class CheckpointInfo:
    label: str
    created_at: str
    size_bytes: int | None = None


class PortAllocator(Protocol):
    """Registry-backed host ports: never shared, even under concurrent processes."""

    def allocate(self, owner: str, purpose: str, count: int = 1) -> list[int]: ...
    def release(self, owner: str, purpose: str | None = None) -> None: ...


@dataclass
class BackendContext:
    """What every server and strategy gets from the orchestrator."""

    project_id: str                      # Config.project_id: goes into names and labels
    state_dir: Path                      # <repo>/.sandbox (secrets/, db/, pool/ live under it)
    config: DatabaseConfig
    ports: PortAllocator
    progress: Progress = lambda msg: None
    docker: Callable[[], Any] | None = None   # returns a docker.DockerClient (lazily)
    labels: Mapping[str, str] = field(default_factory=dict)


class Server(Protocol):
    """A running PostgreSQL that sandbox administers."""

    def ensure_running(self) -> None:
        """Start it if needed and wait until it accepts connections."""

    def admin(self) -> ConnInfo:
        """Superuser connection info (host view), dbname ``postgres``."""

    def address(self, network: str | None) -> tuple[str, int] | None:
        """(host, port) of the server as seen from ``network`` once attached; changes nothing."""

    def attach(self, network: str | None) -> tuple[str, int] | None:
        """Make the server reachable from a workspace network; return :meth:`address`."""

    def stop(self) -> None: ...

    def owned(self) -> list[OwnedResource]: ...

    def remove_owned(self, resource: OwnedResource) -> None: ...

    def doctor(self) -> list[Check]: ...


class Strategy(Protocol):
    """One database per workspace, cloned from the baseline."""

    name: str                                 # "snapshot" | "template" | "schema"

    def build_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        """Create a new, empty baseline, call ``populate`` (migrations, seeds) on it, then seal it.

        The previous baseline stays in place until the new one is complete: a failure
        leaves the old baseline untouched.
        """

    def import_baseline(self, dump: Path) -> None:
        """Replace the baseline with a pg_dump file (plain SQL or custom format)."""

    def update_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        """Run ``populate`` on the current baseline (after a merge: apply new revisions)."""

    def has_baseline(self) -> bool: ...

    def baseline(self) -> ConnInfo:
        """Read-only view of the baseline (for status and diffs); never written by workspaces."""

    def test_env(self, ws: str, db: ConnInfo, *, container: bool = False) -> dict[str, str]:
        """Variables that give the workspace's tests a role allowed to create databases
        (``SANDBOX_TEST_DATABASE_URL``). Only a strategy with a cluster per workspace can do that
        without weakening isolation; the others return an empty mapping."""

    def planned(self, ws: str, network: str | None = None) -> ConnInfo:
        """The connection info :meth:`create` will return, known before the database exists.

        It may reserve what the database will use (its port, its role's secret; :meth:`drop`
        releases them) but starts and clones nothing, so the workspace's container can be
        created with ``DATABASE_URL`` while the database is still being made.
        """

    def create(self, ws: str, network: str | None = None) -> ConnInfo:
        """Clone the baseline for workspace ``ws`` (idempotent: an existing one is started)."""

    def info(self, ws: str, network: str | None = None) -> ConnInfo:
        """Connection info of an existing workspace database."""

    def exists(self, ws: str) -> bool: ...

    def start(self, ws: str, network: str | None = None) -> None: ...

    def stop(self, ws: str) -> None: ...

    def reset(self, ws: str, network: str | None = None) -> ConnInfo:
        """Replace the workspace's database with a fresh clone of the current baseline."""

    def drop(self, ws: str) -> None:
        """Drop the workspace's database, role, checkpoints and storage. Missing is fine."""

    def checkpoint(self, ws: str, label: str) -> CheckpointInfo: ...

    def restore(self, ws: str, label: str, network: str | None = None) -> None: ...

    def checkpoints(self, ws: str) -> list[CheckpointInfo]: ...

    def drop_checkpoint(self, ws: str, label: str) -> None:
        """Delete checkpoint ``label`` of ``ws`` (:class:`UsageError` if there is none) and free its space."""

    def scratch(self, tag: str) -> AbstractContextManager[ConnInfo]:
        """A throwaway fresh clone of the baseline (for the merge gate), removed on exit."""

    def owned(self) -> list[OwnedResource]:
        """Everything this strategy created (databases, roles, schemas, clusters, snapshots)."""

    def remove_owned(self, resource: OwnedResource) -> None: ...

    def doctor(self) -> list[Check]: ...
