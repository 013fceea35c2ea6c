"""``sandbox doctor --repair``: restore a damaged registry from its backup."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import RegistryDamaged
from ..host import now
from .core import Registry
from .database import BACKUP_NAME, RESTORED, _backup_usable, _ro_uri, backup_lock


def repair(state_dir: Path) -> dict[str, Any]:
    """Restore ``registry.db`` from its backup when it is damaged (``sandbox doctor --repair``).

    The damaged file (with its ``-wal``/``-shm``) is kept beside it as
    ``registry.db.damaged-<time>``. The restored registry is flagged ``registry.restored``:
    ``gc`` adopts or reports what it does not know until :meth:`Registry.trust`.
    Returns what was done; a registry that verifies is left alone.
    """
    path = state_dir / "registry.db"
    backup = state_dir / BACKUP_NAME
    try:
        Registry(state_dir)
        return {"repaired": False, "detail": "the registry is sound"}
    except RegistryDamaged as exc:
        reason = exc.reason
    if not _backup_usable(backup):
        raise RegistryDamaged(str(path), f"{reason}; its backup {backup} is missing or damaged too")
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = path.with_name(f"registry.db.damaged-{stamp}")
    with backup_lock(state_dir):
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(path) + suffix)
            if src.exists():
                os.replace(src, Path(str(kept) + suffix))
        tmp = path.with_name(".registry.db.restoring")
        with contextlib.closing(sqlite3.connect(_ro_uri(backup), uri=True)) as src_conn, \
                contextlib.closing(sqlite3.connect(tmp)) as dst:
            src_conn.backup(dst)
            dst.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET value = excluded.value", (RESTORED, now()))
            dst.commit()
        os.replace(tmp, path)
    reg = Registry(state_dir)
    reg.db.backup()
    return {"repaired": True, "detail": f"restored from {backup} (generation {reg.generation}); "
                                        f"the damaged file is kept as {kept.name}",
            "damaged_copy": str(kept), "reason": reason}
