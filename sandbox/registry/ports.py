"""Port blocks: each project's ``ports`` table, mirrored into the host-wide reservations."""

from __future__ import annotations

from pathlib import Path

from ..errors import WorkspaceError
from .database import RegistryFile
from .hostports import HostPorts, port_free


class PortStore:
    def __init__(self, db: RegistryFile, host: HostPorts) -> None:
        self.db = db
        self.host = host

    def allocate(self, owner: str, purpose: str, count: int = 1, *, base: int = 20000,
                 limit: int = 65535) -> list[int]:
        """Allocate ``count`` contiguous host ports for ``owner`` (idempotent per owner+purpose).

        Blocks are aligned to ``count`` from ``base``; ports already bound by some
        other process on 127.0.0.1 are skipped.
        """
        me = str(self.db.path.resolve())
        with self.db.transaction() as conn, self.host.transaction() as host:
            mine = [r[0] for r in conn.execute(
                "SELECT port FROM ports WHERE owner = ? AND purpose = ? ORDER BY port", (owner, purpose))]
            if len(mine) == count:
                if host is not None:
                    host.executemany("INSERT OR IGNORE INTO reservations VALUES (?,?,?,?)",
                                     [(p, me, owner, purpose) for p in mine])
                return mine
            if mine:
                conn.execute("DELETE FROM ports WHERE owner = ? AND purpose = ?", (owner, purpose))
            taken = {r[0] for r in conn.execute("SELECT port FROM ports")}
            if host is not None:
                host.execute("DELETE FROM reservations WHERE registry = ? AND owner = ? AND purpose = ?",
                             (me, owner, purpose))
                for registry in [r[0] for r in host.execute("SELECT DISTINCT registry FROM reservations")]:
                    if registry != me and not Path(registry).exists():
                        host.execute("DELETE FROM reservations WHERE registry = ?", (registry,))
                taken |= {r[0] for r in host.execute("SELECT port FROM reservations WHERE registry != ?", (me,))}
            start = base
            while start + count - 1 <= limit:
                block = list(range(start, start + count))
                if not taken.intersection(block) and all(port_free(p) for p in block):
                    conn.executemany("INSERT INTO ports (port, owner, purpose) VALUES (?,?,?)",
                                     [(p, owner, purpose) for p in block])
                    if host is not None:
                        host.executemany("INSERT OR REPLACE INTO reservations VALUES (?,?,?,?)",
                                         [(p, me, owner, purpose) for p in block])
                    return block
                start += count
        raise WorkspaceError(f"no free block of {count} ports from {base} to {limit}")

    def ports(self, owner: str, purpose: str | None = None) -> list[int]:
        with self.db.connect() as conn:
            if purpose is None:
                rows = conn.execute("SELECT port FROM ports WHERE owner = ? ORDER BY port", (owner,))
            else:
                rows = conn.execute("SELECT port FROM ports WHERE owner = ? AND purpose = ? ORDER BY port",
                                    (owner, purpose))
            return [r[0] for r in rows]

    def port_owners(self) -> dict[str, list[int]]:
        with self.db.connect() as conn:
            out: dict[str, list[int]] = {}
            for r in conn.execute("SELECT owner, port FROM ports ORDER BY port"):
                out.setdefault(r[0], []).append(r[1])
            return out

    def release(self, owner: str, purpose: str | None = None) -> None:
        me = str(self.db.path.resolve())
        with self.db.transaction() as conn, self.host.transaction() as host:
            if purpose is None:
                conn.execute("DELETE FROM ports WHERE owner = ?", (owner,))
                if host is not None:
                    host.execute("DELETE FROM reservations WHERE registry = ? AND owner = ?", (me, owner))
            else:
                conn.execute("DELETE FROM ports WHERE owner = ? AND purpose = ?", (owner, purpose))
                if host is not None:
                    host.execute("DELETE FROM reservations WHERE registry = ? AND owner = ? AND purpose = ?",
                                 (me, owner, purpose))
