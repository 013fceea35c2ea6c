"""sandbox: parallel workspaces, each with its own git worktree, container and PostgreSQL database,
plus a migration coordinator that gates merges.

The public API is small: :class:`Sandbox` (one method per CLI command, each returning a typed
result from :mod:`sandbox.results` or the gate), :class:`Config`, the events (:class:`Event`), the
error tree in :mod:`sandbox.errors`, and public fakes in :mod:`sandbox.testing`.

Names load on first use (PEP 562): importing ``sandbox`` (or ``sandbox.pytest_plugin``, which
pytest loads in every session of a project that has sandbox installed) costs almost nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import Sandbox
    from .config import Config
    from .config import load as load_config
    from .errors import (
        ConfigError,
        DatabaseError,
        HookFailed,
        InvalidName,
        MigrationError,
        SandboxError,
        ServiceUnavailable,
        UnknownWorkspace,
        UnsafeRemoval,
        UsageError,
        WorkspaceError,
    )
    from .results import Event, EventKind

__all__ = ["Sandbox", "Config", "load_config", "Event", "EventKind", "SandboxError", "UsageError", "ConfigError",
           "InvalidName", "UnknownWorkspace", "WorkspaceError", "UnsafeRemoval", "HookFailed", "DatabaseError",
           "MigrationError", "ServiceUnavailable"]
__version__ = "0.1.0"

_WHERE = {"Sandbox": ("api", "Sandbox"), "Config": ("config", "Config"), "load_config": ("config", "load"),
          "Event": ("results", "Event"), "EventKind": ("results", "EventKind")}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    module, attr = _WHERE.get(name, ("errors", name))
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value
