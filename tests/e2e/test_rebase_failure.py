"""Issue #19: a rebase whose database step fails leaves the workspace usable and says why in full;
`sandbox git NAME -- …` runs git in the workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox import Sandbox

from .conftest import add_revision, cli, git, toml_for


@pytest.mark.postgres
def test_rebase_with_a_failing_database_step_keeps_the_workspace_usable(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    cli(repo, "up", "a", "b")
    sb = Sandbox.open(repo)
    ws = {n: Path(sb.record(n).path) for n in "ab"}
    add_revision(ws["a"], "a001", "0001", 'op.add_column("users", sa.Column("nickname", sa.Text()))')
    cli(repo, "merge", "a", timeout=600)
    # b's revision cannot apply (it divides by zero): only its database step can fail
    add_revision(ws["b"], "b001", "0001", 'op.execute("SELECT 1/0")')

    res = cli(repo, "migrate", "rebase", "b", check=1, timeout=600)
    out = res.stdout + res.stderr
    assert "rebased onto main's head" in out and "division by zero" in out, out
    assert "sandbox db reset b" in out, out
    assert "Traceback" not in out, out
    # the files are rebased and committed; the workspace is not broken
    assert 'down_revision = "a001"' in (ws["b"] / "migrations" / "versions" / "b001.py").read_text()
    assert git(ws["b"], "status", "--porcelain") == ""
    rows = {w["name"]: w for w in json.loads(cli(repo, "ls", "--json").stdout)}
    assert rows["b"]["state"] == "ready", rows["b"]

    # git inside the workspace, through sandbox
    log = cli(repo, "git", "b", "--", "log", "--oneline", "-1")
    assert log.stdout.strip(), log.stdout
