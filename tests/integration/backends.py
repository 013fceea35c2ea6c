"""Helpers the database-strategy tests share: an in-memory port allocator, a seeding
``populate`` callback, a query helper, and a backend context and superuser connection on the
``local_pg`` server."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any, Callable

import psycopg

from sandbox.config import DatabaseConfig
from sandbox.databases.base import BackendContext, ConnInfo
from tests.conftest import free_port


class FakePorts:
    """An in-memory PortAllocator handing out free ports (idempotent per owner and purpose)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.held: dict[tuple[str, str], list[int]] = {}

    def allocate(self, owner: str, purpose: str, count: int = 1) -> list[int]:
        with self._lock:
            key = (owner, purpose)
            if key not in self.held:
                used = {p for ports in self.held.values() for p in ports}
                ports: list[int] = []
                while len(ports) < count:
                    p = free_port()
                    if p not in used and p not in ports:
                        ports.append(p)
                self.held[key] = ports
            return self.held[key]

    def release(self, owner: str, purpose: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self.held if k[0] == owner and (purpose is None or k[1] == purpose)]:
                del self.held[key]


def seed(sql_text: str) -> Callable[[ConnInfo], None]:
    """A ``populate`` callback for ``build_baseline`` that runs ``sql_text``."""
    def populate(info: ConnInfo) -> None:
        with psycopg.connect(**info.kwargs(), autocommit=True) as conn:
            conn.execute(sql_text)
    return populate


def q(info: ConnInfo, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of ``query`` run as ``info`` (an empty list for statements without rows)."""
    with psycopg.connect(**info.kwargs(), autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def url_context(local_pg: Any, state: Path) -> BackendContext:
    """A context for a shared-server strategy on ``local_pg`` (a fresh project id each time)."""
    return BackendContext(project_id=uuid.uuid4().hex[:8], state_dir=state,
                          config=DatabaseConfig(server="url", url=local_pg.url(), bin_dir=str(local_pg.bin_dir)),
                          ports=FakePorts())


def admin(local_pg: Any, dbname: str = "postgres") -> psycopg.Connection[Any]:
    """A superuser connection to ``local_pg`` (autocommit)."""
    return psycopg.connect(local_pg.url(dbname), autocommit=True)
