"""The last gate result of each workspace, kept in the registry's meta table by ``migrate check``
and ``merge`` (``record``), and read back against the branch's current commit (``last``)."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Protocol

from .model import GateResult, GateState

_KEY = "overview.gate."


class MetaStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str | None) -> None: ...


def record(store: MetaStore, name: str, commit: str | None, report: dict[str, Any]) -> None:
    """Remember the gate's verdict on ``commit`` (the commit it judged) for ``name``."""
    if not commit:
        return
    data = {"commit": commit, "ok": bool(report.get("ok")), "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "report": report}
    store.set_meta(_KEY + name, json.dumps(data))


def forget(store: MetaStore, name: str) -> None:
    store.set_meta(_KEY + name, None)


def last(store: MetaStore, name: str, commit: str | None) -> GateResult:
    """``pass``/``fail`` when the gate judged ``commit`` (the branch's tip now), ``stale`` when it
    judged another commit, ``never`` when it never ran."""
    raw = store.get_meta(_KEY + name)
    if not raw:
        return GateResult(GateState.NEVER)
    try:
        data = json.loads(raw)
    except ValueError:
        return GateResult(GateState.NEVER)
    report = data.get("report") or {}
    errors = sum(1 for f in report.get("findings", []) if f.get("severity") == "error")
    if data.get("commit") != commit:
        state = GateState.STALE
    else:
        state = GateState.PASS if data.get("ok") else GateState.FAIL
    return GateResult(state, data.get("commit"), data.get("at"), errors, report)
