"""The text form of a finding's replay evidence, and its JSON."""

from __future__ import annotations

from sandbox.migrations.findings import Finding, describe_evidence, fails_text


def test_the_issue_example_reads_as_written() -> None:
    ev = {"locks": [{"mode": "AccessExclusiveLock", "relation": "public.users"}], "rewrite": True,
          "held_ms": 2400, "rows": 1200000}
    assert describe_evidence(ev) == \
        "took ACCESS EXCLUSIVE on public.users for 2.4 s and rewrote it (1.2 M rows) on the baseline"


def test_modes_durations_counts_and_weak_locks() -> None:
    ev = {"locks": [{"mode": "ShareRowExclusiveLock", "relation": "public.posts"},
                    {"mode": "ShareUpdateExclusiveLock", "relation": "public.users"},
                    {"mode": "AccessShareLock", "relation": "public.orgs"}],
          "rewrite": False, "held_ms": 12, "rows": 1}
    # the weak lock is left out once stronger ones are listed
    assert describe_evidence(ev) == ("took SHARE ROW EXCLUSIVE on public.posts and SHARE UPDATE EXCLUSIVE on "
                                     "public.users for 12 ms (1 row) on the baseline")
    assert describe_evidence({"locks": [{"mode": "AccessShareLock", "relation": "public.a"}], "rows": 12500}) == \
        "took ACCESS SHARE on public.a (12.5 k rows) on the baseline"
    assert describe_evidence({"locks": [], "held_ms": None, "rows": 1_000_000}) == "ran (1 M rows) on the baseline"


def test_data_checks() -> None:
    assert fails_text({"d": 3}) == "would fail on workspace d (3 rows)"
    assert fails_text({"e": 1, "d": 3, "f": 2000}) == \
        "would fail on workspaces d (3 rows), e (1 row) and f (2 k rows)"
    ev = {"locks": [{"mode": "AccessExclusiveLock", "relation": "public.posts"}], "held_ms": 3,
          "fails_on": {"d": 3}, "checked_on": ["d", "e"]}
    assert describe_evidence(ev).endswith("on the baseline; would fail on workspace d (3 rows)")
    assert describe_evidence({**ev, "fails_on": {}}).endswith("; the data of d, e satisfies it")


def test_json_carries_evidence_only_when_set() -> None:
    f = Finding(rule="set-not-null", kind="destructive", severity="error", message="m")
    assert "evidence" not in f.to_json()
    g = f.with_(evidence={"rewrite": False, "fails_on": {}})
    assert g.to_json()["evidence"] == {"rewrite": False, "fails_on": {}}
    assert hash(g) == hash(f) and g == f       # evidence is data about a finding, not part of its identity
