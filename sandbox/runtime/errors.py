"""The one translation of Docker SDK errors into sandbox's error tree.

An unreachable engine is :class:`ServiceUnavailable` (exit 3) with the install hint; any
other Docker error is :class:`WorkspaceError` naming what was being done. Every module that
calls the Docker SDK wraps its calls in :func:`translated`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import docker.errors
import requests.exceptions

from ..errors import SandboxError, ServiceUnavailable, WorkspaceError

__all__ = ["BUILD_HINT", "INSTALL_HINT", "reason", "translated"]

INSTALL_HINT = "run scripts/install-docker"
BUILD_HINT = "run scripts/build-images"


def reason(exc: BaseException) -> str:
    """The engine's own words for an error (its explanation, or the first line)."""
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Re-raise docker SDK errors as sandbox errors, naming what was being done."""
    try:
        yield
    except SandboxError:
        raise
    except docker.errors.APIError as exc:  # before RequestException: APIError is an HTTPError too
        raise WorkspaceError(f"{what}: {reason(exc)}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise ServiceUnavailable(f"{what}: Docker engine not reachable: {reason(exc)}",
                                 hint=INSTALL_HINT) from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise WorkspaceError(f"{what}: {reason(exc)}") from exc
