"""The intents table: operations that said what they were about to do (see :mod:`sandbox.intents`)."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from ..host import now, process_start
from .database import RegistryFile
from .records import IntentRecord


def _intent(row: sqlite3.Row) -> IntentRecord:
    return IntentRecord(id=row["id"], op=row["op"], workspace=row["workspace"], step=row["step"],
                        status=row["status"], pid=row["pid"], pid_start=row["pid_start"],
                        data=json.loads(row["data"] or "{}"), cause=row["cause"],
                        started_at=row["started_at"], updated_at=row["updated_at"])


class IntentStore:
    def __init__(self, db: RegistryFile) -> None:
        self.db = db

    def begin(self, op: str, workspace: str | None, data: dict[str, Any] | None = None) -> int:
        """Record that this process is about to run ``op`` (step ``begin``); its id."""
        ts = now()
        pid = os.getpid()
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO intents (op, workspace, step, status, pid, pid_start, data, started_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (op, workspace, "begin", "running", pid, process_start(pid), json.dumps(data or {}), ts, ts))
            return int(cur.lastrowid or 0)

    def update(self, intent_id: int, *, step: str | None = None, status: str | None = None,
               data: dict[str, Any] | None = None, cause: str | None = None,
               claim: bool = False) -> None:
        """Move an intent on: its step, status, more data (merged), a cause; ``claim``: this process owns it now."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT data FROM intents WHERE id = ?", (intent_id,)).fetchone()
            if row is None:
                return
            fields: dict[str, Any] = {"updated_at": now()}
            if step is not None:
                fields["step"] = step
            if status is not None:
                fields["status"] = status
            if data:
                fields["data"] = json.dumps({**json.loads(row["data"] or "{}"), **data})
            if cause is not None:
                fields["cause"] = cause
            if claim:
                fields["pid"] = os.getpid()
                fields["pid_start"] = process_start(os.getpid())
            cols = ", ".join(f"{k} = ?" for k in fields)
            conn.execute(f"UPDATE intents SET {cols} WHERE id = ?", (*fields.values(), intent_id))

    def end(self, intent_id: int) -> None:
        """The operation finished (or was rolled forward or back): forget it."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM intents WHERE id = ?", (intent_id,))

    def get(self, intent_id: int) -> IntentRecord | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT * FROM intents WHERE id = ?", (intent_id,)).fetchone()
        return _intent(row) if row else None

    def all(self) -> list[IntentRecord]:
        """Every unfinished operation, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute("SELECT * FROM intents ORDER BY id").fetchall()
        return [_intent(r) for r in rows]
