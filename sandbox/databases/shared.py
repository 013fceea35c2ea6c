"""What the ``template`` and ``schema`` strategies share: one server that sandbox administers,
workspace identifiers made by ``pg_name``, a guard on every name, and per-role secrets."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import psycopg

from ..errors import DatabaseError
from ..names import pg_name, validate_name
from .base import BackendContext, ConnInfo, Server
from ..secretstore import SecretStore
from .pgadmin import connect, exists, guard, hardened, name_key


class SharedServerStrategy:
    """Base of the strategies that put every workspace on one shared server."""

    def test_env(self, ws: str, db: ConnInfo, *, container: bool = False) -> dict[str, str]:
        """No test role: only a cluster per workspace may grant CREATEDB."""
        return {}

    def __init__(self, ctx: BackendContext, server: Server) -> None:
        self.ctx = ctx
        self.server = server
        self.owner_role = pg_name(ctx.project_id, "owner", "base")
        self.secrets = SecretStore(ctx.state_dir)

    def _ws_ident(self, ws: str) -> str:
        """The database or schema of a workspace; its role has the same name."""
        return pg_name(self.ctx.project_id, name_key(validate_name(ws)), "ws")

    def _guard(self, name: str) -> str:
        return guard(self.ctx.project_id, name)

    @contextmanager
    def _admin(self, dbname: str | None = None) -> Iterator[psycopg.Connection[Any]]:
        """An admin session, with a search_path of the system catalog only (see
        :func:`~sandbox.databases.pgadmin.hardened`). It runs catalog queries and DDL on names
        (CREATE/DROP/RENAME/REASSIGN), never a statement that evaluates a workspace's objects."""
        with connect(hardened(self.server.admin()), dbname=dbname) as conn:
            yield conn

    def _role_password(self, conn: psycopg.Connection[Any], role: str,
                       create: Callable[[str], None]) -> str:
        """The role's password; ``create(password)`` makes (or repairs) the role when it or its secret is lost."""
        password = self.secrets.read(role)
        if password and exists(conn, "pg_roles", role):
            return password
        if not password:
            password, _ = self.secrets.get_or_create(role)
        create(password)
        return password

    def _conninfo(self, ident: str, user: str, password: str, network: str | None, *,
                  attach: bool = True) -> ConnInfo:
        """How ``user`` reaches ``ident`` (a database, or a schema); each strategy says which."""
        raise NotImplementedError

    def _server_info(self, user: str, password: str, dbname: str, network: str | None, *,
                     attach: bool, options: str | None = None) -> ConnInfo:
        """The shared server's address (host view, and as seen from ``network``: attached to it
        when ``attach``, else only computed) with these credentials."""
        admin = self.server.admin()
        seen = self.server.attach(network) if attach else self.server.address(network)
        return ConnInfo(host=admin.host, port=admin.port, user=user, password=password, dbname=dbname,
                        options=options, container_host=seen[0] if seen else None,
                        container_port=seen[1] if seen else None, container=admin.container)

    def planned(self, ws: str, network: str | None = None) -> ConnInfo:
        """Known before the database exists: the server's address and the role's secret."""
        ident = self._ws_ident(ws)
        password, _ = self.secrets.get_or_create(ident)   # create() makes the role with it
        return self._conninfo(ident, ident, password, network, attach=False)

    def info(self, ws: str, network: str | None = None) -> ConnInfo:
        ident = self._ws_ident(ws)
        password = self.secrets.read(ident)
        if password is None:
            raise DatabaseError(f"workspace {ws!r} has no database credentials",
                                hint=f"run `sandbox up {ws}` or `sandbox db reset {ws}`")
        return self._conninfo(ident, ident, password, network)

    def start(self, ws: str, network: str | None = None) -> None:
        """The server is shared: make sure it runs (and is reachable from ``network``)."""
        self.server.ensure_running()
        self.server.attach(network)

    def stop(self, ws: str) -> None:
        """Nothing to stop: the server is shared with the other workspaces."""
