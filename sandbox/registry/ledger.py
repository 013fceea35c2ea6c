"""Meta values, and the gate's ledger: allowances granted and merges made."""

from __future__ import annotations

import json
from typing import Any

from ..host import now
from .database import RegistryFile


class MetaStore:
    def __init__(self, db: RegistryFile) -> None:
        self.db = db

    def get(self, key: str) -> str | None:
        with self.db.connect() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set(self, key: str, value: str | None) -> None:
        with self.db.transaction() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                             "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))


class MergeLedger:
    """Allowances (a finding accepted with a reason) and merges (what reached main, when)."""

    def __init__(self, db: RegistryFile) -> None:
        self.db = db

    def record_allowance(self, workspace: str, revisions: list[str], rules: list[str], reason: str,
                         who: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO allowances (workspace, revisions, rules, reason, who, at) "
                         "VALUES (?,?,?,?,?,?)",
                         (workspace, json.dumps(revisions), json.dumps(rules), reason, who, now()))

    def allowances(self) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [{"workspace": r["workspace"], "revisions": json.loads(r["revisions"]),
                     "rules": json.loads(r["rules"]), "reason": r["reason"], "who": r["who"], "at": r["at"]}
                    for r in conn.execute("SELECT * FROM allowances ORDER BY id")]

    def record_merge(self, workspace: str, base_head: str | None, revisions: list[str],
                     commit_sha: str | None) -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO merges (workspace, base_head, revisions, commit_sha, at) "
                         "VALUES (?,?,?,?,?)", (workspace, base_head, json.dumps(revisions), commit_sha, now()))

    def merges(self) -> list[dict[str, Any]]:
        with self.db.connect() as conn:
            return [{"workspace": r["workspace"], "base_head": r["base_head"],
                     "revisions": json.loads(r["revisions"]), "commit": r["commit_sha"], "at": r["at"]}
                    for r in conn.execute("SELECT * FROM merges ORDER BY id")]
