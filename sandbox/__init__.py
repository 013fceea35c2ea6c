"""sandbox: parallel workspaces, each with its own git worktree, container and PostgreSQL database,
plus a migration coordinator that gates merges.

The public API is small: :class:`Sandbox` (one method per CLI command, each returning a typed
result from :mod:`sandbox.results` or the gate), :class:`Config`, the events (:class:`Event`), the
error tree in :mod:`sandbox.errors`, and public fakes in :mod:`sandbox.testing`.
"""

from .api import Sandbox
from .config import Config, load as load_config
from .results import Event, EventKind
from .errors import (ConfigError, DatabaseError, HookFailed, InvalidName,
                     MigrationError, SandboxError, ServiceUnavailable, UnknownWorkspace, UnsafeRemoval,
                     UsageError, WorkspaceError)

__all__ = ["Sandbox", "Config", "load_config", "Event", "EventKind", "SandboxError", "UsageError", "ConfigError", "InvalidName",
           "UnknownWorkspace", "WorkspaceError", "UnsafeRemoval", "HookFailed", "DatabaseError",
           "MigrationError", "ServiceUnavailable"]
__version__ = "0.1.0"
