"""The :class:`Registry`: one object over the registry file and its stores.

Callers keep one handle (``Registry(state_dir)``) with the same methods as ever; each group of
them is kept by a store of its own: :mod:`.workspaces`, :mod:`.ports`, :mod:`.intents`,
:mod:`.ledger` (meta, allowances, merges), and :mod:`.database` (verification and backups).
Cross-process critical sections (one workspace's lifecycle, the merge queue) use file locks
under ``locks/`` (:func:`sandbox.host.file_lock`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import LockBusy, WorkspaceError
from ..host import LockHeld, file_lock
from .database import GENERATION, RESTORED, RegistryFile
from .hostports import HostPorts
from .intents import IntentStore
from .ledger import MergeLedger, MetaStore
from .ports import PortStore
from .records import IntentRecord, WorkspaceRecord
from .workspaces import WorkspaceStore


class Registry:
    """Workspaces and their state machine, port blocks, intents, allowances, merges, meta.

    ``Registry(state_dir)`` opens and verifies an existing registry (see
    :mod:`sandbox.registry.database`); ``create=True`` makes one (``init``), or verifies the one
    that exists.
    """

    def __init__(self, state_dir: Path, host_ports: HostPorts | None = None, *, create: bool = False,
                 timeout: float | None = None) -> None:
        self.db = RegistryFile(state_dir, create=create, timeout=timeout)
        self.state_dir = state_dir
        self.path = self.db.path
        self.backup_path = self.db.backup_path
        self.locks_dir = self.db.locks_dir
        self.timeout = self.db.timeout
        self.host = host_ports or HostPorts()
        self.workspaces = WorkspaceStore(self.db)
        self.port_store = PortStore(self.db, self.host)
        self.intent_store = IntentStore(self.db)
        self.meta = MetaStore(self.db)
        self.ledger = MergeLedger(self.db)

    # -- the file ---------------------------------------------------------------------------
    def verify(self) -> int:
        """Check that this is the registry ``init`` made, whole; its generation."""
        return self.db.verify()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A short write transaction (bumps the generation; the backup follows its commit)."""
        return self.db.transaction()

    def _connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self.db.connect()

    def _backup(self, source: sqlite3.Connection | None = None) -> None:
        self.db.backup(source)

    @property
    def generation(self) -> int:
        return int(self.get_meta(GENERATION) or 0)

    @property
    def restored(self) -> str | None:
        """When the registry was last restored from its backup and not yet trusted again."""
        return self.get_meta(RESTORED)

    def trust(self) -> None:
        """The user has checked a restored registry: ``gc`` may remove what it does not know again."""
        self.set_meta(RESTORED, None)

    # -- locks --------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, *, blocking: bool = True, timeout: float | None = None) -> Iterator[None]:
        """An exclusive cross-process lock (``workspace-a``, ``merge``, ``baseline``...).

        A lock held by a process that dies is released by the kernel. ``timeout``: wait at most that
        many seconds (``merge`` passes :attr:`timeout`, i.e. ``SANDBOX_REGISTRY_TIMEOUT``), then
        :class:`LockBusy` naming the holder; None waits as long as it takes.
        """
        wait = None if blocking and timeout is None else (0.0 if not blocking else timeout or 0.0)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(file_lock(self.locks_dir / f"{name}.lock", wait, claim=True))
            except LockHeld as exc:
                if not blocking:
                    raise WorkspaceError(f"{name} is busy: another sandbox process holds its lock"
                                         + (f" ({exc.holder})" if exc.holder else "")) from exc
                raise LockBusy(name, timeout or 0.0, exc.holder) from exc
            yield

    # -- workspaces ---------------------------------------------------------------------
    def get(self, name: str) -> WorkspaceRecord | None:
        return self.workspaces.get(name)

    def all(self) -> list[WorkspaceRecord]:
        return self.workspaces.all()

    def insert(self, rec: WorkspaceRecord) -> bool:
        """Insert a new workspace; False if one of that name exists already."""
        return self.workspaces.insert(rec)

    def update(self, name: str, **fields: Any) -> None:
        self.workspaces.update(name, **fields)

    def set_state(self, name: str, state: str, cause: str | None = None) -> None:
        self.workspaces.set_state(name, state, cause)

    def delete(self, name: str) -> None:
        """Forget a workspace and release its ports."""
        self.workspaces.delete(name)
        self.release(name)

    # -- ports ----------------------------------------------------------------------------
    def allocate(self, owner: str, purpose: str, count: int = 1, *, base: int = 20000,
                 limit: int = 65535) -> list[int]:
        """Allocate ``count`` contiguous host ports for ``owner`` (idempotent per owner+purpose)."""
        return self.port_store.allocate(owner, purpose, count, base=base, limit=limit)

    def ports(self, owner: str, purpose: str | None = None) -> list[int]:
        return self.port_store.ports(owner, purpose)

    def port_owners(self) -> dict[str, list[int]]:
        return self.port_store.port_owners()

    def release(self, owner: str, purpose: str | None = None) -> None:
        self.port_store.release(owner, purpose)

    # -- intents ----------------------------------------------------------------------------
    def begin_intent(self, op: str, workspace: str | None, data: dict[str, Any] | None = None) -> int:
        """Record that this process is about to run ``op`` (step ``begin``); its id."""
        return self.intent_store.begin(op, workspace, data)

    def update_intent(self, intent_id: int, *, step: str | None = None, status: str | None = None,
                      data: dict[str, Any] | None = None, cause: str | None = None,
                      claim: bool = False) -> None:
        """Move an intent on: its step, status, more data (merged), a cause; ``claim``: this process owns it now."""
        self.intent_store.update(intent_id, step=step, status=status, data=data, cause=cause, claim=claim)

    def end_intent(self, intent_id: int) -> None:
        """The operation finished (or was rolled forward or back): forget it."""
        self.intent_store.end(intent_id)

    def intent(self, intent_id: int) -> IntentRecord | None:
        return self.intent_store.get(intent_id)

    def intents(self) -> list[IntentRecord]:
        """Every unfinished operation, oldest first."""
        return self.intent_store.all()

    # -- meta, allowances, merges ---------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        return self.meta.get(key)

    def set_meta(self, key: str, value: str | None) -> None:
        self.meta.set(key, value)

    def record_allowance(self, workspace: str, revisions: list[str], rules: list[str], reason: str,
                         who: str) -> None:
        self.ledger.record_allowance(workspace, revisions, rules, reason, who)

    def allowances(self) -> list[dict[str, Any]]:
        return self.ledger.allowances()

    def record_merge(self, workspace: str, base_head: str | None, revisions: list[str],
                     commit_sha: str | None) -> None:
        self.ledger.record_merge(workspace, base_head, revisions, commit_sha)

    def merges(self) -> list[dict[str, Any]]:
        return self.ledger.merges()


class RegistryPorts:
    """Adapts the registry to the databases' ``PortAllocator`` protocol."""

    def __init__(self, registry: Registry, base: int) -> None:
        self.registry = registry
        self.base = base

    def allocate(self, owner: str, purpose: str, count: int = 1) -> list[int]:
        return self.registry.allocate(owner, purpose, count, base=self.base)

    def release(self, owner: str, purpose: str | None = None) -> None:
        self.registry.release(owner, purpose)
