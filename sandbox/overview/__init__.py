"""The bird's-eye view: every workspace against main and every pair against each other.

- :mod:`.model`: the typed answer (:class:`Overview`, :class:`WorkspaceView`, :class:`Pair`,
  :class:`PairFinding`, :class:`Risk`, :class:`GateState`).
- :mod:`.gather`: reads git (through :mod:`sandbox.git.forecast`), the registry and the schema
  facts into an :class:`Overview`.
- :mod:`.forecast`: the pairwise forecast (textual and schema), pure.
- :mod:`.schema`: schema facts from the gate's static pass, cached by content; nothing replayed.
- :mod:`.gates`: the last gate result per workspace.
- :mod:`.render`: the terminal view (``rich``).
- :mod:`.watch`: seeing that something changed (``overview --watch``, the dashboard's events).
- :mod:`.dashboard`: the read-only web page (Starlette + uvicorn, token, server-sent events).
"""

from __future__ import annotations

from .model import FindingKind, GateState, Overview, Pair, PairFinding, Risk, WorkspaceView

__all__ = ["FindingKind", "GateState", "Overview", "Pair", "PairFinding", "Risk", "WorkspaceView"]
