"""The error tree of sandbox.

Every error the library raises on purpose is a :class:`SandboxError`. The CLI
catches that one type, prints its message on one line and exits with its
``exit_code``::

    SandboxError                 exit 1  a check failed or sandbox refused for safety
    ├── UsageError               exit 2  bad input; nothing was changed
    │   ├── ConfigError                  sandbox.toml or an environment override is invalid
    │   ├── InvalidName                  a workspace name does not match the contract's pattern or git's rules
    │   ├── InvalidLabel                 a checkpoint label is malformed
    │   └── UnknownWorkspace             no workspace of that name is registered
    ├── WorkspaceError           exit 1  a workspace operation was refused or failed
    │   ├── UnsafeRemoval                rm refused: uncommitted changes or unmerged commits
    │   ├── UnsafeToTell                 git could not say whether there is work: refused
    │   ├── HookFailed                   a setup or teardown command exited non-zero
    │   └── LockBusy                     another sandbox command held a lock (merge) longer than the wait
    ├── DatabaseError            exit 1  a database operation failed
    │   └── CheckpointExists             a checkpoint label is taken (pass --force to replace it)
    ├── MigrationError           exit 1  the migration tool or coordinator failed
    │   └── MigrationsMisdirected        alembic ran, but the target's version table does not show it
    └── ServiceUnavailable       exit 3  Docker, Postgres or copy-on-write storage is missing
        ├── RegistryDamaged              the registry is missing, emptied or corrupt (restore it)
        ├── RegistryBusy                 another process held the registry's lock too long
        └── DiskFull                     a write failed: no space left on the device

Third-party errors (docker, psycopg, git, subprocess) are translated where they
are raised and chained with ``raise ... from exc``.
"""

from __future__ import annotations



class SandboxError(Exception):
    """Base of every error sandbox raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(SandboxError):
    """Raised for bad input: a usage error, a bad value, an unknown name."""

    exit_code = 2


class ConfigError(UsageError):
    """Raised when sandbox.toml or an environment override is invalid."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.key = key


class InvalidName(UsageError):
    """Raised when a workspace name does not match ``[A-Za-z0-9][A-Za-z0-9._-]{0,47}`` or git's branch rules."""

    def __init__(self, name: str, reason: str | None = None) -> None:
        super().__init__(
            f"invalid workspace name {name!r}: "
            + (reason or "use 1-48 characters from A-Z a-z 0-9 . _ - starting with a letter or digit")
        )
        self.name = name
        self.reason = reason


class InvalidLabel(UsageError):
    """Raised when a checkpoint label is malformed."""

    def __init__(self, label: str, reason: str | None = None) -> None:
        super().__init__(
            f"invalid checkpoint label {label!r}: "
            + (reason or "use 1-48 characters from A-Z a-z 0-9 . _ - starting with a letter or digit")
        )
        self.label = label
        self.reason = reason


class UnknownWorkspace(UsageError):
    """Raised when a command names a workspace the registry does not know."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown workspace {name!r} (see `sandbox ls`)")
        self.name = name


class WorkspaceError(SandboxError):
    """Raised when a workspace operation is refused or fails."""


class UnsafeRemoval(WorkspaceError):
    """Raised when rm would lose uncommitted changes or unmerged commits."""

    def __init__(self, name: str, reasons: list[str]) -> None:
        super().__init__(
            f"refusing to remove workspace {name!r}: {'; '.join(reasons)}",
            hint="commit or merge first, or pass --force",
        )
        self.name = name
        self.reasons = reasons


class UnsafeToTell(WorkspaceError):
    """Raised when git cannot say whether a workspace holds work: sandbox then refuses (fails closed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint="nothing was removed; fix the repository, or pass --force to lose its work")


class HookFailed(WorkspaceError):
    """Raised when a setup or teardown command exits non-zero."""

    def __init__(self, name: str, command: str, code: int, log: str | None) -> None:
        where = f"; log: {log}" if log else ""
        super().__init__(f"workspace {name!r}: hook {command!r} exited {code}{where}")
        self.name = name
        self.command = command
        self.code = code
        self.log = log


class LockBusy(WorkspaceError):
    """Raised when another sandbox process holds a lock (``merge``) longer than ``SANDBOX_REGISTRY_TIMEOUT``.

    Exit 1, not 3 (:class:`RegistryBusy`): nothing is missing or broken; another sandbox command
    is legitimately doing its work, and this one refuses rather than queue behind it unboundedly.
    """

    def __init__(self, name: str, waited: float, holder: str = "") -> None:
        who = f" ({holder})" if holder else ""
        super().__init__(f"the {name} lock is held by another sandbox process{who}; gave up after {waited:g} s",
                         hint="retry when it has finished, or raise SANDBOX_REGISTRY_TIMEOUT")
        self.name = name
        self.waited = waited
        self.holder = holder


class DatabaseError(SandboxError):
    """Raised when a database operation fails."""


class CheckpointExists(DatabaseError):
    """Raised when ``db checkpoint`` would overwrite an existing label without ``--force``."""

    def __init__(self, workspace: str, label: str) -> None:
        super().__init__(f"workspace {workspace!r} already has a checkpoint {label!r}",
                         hint="pass --force to replace it, or pick another label")
        self.workspace = workspace
        self.label = label


class MigrationError(SandboxError):
    """Raised when the migration tool or the coordinator fails."""


class MigrationsMisdirected(MigrationError):
    """Raised when alembic ran but the target database's version table does not show it."""

    def __init__(self, message: str, *, hint: str | None = None, found: list[str] | None = None,
                 expected: list[str] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.found = list(found or [])
        self.expected = list(expected or [])


class ServiceUnavailable(SandboxError):
    """Raised when Docker, Postgres or copy-on-write storage is unavailable."""

    exit_code = 3


class RegistryDamaged(ServiceUnavailable):
    """Raised when the registry is missing, emptied, corrupt or older than its backup."""

    def __init__(self, path: str, reason: str, *, backup: str | None = None) -> None:
        hint = (f"restore the last good copy ({backup}) with `sandbox doctor --repair`" if backup
                else "no backup exists: move it aside and run `sandbox init`, then `sandbox gc --dry-run`")
        super().__init__(f"the registry {path} is unusable: {reason}", hint=hint)
        self.path = path
        self.reason = reason
        self.backup = backup


class RegistryBusy(ServiceUnavailable):
    """Raised when another process holds the registry's write lock longer than the wait allows."""

    def __init__(self, path: str, waited: float) -> None:
        super().__init__(f"the registry {path} is locked by another process (waited {waited:g} s)",
                         hint="retry when it has finished; `fuser -v` on the file names it")
        self.path = path
        self.waited = waited


class DiskFull(ServiceUnavailable):
    """Raised when a write fails because the device (or the copy-on-write pool) is full."""

    def __init__(self, what: str, *, where: str | None = None) -> None:
        place = f" on {where}" if where else ""
        super().__init__(f"{what}: no space left{place}",
                         hint="free space: `sandbox db drop-checkpoint`, `sandbox rm`, "
                              "or `sandbox storage grow SIZE`")
        self.what = what
        self.where = where
