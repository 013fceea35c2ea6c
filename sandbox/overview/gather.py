"""Gathering the overview: a fixed handful of git processes for any number of workspaces.

For N workspaces: one ``for-each-ref`` (after collecting Docker workspaces' commits), three for
ahead/behind, three or four per workspace for its working tree as a throwaway commit (sandbox's
own index, kept between runs), one ``git diff --numstat`` per distinct tip, one ``cat-file`` to
verify every tip, and one ``merge-tree --stdin`` for every merge into main and every pair that
touches a common path. Schema facts come from :mod:`.schema` (cached by content).
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import SandboxError
from ..git.forecast import Snapshot, diffstats, grep_words, merge_pairs, snapshot, user_excludes, verify_commits
from ..git.main import AheadBehind, MainRepo
from ..registry import WorkspaceRecord
from . import forecast, gates
from .model import GateResult, GateState, Overview, Pair, WorkspaceView
from .schema import SchemaFact, SchemaReader, WorkspaceSchema


@dataclass(frozen=True)
class Sources:
    """What the overview reads, handed over by the facade (no ``Sandbox`` here)."""

    root: Path
    main: MainRepo
    records: Sequence[WorkspaceRecord]
    collect: Callable[[WorkspaceRecord], None]      # fetch a Docker workspace's commits into main
    managed: tuple[str, ...]                         # files sandbox writes into worktrees
    meta: gates.MetaStore
    schema: SchemaReader | None
    env_for: Callable[[WorkspaceRecord], Mapping[str, str]]
    index_dir: Path                                  # sandbox's own indexes (in main's git dir)
    brief_for: Callable[[str], str | None] | None = None
    request_for: Callable[[str], dict[str, object] | None] | None = None    # its open merge request


LIVE = ("ready", "stopped")
WORKERS = 4          # git processes at once (each mostly waits on the file system)


def gather(src: Sources) -> Overview:
    main_branch = src.main.main_branch()
    notes: dict[str, list[str]] = {r.name: [] for r in src.records}
    live = [r for r in src.records if r.state in LIVE]
    for rec in live:
        try:
            src.collect(rec)
        except SandboxError as exc:
            notes[rec.name].append(f"its repository could not be read: {exc}")
    shas = src.main.branch_shas()
    main_sha = shas.get(main_branch) or src.main.rev(main_branch)
    tips = {r.name: shas[r.branch] for r in live if r.branch in shas}
    verified = verify_commits(src.root, [main_sha, *tips.values()])
    tips = {n: s for n, s in tips.items() if s in verified.values()}
    snaps = _snapshots(src, live, tips, notes)
    ab = src.main.ahead_behind([r.branch for r in live if r.name in tips], main_branch)
    stats = diffstats(src.root, main_sha, {n: s.commit for n, s in snaps.items()})
    schemas: dict[str, WorkspaceSchema] = {}
    if src.schema is not None:
        for rec in live:
            if rec.name in tips:
                schemas[rec.name] = src.schema.read(tips[rec.name], src.env_for(rec))
        src.schema.save()
    names = [r.name for r in live if r.name in snaps]
    sides = {n: forecast.Side(n, frozenset(stats[n].paths),
                              frozenset(snaps[n].changed) | frozenset(snaps[n].untracked),
                              schemas.get(n, WorkspaceSchema())) for n in names}
    into_main = [(main_sha, tips[n]) for n in names]
    candidates = [(a, b) for a, b in itertools.combinations(names, 2) if sides[a].paths & sides[b].paths]
    merged = merge_pairs(src.root, into_main + [(snaps[a].commit, snaps[b].commit) for a, b in candidates])
    main_merge = dict(zip(names, merged[:len(names)], strict=True))
    pair_conflicts = {(a, b): m.conflicts for (a, b), m in zip(candidates, merged[len(names):], strict=True)}

    hits: dict[tuple[str, ...], dict[str, list[str]]] = {}

    def uses(side: forecast.Side, fact: SchemaFact) -> list[str]:
        """Files of ``side`` that name the object: one grep per object over every workspace."""
        key = tuple(fact.words)
        if key not in hits:
            hits[key] = grep_words(src.root, {snaps[n].commit: sorted(sides[n].paths) for n in names}, fact.words)
        return hits[key].get(snaps[side.name].commit, [])

    pairs: list[Pair] = [forecast.pair(sides[a], sides[b], pair_conflicts.get((a, b), ()), uses)
                         for a, b in itertools.combinations(names, 2)]
    views = []
    for rec in src.records:
        views.append(_view(src, rec, tips.get(rec.name), snaps.get(rec.name), ab, stats, schemas,
                           main_merge.get(rec.name), notes[rec.name]))
    head = src.schema.main_head if src.schema is not None else None
    enabled = src.schema is not None and src.schema.enabled
    return Overview(main_branch, main_sha, head, tuple(views), tuple(pairs), enabled)


def _snapshots(src: Sources, live: Sequence[WorkspaceRecord], tips: Mapping[str, str],
               notes: dict[str, list[str]]) -> dict[str, Snapshot]:
    """Every workspace's working tree as a commit, a few at a time (each is 2-4 git processes)."""
    out: dict[str, Snapshot] = {}
    mine = user_excludes(src.root)

    def one(rec: WorkspaceRecord, tip: str) -> Snapshot:
        try:
            return snapshot(src.root, src.index_dir / f"{rec.name}.index", Path(rec.path), tip, exclude=src.managed,
                            also_excluded=mine)
        except SandboxError as exc:
            notes[rec.name].append(f"its uncommitted work could not be read: {exc}")
            return Snapshot(tip, tip)

    jobs = []
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for rec in live:
            tip = tips.get(rec.name)
            if tip is None:
                notes[rec.name].append(f"branch {rec.branch!r} is not in main's repository")
                continue
            jobs.append((rec.name, pool.submit(one, rec, tip)))
        for name, job in jobs:
            out[name] = job.result()
    return out


