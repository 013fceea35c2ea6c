"""An existing PostgreSQL server that the user runs (``[database] server = "url"``).

sandbox neither starts nor stops it. It needs a role that may create databases and
roles (a superuser, or ``CREATEDB CREATEROLE``); the ``template`` and ``schema``
strategies create only objects named ``sbx_<project_id>_…`` on it and never touch
anything else.

Containers: :meth:`UrlServer.attach` returns ``None``, so a workspace container gets
the same host and port as the host does. Make the server reachable from containers
yourself: a host name or IP that resolves inside them (not ``localhost``), or a
server in a Docker network that the workspace containers join.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..checks import Check, OwnedResource
from ..errors import ConfigError, DatabaseError, ServiceUnavailable
from .base import ConnInfo
from .pgadmin import connect


class UrlServer:
    """A :class:`~sandbox.databases.base.Server` for a server given by URL (or libpq key=value string)."""

    def __init__(self, url: str) -> None:
        try:
            params: dict[str, Any] = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError("[database] url is not a valid PostgreSQL connection URL",
                              key="database.url") from exc
        host = str(params.get("host") or "localhost")
        try:
            port = int(params.get("port") or 5432)
        except ValueError as exc:
            raise ConfigError("[database] url has an invalid port", key="database.url") from exc
        self._info = ConnInfo(host=host, port=port, user=str(params.get("user") or "postgres"),
                              password=str(params.get("password") or ""),
                              dbname=str(params.get("dbname") or "postgres"))

    def __repr__(self) -> str:
        return f"UrlServer(host={self._info.host!r}, port={self._info.port}, user={self._info.user!r})"

    def admin(self) -> ConnInfo:
        """The URL's role; its database (default ``postgres``) is only used for administration."""
        return self._info

    def ensure_running(self) -> None:
        """Only checks that the server accepts connections: it is not ours to start."""
        with connect(self._info, timeout=5):
            pass

    def address(self, network: str | None) -> tuple[str, int] | None:
        return None

    def attach(self, network: str | None) -> tuple[str, int] | None:
        return self.address(network)

    def stop(self) -> None:
        """Not ours to stop."""

    def owned(self) -> list[OwnedResource]:
        # The server itself is the user's; databases and roles on it are listed by the strategies.
        return []

    def remove_owned(self, resource: OwnedResource) -> None:
        raise DatabaseError(f"the server at {self._info.host}:{self._info.port} owns no {resource.kind} "
                            "(remove it through the database strategy)")

    def doctor(self) -> list[Check]:
        where = f"{self._info.host}:{self._info.port}"
        try:
            with connect(self._info, timeout=5) as conn:
                row = conn.execute("SELECT current_setting('server_version'), rolsuper, rolcreatedb, rolcreaterole "
                                   "FROM pg_roles WHERE rolname = current_user").fetchone()
        except (ServiceUnavailable, DatabaseError) as exc:
            return [Check("postgres server", False, exc.message,
                          fix="check [database] url in sandbox.toml and that the server is running")]
        assert row is not None
        version, superuser, createdb, createrole = row
        checks = [Check("postgres server", True, f"PostgreSQL {version} at {where}")]
        able = superuser or (createdb and createrole)
        checks.append(Check("postgres privileges", bool(able),
                            f"role {self._info.user!r}: " + ("superuser" if superuser else
                                                             f"createdb={createdb}, createrole={createrole}"),
                            fix=None if able else f"ALTER ROLE {self._info.user} CREATEDB CREATEROLE"))
        return checks
