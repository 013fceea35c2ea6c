"""Ordering problems the gate names, and sync's clean refusal on a git conflict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox import Sandbox

from .conftest import add_revision, cli, git, toml_for


def rules(res) -> set[str]:  # type: ignore[no-untyped-def]
    return {f["rule"] for f in json.loads(res.stdout)["findings"] if f["severity"] == "error"}


@pytest.mark.postgres
def test_duplicate_ids_merge_revisions_branch_points_and_sync_conflicts(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    cli(repo, "up", "a", "b", "c")
    sb = Sandbox.open(repo)
    tree = {n: Path(sb.record(n).path) for n in "abc"}

    # the same revision id created in two workspaces
    add_revision(tree["a"], "dup1", "0001", 'op.add_column("users", sa.Column("x", sa.Text()))')
    add_revision(tree["b"], "dup1", "0001", 'op.add_column("users", sa.Column("y", sa.Text()))')
    status = {w["name"]: w for w in json.loads(cli(repo, "migrate", "status", "--json").stdout)["workspaces"]}
    assert any("also created in b" in c for c in status["a"]["conflicts"])
    assert "duplicate-revision-id" in rules(cli(repo, "migrate", "check", "a", "--json", check=1))

    # two heads and a merge revision where a linear chain would do
    add_revision(tree["c"], "c1", "0001", 'op.add_column("posts", sa.Column("p", sa.Text()))')
    add_revision(tree["c"], "c2", "0001", 'op.add_column("posts", sa.Column("q", sa.Text()))')
    found = rules(cli(repo, "migrate", "check", "c", "--json", check=1))
    assert {"multiple-heads", "branch-point"} <= found
    path = tree["c"] / "migrations" / "versions" / "c3.py"
    add_revision(tree["c"], "c3", "0001", "pass", commit=False)
    path.write_text(path.read_text().replace('down_revision = "0001"', 'down_revision = ("c1", "c2")'))
    git(tree["c"], "add", "-A")
    git(tree["c"], "commit", "-qm", "merge revision")
    assert "merge-revision" in rules(cli(repo, "migrate", "check", "c", "--json", check=1))

    # sync reports a git conflict and leaves nothing half-done
    (tree["b"] / "app" / "report.py").write_text("print('b')\n")
    git(tree["b"], "commit", "-qam", "b edits report")
    (repo / "app" / "report.py").write_text("print('main')\n")
    git(repo, "commit", "-qam", "main edits report")
    before = git(tree["b"], "rev-parse", "HEAD")
    res = cli(repo, "sync", "b", check=1)
    assert "conflicts in app/report.py" in res.stderr and "nothing was changed" in res.stderr
    assert git(tree["b"], "rev-parse", "HEAD") == before
    assert git(tree["b"], "status", "--porcelain") == ""
    assert not (Path(git(tree["b"], "rev-parse", "--git-dir").strip()) / "MERGE_HEAD").exists()
