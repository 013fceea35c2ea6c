"""Small subnets for sandbox's Docker networks, from a range sandbox manages.

Docker gives each new bridge network a /16 or /20 from its default address pools, so a
host runs out after 20-30 workspaces ("could not find an available, non-overlapping IPv4
address pool"). Each workspace network needs three addresses or so (the workspace, its
database, a shared server), so sandbox gives it a /28 (13 usable addresses) from
``[workspace] subnet_pool`` (``SANDBOX_SUBNET_POOL``; default ``10.213.0.0/16``: 4096
networks).

Allocations are host-wide, like port reservations: a table in the host state folder
(``subnets.db``), written under ``BEGIN IMMEDIATE`` and held while the engine creates the
network, so no two processes (of any project) are ever given the same subnet. A subnet is
released when its network is removed; one whose network no longer exists on the engine
is taken back at the next allocation. Subnets the engine already uses (sandbox's or anyone
else's) are skipped, and a create the engine still refuses as overlapping moves on to the
next subnet.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import os
import sqlite3
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import ConfigError, WorkspaceError
from ..host import host_state_dir
from ..registry.database import immediate, open_sqlite

PREFIX = 28
DEFAULT_POOL = "10.213.0.0/16"

Network = ipaddress.IPv4Network


class SubnetPool:
    """Host-wide allocation of /28 subnets from ``pool`` for sandbox's Docker networks."""

    def __init__(self, pool: str | None = None, *, prefix: int = PREFIX, directory: Path | None = None) -> None:
        value = pool or os.environ.get("SANDBOX_SUBNET_POOL") or DEFAULT_POOL
        try:
            self.pool = ipaddress.IPv4Network(value)
        except ValueError as exc:
            raise ConfigError(f"subnet pool {value!r} (workspace.subnet_pool or SANDBOX_SUBNET_POOL) is not "
                              "an IPv4 network such as 10.213.0.0/16", key="workspace.subnet_pool") from exc
        self.prefix = prefix
        self.dir = directory or host_state_dir()
        self.path = self.dir / "subnets.db"

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open_sqlite(self.path) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS subnets (subnet TEXT PRIMARY KEY, network TEXT NOT NULL UNIQUE, "
                         "at TEXT NOT NULL)")
            with immediate(conn):
                yield conn

    @contextlib.contextmanager
    def allocation(self, network: str,
                   engine: Callable[[], tuple[Iterable[Network], set[str]]]) -> Iterator[Callable[[], Network]]:
        """Hold the allocation lock while the caller creates ``network``.

        Yields ``next_subnet()``: each call hands out a free subnet (the first is the one this
        network had, if it is still free); the last one handed out is recorded for ``network``
        when the block ends without an error. ``engine()`` returns the engine's subnets and the
        names of its networks.
        """
        with self._db() as conn:
            subnets, names = engine()
            engine_subnets = list(subnets)
            rows = dict(conn.execute("SELECT subnet, network FROM subnets").fetchall())
            for subnet, owner in list(rows.items()):
                if owner != network and owner not in names:      # its network is gone: take it back
                    conn.execute("DELETE FROM subnets WHERE subnet = ?", (subnet,))
                    del rows[subnet]
            mine = [ipaddress.IPv4Network(s) for s, owner in rows.items() if owner == network]
            taken = {ipaddress.IPv4Network(s) for s, owner in rows.items() if owner != network}
            refused: set[Network] = set()
            handed: list[Network] = []

            def free(candidate: Network) -> bool:
                return (candidate not in taken and candidate not in refused
                        and not any(candidate.overlaps(other) for other in engine_subnets))

            def candidates() -> Iterator[Network]:
                yield from (m for m in mine if free(m))
                yield from (c for c in self.pool.subnets(new_prefix=self.prefix) if free(c))

            def next_subnet() -> Network:
                if handed:
                    refused.add(handed[-1])         # the engine refused the previous one
                for candidate in candidates():
                    handed.append(candidate)
                    return candidate
                raise WorkspaceError(f"no free /{self.prefix} subnet left in {self.pool} for network {network}",
                                     hint="remove workspaces, or give [workspace] subnet_pool a wider range")

            yield next_subnet
            if handed:
                conn.execute("DELETE FROM subnets WHERE network = ?", (network,))
                conn.execute("INSERT OR REPLACE INTO subnets (subnet, network, at) VALUES (?, ?, ?)",
                             (str(handed[-1]), network, _dt.datetime.now(_dt.timezone.utc).isoformat()))

    def release(self, network: str) -> None:
        with self._db() as conn:
            conn.execute("DELETE FROM subnets WHERE network = ?", (network,))

    def assigned(self) -> dict[str, str]:
        """network → subnet, as recorded."""
        with self._db() as conn:
            return {n: s for s, n in conn.execute("SELECT subnet, network FROM subnets")}