def _view(src: Sources, rec: WorkspaceRecord, tip: str | None, snap: Snapshot | None,
          ab: Mapping[str, AheadBehind], stats: Mapping[str, object], schemas: Mapping[str, WorkspaceSchema],
          into_main: object, notes: list[str]) -> WorkspaceView:
    from ..git.forecast import DiffStat, MergeForecast
    stat = stats.get(rec.name)
    stat = stat if isinstance(stat, DiffStat) else DiffStat()
    sch = schemas.get(rec.name, WorkspaceSchema())
    merge = into_main if isinstance(into_main, MergeForecast) else None
    counts = ab.get(rec.branch, AheadBehind(0, 0))
    gate = gates.last(src.meta, rec.name, tip) if tip else GateResult(GateState.NEVER)
    brief = src.brief_for(rec.name) if src.brief_for is not None else None
    return WorkspaceView(
        rec.name, rec.branch, rec.state, tip, counts.ahead, counts.behind,
        snap.changed if snap else (), snap.untracked if snap else (), stat.paths, stat.added, stat.removed,
        tuple(r.id for r in sch.revisions), sch.root_revises, sch.on_main_head, gate,
        merge.clean if merge else None, merge.conflicts if merge else (), brief,
        tuple(notes) + sch.notes + tuple(f"{r.id}: {r.note}" for r in sch.revisions if r.note))


def review(src: Sources, name: str) -> dict[str, object]:
    """What a reviewer needs before merging ``name``: its diff against main (its branch, as the
    merge would take it), its new revisions with their SQL, its last gate report with the
    evidence, and its open merge request."""
    from ..errors import UnknownWorkspace
    from ..git.forecast import show_diff
    rec = next((r for r in src.records if r.name == name), None)
    if rec is None:
        raise UnknownWorkspace(name)
    with_notes: list[str] = []
    try:
        src.collect(rec)
    except SandboxError as exc:
        with_notes.append(f"its repository could not be read: {exc}")
    main_branch = src.main.main_branch()
    shas = src.main.branch_shas()
    main_sha = shas.get(main_branch) or src.main.rev(main_branch)
    tip = shas.get(rec.branch)
    sch = src.schema.read(tip, src.env_for(rec)) if src.schema is not None and tip else WorkspaceSchema()
    if src.schema is not None:
        src.schema.save()
    gate = gates.last(src.meta, name, tip) if tip else GateResult(GateState.NEVER)
    return {"name": name, "branch": rec.branch, "commit": tip, "main": main_sha,
            "brief": src.brief_for(name) if src.brief_for is not None else None,
            "diff": show_diff(src.root, main_sha, tip) if tip else "",
            "revisions": [{**r.to_json(), "sql": r.sql} for r in sch.revisions],
            "gate": gate.to_json(full=True),
            "merge_request": src.request_for(name) if src.request_for is not None else None,
            "notes": with_notes}
