"""The registry: sandbox's state in SQLite under ``.sandbox/registry.db``.

One public handle, :class:`Registry`, over stores with one job each:

* :mod:`.database` — the file itself: verified on open, every write a short ``BEGIN IMMEDIATE``
  transaction that bumps a generation, and a backup after each write;
* :mod:`.workspaces` — workspaces and their state machine;
* :mod:`.ports` and :mod:`.hostports` — port blocks, per project and host-wide;
* :mod:`.intents` — the journal of unfinished operations;
* :mod:`.ledger` — meta values, allowances and merges;
* :mod:`.repair` — restoring a damaged registry from its backup.
"""

from __future__ import annotations

from ..host import host_state_dir, now, process_alive, process_start
from .core import Registry, RegistryPorts
from .database import lock_timeout
from .hostports import HostPorts
from .records import STATES, IntentRecord, WorkspaceRecord
from .repair import repair

__all__ = ["STATES", "HostPorts", "IntentRecord", "Registry", "RegistryPorts", "WorkspaceRecord",
           "host_state_dir", "lock_timeout", "now", "process_alive", "process_start", "repair"]
