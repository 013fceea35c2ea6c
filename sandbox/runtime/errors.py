"""The one translation of Docker SDK errors into sandbox's error tree.

An unreachable engine is :class:`ServiceUnavailable` (exit 3) with the install hint; any
other Docker error is :class:`WorkspaceError` naming what was being done. Every module that
calls the Docker SDK wraps its calls in :func:`translated`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import SandboxError, ServiceUnavailable, WorkspaceError

__all__ = ["BUILD_HINT", "INSTALL_HINT", "reason", "translated"]

INSTALL_HINT = "run scripts/install-docker"
BUILD_HINT = "run scripts/build-images"


def reason(exc: BaseException) -> str:
    """The engine's own words for an error (its explanation, or the first line)."""
    import docker.errors          # the SDK is loaded by the commands that use Docker, not at startup

    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def translated(what: str, error: type[SandboxError] = WorkspaceError) -> Iterator[None]:
    """Re-raise docker SDK errors as sandbox errors, naming what was being done: ``error`` (the
    database layer passes :class:`~sandbox.errors.DatabaseError`) for what the engine refused,
    :class:`ServiceUnavailable` for an engine that cannot be reached."""
    try:
        yield
    except SandboxError:
        raise
    except Exception as exc:
        import docker.errors      # loaded already: whatever raised here used the SDK
        import requests.exceptions

        if isinstance(exc, docker.errors.APIError):   # before RequestException: APIError is an HTTPError too
            raise error(f"{what}: {reason(exc)}") from exc
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            raise ServiceUnavailable(f"{what}: Docker engine not reachable: {reason(exc)}",
                                     hint=INSTALL_HINT) from exc
        if isinstance(exc, (docker.errors.DockerException, requests.exceptions.RequestException)):
            raise error(f"{what}: {reason(exc)}") from exc
        raise
