"""The pairwise forecast (pure): textual findings, schema collisions, risk, the MCP filter, and the
schema facts drawn from SQL."""

from __future__ import annotations

from sandbox.overview import forecast
from sandbox.overview.model import FindingKind, GateState, Overview, Risk, WorkspaceView
from sandbox.overview.schema import RevisionInfo, SchemaFact, WorkspaceSchema, facts_of


def side(name: str, paths: set[str] = frozenset(), uncommitted: set[str] = frozenset(),  # type: ignore[assignment]
         schema: WorkspaceSchema | None = None) -> forecast.Side:
    return forecast.Side(name, frozenset(paths), frozenset(uncommitted), schema or WorkspaceSchema())


def nobody_uses(_side: forecast.Side, _fact: SchemaFact) -> list[str]:
    return []


def test_committed_conflict_is_high_with_a_sentence() -> None:
    p = forecast.pair(side("a", {"f.py"}), side("b", {"f.py"}), ["f.py"], nobody_uses)
    assert p.risk is Risk.HIGH and p.conflicts == ("f.py",)
    [f] = p.findings
    assert f.kind is FindingKind.CONFLICT and "f.py" in f.message and "sync" in f.message


def test_a_conflict_on_uncommitted_work_is_told_apart() -> None:
    p = forecast.pair(side("e", {"f.py"}, {"f.py"}), side("a", {"f.py"}), ["f.py"], nobody_uses)
    [f] = p.findings
    assert f.kind is FindingKind.UNCOMMITTED_CONFLICT and f.by == "e" and "uncommitted work in e" in f.message


def test_clean_overlap_is_low_and_disjoint_work_is_nothing() -> None:
    p = forecast.pair(side("a", {"f.py", "g.py"}), side("b", {"g.py"}), [], nobody_uses)
    assert p.risk is Risk.LOW and [f.kind for f in p.findings] == [FindingKind.OVERLAP]
    q = forecast.pair(side("a", {"f.py"}), side("c", {"h.py"}), [], nobody_uses)
    assert q.risk is Risk.NONE and q.findings == () and q.to_json()["findings"] == []


def test_a_drop_the_other_code_uses_is_a_schema_collision_naming_the_column() -> None:
    drop = SchemaFact("d1", "drop", "public.users.email", "drop-column", "ALTER TABLE users DROP COLUMN email")
    d = side("d", {"migrations/versions/d1.py"},
             schema=WorkspaceSchema((RevisionInfo("d1", ("0001",), "ALTER TABLE users DROP COLUMN email", (drop,)),),
                                    "0001"))
    b = side("b", {"app/report.py"})
    seen: list[tuple[str, list[str]]] = []

    def uses(s: forecast.Side, fact: SchemaFact) -> list[str]:
        seen.append((s.name, fact.words))
        return ["app/report.py"] if s.name == "b" else []

    p = forecast.pair(d, b, [], uses)
    [f] = p.findings
    assert f.kind is FindingKind.SCHEMA_BREAKS and f.object == "public.users.email" and f.by == "d"
    assert "public.users.email" in f.message and "app/report.py" in f.message
    assert ("b", ["users", "email"]) in seen
    assert p.to_json()["schema_collision"] is True


def test_same_object_added_twice_and_same_head() -> None:
    def ws(name: str, rev: str) -> forecast.Side:
        fact = SchemaFact(rev, "add", "public.posts.tag", "add")
        return side(name, schema=WorkspaceSchema((RevisionInfo(rev, ("0001",), "", (fact,)),), "0001"))

    p = forecast.pair(ws("a", "a1"), ws("b", "b1"), [], nobody_uses)
    kinds = {f.kind for f in p.findings}
    assert kinds == {FindingKind.SCHEMA_SAME_OBJECT, FindingKind.SCHEMA_SAME_HEAD}
    assert p.risk is Risk.HIGH
    rebase = next(f for f in p.findings if f.kind is FindingKind.SCHEMA_SAME_HEAD)
    assert rebase.risk is Risk.MEDIUM and "migrate rebase" in rebase.message


def test_a_revision_of_the_other_using_the_dropped_column_counts() -> None:
    drop = SchemaFact("d1", "drop", "public.users.email", "drop-column")
    d = side("d", schema=WorkspaceSchema((RevisionInfo("d1", ("0001",), "", (drop,)),), "0001"))
    other = side("x", schema=WorkspaceSchema(
        (RevisionInfo("x1", ("0002",), "CREATE INDEX ix ON users (email)", ()),), "0002"))
    [f] = forecast.pair(d, other, [], nobody_uses).findings
    assert f.kind is FindingKind.SCHEMA_BREAKS and "revision x1" in f.message


def test_facts_of_sql() -> None:
    facts = facts_of("ALTER TABLE users DROP COLUMN email; ALTER TABLE users RENAME COLUMN a TO b; "
                     "CREATE TABLE t (id int); ALTER TABLE posts ADD COLUMN tag text;", "r1")
    got = {(f.verb, f.object) for f in facts}
    assert ("drop", "public.users.email") in got and ("rename", "public.users.a") in got
    assert ("add", "public.t") in got and ("add", "public.posts.tag") in got


def test_for_workspace_keeps_only_its_pairs() -> None:
    a, b, c = (side(n, {"f"}) for n in "abc")
    pairs = (forecast.pair(a, b, [], nobody_uses), forecast.pair(a, c, [], nobody_uses),
             forecast.pair(b, c, [], nobody_uses))
    views = tuple(WorkspaceView(n, n, "ready", "0" * 40) for n in "abc")
    ov = Overview("main", "1" * 40, "0001", views, pairs)
    assert [(p.a, p.b) for p in ov.for_workspace("c").pairs] == [("a", "c"), ("b", "c")]
    data = ov.to_json()
    assert data["main"] == {"branch": "main", "commit": "1" * 40, "head": "0001"}
    assert data["workspaces"][0]["gate"]["state"] == GateState.NEVER.value
