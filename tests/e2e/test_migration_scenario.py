"""The scenario of DEVELOPERS.md, end to end, on real git, real alembic and real Postgres:

four workspaces; A adds a column and merges; B's migration was written on the old head, so
the gate says *behind* and `rebase` fixes it; C drops a table that D's code seeds, so the gate
blocks and names D; two merges race and both end correct; main ends with one linear head.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from sandbox import Sandbox

from .conftest import GIT_ENV, add_revision, cli, git, toml_for

STRATEGIES = [
    pytest.param("template", id="template"),
    pytest.param("schema", id="schema"),
    pytest.param("snapshot", id="snapshot"),
]


def columns(sb: Sandbox, ws: str, table: str) -> set[str]:
    info = sb.conninfo(ws)
    with psycopg.connect(**info.kwargs()) as conn:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                            "AND table_schema = current_schema()", (table,)).fetchall()
    return {r[0] for r in rows}


def findings(res: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    data = json.loads(res.stdout)
    return {f["rule"]: f for f in data["findings"]}


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_four_workspaces_scenario(demo_factory, need_pg, strategy: str) -> None:  # type: ignore[no-untyped-def]
    if strategy == "snapshot":
        import os

        from conftest import service_missing
        if os.geteuid() != 0:
            service_missing("copy-on-write storage: the snapshot strategy provisions a btrfs pool as root")
    repo = demo_factory(toml_for(strategy))
    cli(repo, "up", "a", "b", "c", "d")
    sb = Sandbox.open(repo)
    ws = {n: Path(sb.record(n).path) for n in "abcd"}

    # every workspace has its own database with the seed data
    for n in "abcd":
        with psycopg.connect(**sb.conninfo(n).kwargs()) as conn:
            assert conn.execute("SELECT count(*) FROM users").fetchone() == (3,)

    add_revision(ws["a"], "a001", "0001", 'op.add_column("users", sa.Column("nickname", sa.Text()))')
    add_revision(ws["b"], "b001", "0001", 'op.add_column("posts", sa.Column("body", sa.Text()))')
    add_revision(ws["c"], "c001", "0001", 'op.drop_table("audit_log")')
    seed = ws["d"] / "app" / "seed_audit.py"
    seed.write_text('def seed(conn):\n    conn.execute("INSERT INTO audit_log (event) VALUES (\'seeded\')")\n')
    git(ws["d"], "add", "-A")
    git(ws["d"], "commit", "-q", "-m", "d seeds the audit log")
    with psycopg.connect(**sb.conninfo("d").kwargs()) as conn:
        conn.execute("INSERT INTO audit_log (id, event) VALUES (1, 'seeded')")

    # status warns early: a, b and c all build on 0001
    status = json.loads(cli(repo, "migrate", "status", "--json").stdout)
    rows = {w["name"]: w for w in status["workspaces"]}
    assert status["main_head"] == "0001"
    assert rows["a"]["new"] == ["a001"] and any("same head" in c for c in rows["a"]["conflicts"])

    # A merges
    merged = json.loads(cli(repo, "merge", "a", "--json").stdout)
    assert merged["ok"] and merged["merged"] and merged["revisions"] == ["a001"]
    assert sb.tool.heads(repo) == ["a001"]
    assert "nickname" in _baseline_columns(sb, "users")

    # B is behind: the gate says so, rebase fixes it
    ls = {w["name"]: w for w in json.loads(cli(repo, "ls", "--json").stdout)}
    assert ls["b"]["migrations"]["behind"] == 1 and ls["b"]["migrations"]["base_head"] == "a001"
    check_b = cli(repo, "migrate", "check", "b", "--json", check=1)
    assert findings(check_b)["behind"]["kind"] == "ordering"
    assert findings(check_b)["behind"]["revision"] == "b001"
    cli(repo, "merge", "b", check=1)
    before = (ws["b"] / "migrations" / "versions" / "b001.py").read_text()
    cli(repo, "migrate", "rebase", "b")
    after = (ws["b"] / "migrations" / "versions" / "b001.py").read_text()
    changed = [(x, y) for x, y in zip(before.splitlines(), after.splitlines()) if x != y]
    assert changed == [("Revises: 0001", "Revises: a001"), ('down_revision = "0001"', 'down_revision = "a001"')]
    assert git(ws["b"], "status", "--porcelain") == ""
    assert {"nickname"} <= columns(sb, "b", "users") and "body" in columns(sb, "b", "posts")
    assert json.loads(cli(repo, "migrate", "check", "b", "--json").stdout)["ok"]
    assert json.loads(cli(repo, "merge", "b", "--json").stdout)["merged"]

    # C drops the table D seeds: blocked, D named, main untouched
    main_before = git(repo, "rev-parse", "HEAD")
    cli(repo, "sync", "c")
    check_c = cli(repo, "merge", "c", "--json", check=1)
    drop = findings(check_c)["drop-table"]
    assert drop["kind"] == "destructive" and drop["severity"] == "error"
    assert drop["object"] == "public.audit_log" and drop["affected_workspaces"] == ["d"]
    assert git(repo, "rev-parse", "HEAD") == main_before

    # two merges race: both end correct, main keeps one linear head
    cli(repo, "up", "e", "f")
    head = sb.tool.heads(repo)[0]
    add_revision(Path(sb.record("e").path), "e001", head, 'op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True))')
    add_revision(Path(sb.record("f").path), "f001", head, 'op.add_column("users", sa.Column("bio", sa.Text()))')
    procs = [subprocess.Popen([sys.executable, "-m", "sandbox", "-q", "--project", str(repo), "merge", n, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, **GIT_ENV})
             for n in ("e", "f")]
    results = [(p.wait(timeout=300), json.loads(p.stdout.read() or "{}")) for p in procs]  # type: ignore[union-attr]
    winners = [r for code, r in results if code == 0 and r.get("merged")]
    losers = [r for code, r in results if code == 1]
    assert len(winners) == 1 and len(losers) == 1, results
    loser = losers[0]["workspace"]
    assert {f["rule"] for f in losers[0]["findings"]} & {"behind", "branch-behind-main"}
    cli(repo, "sync", loser)
    assert json.loads(cli(repo, "merge", loser, "--json").stdout)["merged"]

    heads = sb.tool.heads(repo)
    assert len(heads) == 1
    chain = [r.id for r in sb.tool.chain(repo, None, heads[0])]
    assert chain[:3] == ["0001", "a001", "b001"] and set(chain[3:]) == {"e001", "f001"}
    assert sb.registry.get_meta("baseline_head") == heads[0]
    assert "bio" in _baseline_columns(sb, "users")
    # a, which merged first, is now behind main by the three later revisions
    ls = {w["name"]: w for w in json.loads(cli(repo, "ls", "--json").stdout)}
    assert ls["a"]["migrations"]["behind"] == 3


def _baseline_columns(sb: Sandbox, table: str) -> set[str]:
    info = sb.db.baseline()
    with psycopg.connect(**info.kwargs()) as conn:
        rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                            "AND table_schema = current_schema()", (table,)).fetchall()
    return {r[0] for r in rows}
