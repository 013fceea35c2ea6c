"""The gate's pure parts: revision chains, the report's typed fields, the deadline, and the
status rows' JSON (``sandbox.migrations.trees``, ``findings``, ``gate.clock``, ``status``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sandbox.migrations.base import Revision
from sandbox.migrations.findings import Finding, Report
from sandbox.migrations.gate.clock import GateClock, GateTimeout
from sandbox.migrations.gate.static import lint_report
from sandbox.migrations.status import MigrateStatus, MigrationSummary
from sandbox.migrations.trees import behind_count, chain_order, roots


def rev(rid: str, *down: str) -> Revision:
    return Revision(id=rid, down_revisions=tuple(down), path=Path(f"{rid}.py"))


MAIN = {r.id: r for r in (rev("a"), rev("b", "a"), rev("c", "b"))}


def test_new_revisions_come_after_what_they_revise() -> None:
    new = {r.id: r for r in (rev("z2", "z1"), rev("z1", "c"), rev("y", "z2"))}
    assert [r.id for r in chain_order(new)] == ["z1", "z2", "y"]
    assert [r.id for r in roots(chain_order(new))] == ["z1"]


def test_behind_counts_main_revisions_after_the_base() -> None:
    assert behind_count(MAIN, "c", "a") == 2
    assert behind_count(MAIN, "c", "c") == 0
    assert behind_count(MAIN, "c", "elsewhere") == 0       # a parent main does not have: no count
    assert behind_count(MAIN, None, "a") == 0


def test_report_json_has_the_typed_fields_only_when_set() -> None:
    report = Report(workspace="w")
    assert set(report.to_json()) == {"ok", "workspace", "base_head", "revisions", "findings"}
    report.note()
    report.judged, report.branch, report.dry_run = "abc", "w", False
    report.allowed = ["drop-table public.t"]
    report.extend([Finding(rule="drop-table", kind="destructive", severity="warning", message="m")])
    data = report.to_json()
    assert data["notes"] == [] and data["judged"] == "abc" and data["branch"] == "w"
    assert data["dry_run"] is False and data["allowed"] == ["drop-table public.t"] and data["ok"] is True
    assert "commit" not in data and "baseline_error" not in data and "merged" not in data
    report.merged, report.commit = True, "def"
    assert report.to_json()["merged"] is True and report.to_json()["commit"] == "def"


def test_lint_report_notes_only_without_markers() -> None:
    assert "notes" not in lint_report("-- Running upgrade  -> a1\nCREATE TABLE t (id int);\n").to_json()
    assert len(lint_report("ALTER TABLE t ADD COLUMN c int;").to_json()["notes"]) == 1


def test_the_gate_clock_stops_once_past_its_deadline() -> None:
    clock = GateClock("15m")
    assert clock.left("starting") > 60 and not clock.expired()
    clock._deadline = time.monotonic() - 1          # as if 15 minutes had passed
    with pytest.raises(GateTimeout) as exc:
        clock.left("replaying")
    assert exc.value.doing == "replaying" and clock.expired()
    report = Report()
    clock.timed_out(report, "replaying")
    clock.timed_out(report, "replaying")
    assert [f.rule for f in report.findings] == ["gate-timeout"]


def test_status_json_keeps_the_contract_shape() -> None:
    empty = MigrationSummary(base_head="c", name="w", conflicts=[])
    full = MigrationSummary(head="z", heads=["z"], base_head="c", new=["z"], root_revises="b", behind=1,
                            name="v", conflicts=["behind main by 1"])
    data = MigrateStatus("c", ["c"], "c", [empty, full]).to_json()
    assert data["workspaces"][0] == {"head": None, "base_head": "c", "new": [], "behind": 0, "name": "w",
                                     "conflicts": []}
    assert data["workspaces"][1]["root_revises"] == "b" and data["workspaces"][1]["heads"] == ["z"]
    assert "message" not in data
