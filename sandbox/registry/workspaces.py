"""The workspaces table: one row per workspace and its state machine."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from ..host import now, process_start
from .database import RegistryFile
from .records import STATES, WorkspaceRecord


def _record(row: sqlite3.Row) -> WorkspaceRecord:
    return WorkspaceRecord(
        name=row["name"], branch=row["branch"], path=row["path"], state=row["state"],
        runtime=row["runtime"], cause=row["cause"], strategy=row["strategy"],
        base_ref=row["base_ref"], branch_created=bool(row["branch_created"]), pid=row["pid"],
        created_at=row["created_at"], updated_at=row["updated_at"],
        data=json.loads(row["data"] or "{}"), pid_start=row["pid_start"])


class WorkspaceStore:
    def __init__(self, db: RegistryFile) -> None:
        self.db = db

    def get(self, name: str) -> WorkspaceRecord | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT * FROM workspaces WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def all(self) -> list[WorkspaceRecord]:
        with self.db.connect() as conn:
            rows = conn.execute("SELECT * FROM workspaces ORDER BY name").fetchall()
        return [_record(r) for r in rows]

    def insert(self, rec: WorkspaceRecord) -> bool:
        """Insert a new workspace; False if one of that name exists already."""
        ts = now()
        pid_start = rec.pid_start or (process_start(rec.pid) if rec.pid == os.getpid() else None)
        with self.db.transaction() as conn:
            if conn.execute("SELECT 1 FROM workspaces WHERE name = ?", (rec.name,)).fetchone():
                return False
            conn.execute(
                "INSERT INTO workspaces (name, branch, path, state, cause, runtime, strategy, base_ref,"
                " branch_created, pid, pid_start, created_at, updated_at, data)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rec.name, rec.branch, rec.path, rec.state, rec.cause, rec.runtime, rec.strategy,
                 rec.base_ref, int(rec.branch_created), rec.pid, pid_start, ts, ts, json.dumps(rec.data)))
        return True

    def update(self, name: str, **fields: Any) -> None:
        if "state" in fields and fields["state"] not in STATES:
            raise ValueError(f"unknown state {fields['state']!r}")
        if "data" in fields:
            fields["data"] = json.dumps(fields["data"])
        if "branch_created" in fields:
            fields["branch_created"] = int(fields["branch_created"])
        fields["updated_at"] = now()
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.db.transaction() as conn:
            conn.execute(f"UPDATE workspaces SET {cols} WHERE name = ?", (*fields.values(), name))

    def set_state(self, name: str, state: str, cause: str | None = None) -> None:
        # transitional states record their process, so gc can tell a crash from work in progress
        mine = state in ("creating", "removing")
        self.update(name, state=state, cause=cause, pid=os.getpid() if mine else None,
                    pid_start=process_start(os.getpid()) if mine else None)

    def delete(self, name: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM workspaces WHERE name = ?", (name,))
