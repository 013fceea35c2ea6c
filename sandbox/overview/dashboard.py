"""``sandbox dashboard``: the overview as a live, read-only web page on 127.0.0.1.

A small ASGI app (Starlette, served by uvicorn; both come with the MCP SDK, and the ``dashboard``
extra names them). Every request needs the token printed at start (``?token=``, ``Authorization:
Bearer``, or the ``HttpOnly``/``SameSite=Strict`` cookie the page sets), compared in constant time; a request whose ``Host`` is not the loopback address it
listens on is refused too (DNS rebinding). It listens on 127.0.0.1 only, never on a wildcard.
Nothing is written: the routes read the overview and a workspace's review. Updates go to the page
over server-sent events when :class:`ChangeWatch` sees a ref, an index, a worktree file or the
registry change (:mod:`.watch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from ..errors import ServiceUnavailable, UsageError
from .model import Overview
from .watch import ChangeWatch

HOST = "127.0.0.1"
COOKIE = "sandbox_dashboard"


class Source(Protocol):
    """What the dashboard reads (the ``Sandbox`` facade satisfies it)."""

    root: Path

    def overview(self, *, workspace: str | None = None) -> Overview: ...

    def review(self, name: str) -> dict[str, Any]: ...

    def watched_paths(self) -> list[Path]: ...


def _static(name: str) -> bytes:
    return resources.files("sandbox.overview").joinpath("static", name).read_bytes()


def make_app(source: Source, token: str, port: int) -> Any:
    """The Starlette app: ``/`` (the page), ``/static/*``, ``/api/overview``,
    ``/api/workspace/{name}`` and ``/api/events`` (SSE), all behind ``token``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    lock = threading.Lock()
    allowed_hosts = {f"{HOST}:{port}", f"localhost:{port}"}

    def refused(request: Request) -> Response | None:
        if request.headers.get("host", "") not in allowed_hosts:
            return PlainTextResponse("wrong host\n", status_code=403)
        given = request.query_params.get("token", "") or request.cookies.get(COOKIE, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return PlainTextResponse("a token is required (printed by `sandbox dashboard`)\n", status_code=401)
        return None

    def current() -> dict[str, Any]:
        with lock:
            return source.overview().to_json()

    async def page(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        res = Response(_static("index.html"), media_type="text/html; charset=utf-8",
                       headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'"})
        # the page's own scripts, styles and event stream carry the token as a cookie
        res.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return res

    async def static(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        name = request.path_params["name"]
        kinds = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in kinds:
            return PlainTextResponse("not found\n", status_code=404)
        return Response(_static(name), media_type=kinds[name], headers={"Cache-Control": "no-store"})

    async def api_overview(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        return JSONResponse(await asyncio.to_thread(current))

    async def api_workspace(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no
        name = request.path_params["name"]

        def read() -> dict[str, Any]:
            with lock:           # taken in the worker thread, never on the event loop
                return source.review(name)

        try:
            data = await asyncio.to_thread(read)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse(data)

    async def events(request: Request) -> Response:
        if (no := refused(request)) is not None:
            return no

        async def stream() -> AsyncIterator[str]:
            watch = await asyncio.to_thread(ChangeWatch, source.watched_paths)
            yield f"event: overview\ndata: {json.dumps(await asyncio.to_thread(current))}\n\n"
            while not await request.is_disconnected():
                if await asyncio.to_thread(watch.wait, 10.0):
                    yield f"event: overview\ndata: {json.dumps(await asyncio.to_thread(current))}\n\n"
                else:
                    yield ": still here\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return Starlette(routes=[Route("/", page), Route("/static/{name}", static),
                             Route("/api/overview", api_overview), Route("/api/workspace/{name}", api_workspace),
                             Route("/api/events", events)])


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (never a wildcard address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"--port {port}: cannot listen on {HOST}:{port} ({exc.strerror})") from exc
    sock.listen(64)
    return sock


def serve(source: Source, *, port: int = 8765, token: str | None = None,
          announce: Callable[[str], None] = print) -> None:
    """Serve the dashboard until interrupted; ``announce`` gets the URL with its token."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ServiceUnavailable("the dashboard needs starlette and uvicorn",
                                 hint="pip install 'sandbox[dashboard]'") from exc
    token = token or os.environ.get("SANDBOX_DASHBOARD_TOKEN") or secrets.token_urlsafe(24)
    sock = bind(port)
    real = sock.getsockname()[1]
    app = make_app(source, token, real)
    announce(f"dashboard: http://{HOST}:{real}/?token={token}")
    announce("read-only; the token is required for every request. Ctrl-C stops it.")
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
