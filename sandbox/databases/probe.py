"""Does a workspace's database answer? One short connection with the workspace's own credentials."""

from __future__ import annotations

import psycopg

from .base import ConnInfo

CONNECT_TIMEOUT = 3          # seconds a health probe waits for a database


def answers(info: ConnInfo, timeout: int = CONNECT_TIMEOUT) -> str | None:
    """None when the database accepts its own credentials and runs a query; else why not (one line)."""
    try:
        with psycopg.connect(**info.kwargs(), connect_timeout=timeout, autocommit=True,
                             application_name="sandbox-health") as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        if info.password:
            text = text.replace(info.password, "***")
        return text[:200]
    return None
