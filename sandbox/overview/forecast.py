"""The pairwise forecast: for two workspaces, what merging both will do, in the code and in the
database, with a risk and a sentence each. Pure: it reads facts gathered elsewhere
(:mod:`.gather`); ``uses`` is the one question that needs git (which of a workspace's changed
files use an object), passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .model import FindingKind, Pair, PairFinding, Risk
from .schema import SchemaFact, WorkspaceSchema


@dataclass(frozen=True)
class Side:
    """One workspace as the forecast sees it."""

    name: str
    paths: frozenset[str]              # changed against main: commits and uncommitted files
    uncommitted: frozenset[str]        # the uncommitted part of ``paths``
    schema: WorkspaceSchema


UsesFn = Callable[[Side, SchemaFact], list[str]]


def textual(a: Side, b: Side, conflicts: Sequence[str]) -> list[PairFinding]:
    """Overlapping paths and predicted conflicts, the uncommitted ones told apart."""
    out: list[PairFinding] = []
    overlap = sorted(a.paths & b.paths)
    committed = [p for p in conflicts if p not in a.uncommitted and p not in b.uncommitted]
    loose = [p for p in conflicts if p not in committed]
    if committed:
        out.append(PairFinding(
            FindingKind.CONFLICT, Risk.HIGH,
            f"{a.name} and {b.name} both change {_list(committed)}: whichever merges second will "
            f"stop on a conflict; agree who owns {'it' if len(committed) == 1 else 'them'}, or merge one "
            f"and run `sandbox sync` in the other before going on", tuple(committed)))
    if loose:
        who = sorted({s.name for s in (a, b) for p in loose if p in s.uncommitted})
        out.append(PairFinding(
            FindingKind.UNCOMMITTED_CONFLICT, Risk.HIGH,
            f"uncommitted work in {_and(who)} conflicts with the other on {_list(loose)}: once "
            f"committed, the second to merge will stop on a conflict; talk before committing it",
            tuple(loose), by=who[0] if len(who) == 1 else None))
    quiet = [p for p in overlap if p not in conflicts]
    if quiet:
        out.append(PairFinding(
            FindingKind.OVERLAP, Risk.LOW,
            f"both touch {_list(quiet)}, and git merges the changes cleanly; review the second merge "
            f"with the first in mind", tuple(quiet)))
    return out


def schema(a: Side, b: Side, uses: UsesFn) -> list[PairFinding]:
    """Schema collisions between two workspaces' revisions (both directions)."""
    out: list[PairFinding] = []
    for mine, other in ((a, b), (b, a)):
        for fact in mine.schema.facts:
            if fact.verb == "add":
                continue
            files = uses(other, fact)
            in_revs = [r.id for r in other.schema.revisions
                       if r.sql and all(_word_in(w, r.sql) for w in fact.words)]
            if not files and not in_revs:
                continue
            where = _list(files) if files else f"revision {_and(in_revs)}"
            out.append(PairFinding(
                FindingKind.SCHEMA_BREAKS, Risk.HIGH,
                f"{mine.name}'s revision {fact.revision} will {fact.verb} {fact.object}, which {other.name}'s "
                f"{where} still use{'s' if len(files) + len(in_revs) == 1 else ''}: if {mine.name} merges "
                f"first, {other.name} breaks; make the change additive (deprecate, then drop after "
                f"{other.name} merges) or update {other.name} first",
                tuple(files), fact.object, fact.revision, mine.name))
    added_a = {f.object: f for f in a.schema.facts if f.verb == "add"}
    for f in b.schema.facts:
        if f.verb == "add" and f.object in added_a:
            out.append(PairFinding(
                FindingKind.SCHEMA_SAME_OBJECT, Risk.HIGH,
                f"{a.name} ({added_a[f.object].revision}) and {b.name} ({f.revision}) both add {f.object}: "
                f"the second to merge fails when it creates it again; let one of them own it",
                (), f.object, f.revision))
    ra, rb = a.schema, b.schema
    if ra.revisions and rb.revisions and ra.root_revises == rb.root_revises:
        out.append(PairFinding(
            FindingKind.SCHEMA_SAME_HEAD, Risk.MEDIUM,
            f"both revise {ra.root_revises or 'the base'}: whoever merges second must run "
            f"`sandbox migrate rebase` to put its revisions on the new head",
            (), None, None))
    return out


def pair(a: Side, b: Side, conflicts: Sequence[str], uses: UsesFn) -> Pair:
    findings = textual(a, b, conflicts) + schema(a, b, uses)
    return Pair(a.name, b.name, tuple(sorted(a.paths & b.paths)), tuple(conflicts), tuple(findings))


def _word_in(word: str, text: str) -> bool:
    import re
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(word)}(?![A-Za-z0-9_])", text) is not None


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _list(paths: Sequence[str], limit: int = 3) -> str:
    shown = list(paths)[:limit]
    more = len(paths) - len(shown)
    return _and(shown) + (f" (and {more} more)" if more else "")
