"""What the gate's replay measured, attached to findings: evidence and annotations.

:func:`sandbox.databases.trace.trace` replays a revision and :func:`~sandbox.databases.trace.probe`
checks workspaces' data; :func:`annotate` turns those measurements into the findings' evidence
(locks, rewrites, time held, rows, the data a constraint would fail on).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..databases.sqltext import normalize
from ..databases.trace import LOCK_MODES, TINY_TABLE, ProbeResult, StatementTrace, Trace
from .findings import Finding, default_severity, fails_text

__all__ = ["annotate", "evidence"]


def _table_of(obj: str | None, tables: Iterable[str]) -> str | None:
    if not obj:
        return None
    known = set(tables)
    if obj in known:
        return obj
    parent = obj.rsplit(".", 1)[0]
    return parent if parent in known else None


def _insert_note(message: str, note: str) -> str:
    head, sep, tail = message.partition("; instead: ")
    return f"{head}; {note}{sep}{tail}" if sep else f"{message}; {note}"


def evidence(sts: Sequence[StatementTrace], table: str | None, rows: Mapping[str, int | None]) -> dict[str, Any]:
    """The ``evidence`` of a finding from the statements it matched (JSON-ready)."""
    strongest: dict[str, str] = {}
    # what it took, and what its transaction already held on the finding's table (an earlier
    # statement's lock that this one needs as well: others wait on it meanwhile)
    locks = [lk for st in sts for lk in [*st.locks, *(h for h in st.holding if h.relation == table)]]
    # the locks on tables say it; their indexes' locks (a rewrite takes them all) only when alone
    locks = [lk for lk in locks if lk.kind in ("r", "p", "m")] or locks
    for lk in locks:
        if lk.relation not in strongest or LOCK_MODES.index(lk.mode) > LOCK_MODES.index(strongest[lk.relation]):
            strongest[lk.relation] = lk.mode
    ordered = sorted(strongest.items(), key=lambda kv: (kv[0] != table, -LOCK_MODES.index(kv[1]), kv[0]))
    held = [st.held_ms for st in sts if st.held_ms is not None]
    ev: dict[str, Any] = {"locks": [{"mode": m, "relation": r} for r, m in ordered],
                          "rewrite": any(st.rewrite for st in sts),
                          "held_ms": int(round(max(held))) if held else None}
    count = rows.get(table) if table else None
    if count is None:
        count = next((rows[t] for st in sts for t in st.tables if rows.get(t) is not None), None)
    if count is not None:
        ev["rows"] = count
    ev["statements"] = [st.index for st in sts]
    return ev


def annotate(findings: Sequence[Finding], revision: str, tr: Trace,
             probes: Mapping[tuple[int, int], ProbeResult]) -> list[Finding]:
    """``findings`` with ``evidence`` on those of ``revision`` that match a traced statement, plus a
    ``fails-on-workspace-data`` error for each failing data check that no destructive finding carries.

    Matching: a finding whose ``statement`` is, token for token, a traced statement gets that
    statement's evidence; one without a statement (the catalog diff's) gets the evidence of every
    statement of the revision that touched its table (its ``object``, or the object's parent for a
    column). A data check's result goes to the findings of its statement whose rule it backs, or,
    for a catalog finding, whose rule and object (or table) match it.
    """
    by_text: dict[str, list[StatementTrace]] = {}
    for st in tr.statements:
        by_text.setdefault(normalize(st.text), []).append(st)
    all_tables = set(tr.rows) | {t for st in tr.statements for t in st.tables}
    carried: set[tuple[int, int]] = set()
    out: list[Finding] = []
    for f in findings:
        if f.revision != revision or f.kind not in ("destructive", "lock"):
            out.append(f)
            continue
        table = _table_of(f.object, all_tables)
        if f.statement:
            sts = by_text.get(normalize(f.statement), [])[:1]
            if sts and table is None:
                table = _table_of(f.object, sts[0].tables) or (sts[0].tables[0] if sts[0].tables else None)
        else:
            sts = [st for st in tr.statements if table and table in st.tables]
        if not sts:
            out.append(f)
            continue
        ev = evidence(sts, table, tr.rows)
        fails: dict[str, int] = {}
        checked: set[str] = set()
        probed = False
        for st in sts:
            for i, check in enumerate(st.checks):
                if f.rule not in check.rules or (not f.statement and check.object != f.object and check.table != f.object):
                    continue
                res = probes.get((st.index, i))
                if res is None or res.skipped:
                    continue
                probed = True
                checked |= set(res.checked)
                for ws, n in res.fails_on.items():
                    fails[ws] = max(fails.get(ws, 0), n)
                if f.kind == "destructive":     # an error, or one its author suppressed knowingly
                    carried.add((st.index, i))
        message = f.message
        if probed:
            ev["fails_on"] = dict(sorted(fails.items()))
            ev["checked_on"] = sorted(checked)
            if fails:
                message = _insert_note(message, fails_text(fails))
        rows = ev.get("rows")
        if f.kind == "lock" and isinstance(rows, int) and rows < TINY_TABLE and table:
            ev["small_table"] = True
            message = _insert_note(message, f"on the baseline {table} holds {rows} row{'s' if rows != 1 else ''}, "
                                            "so the lock is short there")
        out.append(f.with_(evidence=ev, message=message))
    for st in tr.statements:
        for i, check in enumerate(st.checks):
            res = probes.get((st.index, i))
            if (st.index, i) in carried or res is None or not res.fails_on:
                continue
            ev = evidence([st], check.table, tr.rows)
            ev["fails_on"] = dict(sorted(res.fails_on.items()))
            ev["checked_on"] = sorted(res.checked)
            out.append(Finding(rule="fails-on-workspace-data", kind="destructive",
                               severity=default_severity("destructive"), revision=revision,
                               statement=normalize(st.text), object=check.object, evidence=ev,
                               message=f"{check.what} exist in live workspaces: the statement "
                               f"{fails_text(res.fails_on)}; fix or clean that data before this merges"))
    return out
