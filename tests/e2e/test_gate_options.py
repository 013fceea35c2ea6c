"""The gate's finer points, and the database commands, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from sandbox import Sandbox

from .conftest import add_revision, cli, git, toml_for


@pytest.mark.postgres
def test_dynamic_check_suppressions_allowances_tests_and_dry_run(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    cli(repo, "up", "a")
    sb = Sandbox.open(repo)
    tree = Path(sb.record("a").path)

    # a drop hidden from static analysis (dynamic SQL in a DO block): the catalog diff names it
    add_revision(tree, "a001", "0001",
                 "op.execute(\"DO $$ BEGIN EXECUTE 'ALTER TABLE posts DROP COLUMN title'; END $$\")")
    report = json.loads(cli(repo, "migrate", "check", "a", "--json", check=1).stdout)
    drops = [f for f in report["findings"] if f["rule"] == "drop-column"]
    assert drops and drops[0]["object"] == "public.posts.title" and drops[0]["severity"] == "error"

    # --dry-run runs the whole gate and leaves main alone
    head = git(repo, "rev-parse", "HEAD")
    cli(repo, "merge", "a", "--dry-run", check=1)
    assert git(repo, "rev-parse", "HEAD") == head

    # an inline suppression with a reason lets it through, visibly
    path = tree / "migrations" / "versions" / "a001.py"
    path.write_text(path.read_text().replace(
        "import sqlalchemy as sa\n", "import sqlalchemy as sa\n# sandbox: allow drop-column reason: title moved to headline (#42)\n"))
    git(tree, "commit", "-qam", "suppress")
    report = json.loads(cli(repo, "migrate", "check", "a", "--json").stdout)
    drop = [f for f in report["findings"] if f["rule"] == "drop-column"][0]
    assert report["ok"] and drop["severity"] == "warning" and "headline" in drop["suppressed"]
    assert json.loads(cli(repo, "merge", "a", "--dry-run", "--json").stdout)["ok"]
    assert git(repo, "rev-parse", "HEAD") == head

    # a failing [migrations] test command blocks the merge
    (repo / "sandbox.toml").write_text((repo / "sandbox.toml").read_text()
                                       + '\n[migrations]\ntest = ["psql \\"$DATABASE_URL\\" -c \\"SELECT title FROM posts\\""]\n')
    git(repo, "commit", "-qam", "gate runs a test")
    cli(repo, "sync", "a")
    report = json.loads(cli(repo, "merge", "a", "--json", check=1).stdout)
    assert [f["rule"] for f in report["findings"] if f["severity"] == "error"] == ["tests-failed"]
    (repo / "sandbox.toml").write_text((repo / "sandbox.toml").read_text().replace(
        "SELECT title FROM posts", "SELECT count(*) FROM posts"))
    git(repo, "commit", "-qam", "a test that passes")
    cli(repo, "sync", "a")
    assert json.loads(cli(repo, "merge", "a", "--json").stdout)["merged"]

    # --allow-destructive records who allowed what, and why
    cli(repo, "up", "b")
    tree_b = Path(sb.record("b").path)
    add_revision(tree_b, "b001", "a001", 'op.drop_table("audit_log")')
    cli(repo, "merge", "b", check=1)
    res = json.loads(cli(repo, "merge", "b", "--allow-destructive", "audit log moved to the warehouse",
                         "--json").stdout)
    assert res["merged"] and any(f["rule"] == "drop-table" and f["suppressed"] for f in res["findings"])
    allowed = sb.registry.allowances()
    assert allowed[-1]["workspace"] == "b" and allowed[-1]["revisions"] == ["b001"]
    assert allowed[-1]["reason"] == "audit log moved to the warehouse" and "drop-table public.audit_log" in allowed[-1]["rules"]
    assert cli(repo, "merge", "b", "--allow-destructive", " ", check=2).returncode == 2


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["template", "snapshot"])
def test_database_commands(demo_factory, need_pg, strategy: str) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for(strategy))
    cli(repo, "up", "a")
    url = cli(repo, "db", "url", "a").stdout.strip()
    assert url.startswith("postgresql://") and url == Sandbox.open(repo).db_url("a")

    def q(sql: str) -> list[tuple]:
        with psycopg.connect(url) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    q("DELETE FROM posts")
    cli(repo, "db", "checkpoint", "a", "empty-posts")
    q("INSERT INTO posts (user_id, title) VALUES (1, 'x'), (2, 'y'), (3, 'z')")
    assert [c["label"] for c in json.loads(cli(repo, "db", "checkpoints", "a", "--json").stdout)] == ["empty-posts"]
    cli(repo, "db", "restore", "a", "empty-posts")
    assert q("SELECT count(*) FROM posts") == [(0,)]
    cli(repo, "db", "restore", "a", "nope", check=2)
    cli(repo, "db", "checkpoint", "a", "bad label", check=2)
    cli(repo, "db", "reset", "a")
    url = cli(repo, "db", "url", "a").stdout.strip()
    assert q("SELECT count(*) FROM posts") == [(2,)]
    res = cli(repo, "db", "psql", "a", check=None)
    assert res.returncode == 0
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "sandbox", "--project", str(repo), "db", "psql", "a"],
                         input="SELECT 40 + 2;\n", capture_output=True, text=True)
    assert out.returncode == 0 and "42" in out.stdout
    # the managed .env block in the worktree carries the same credentials, and the user's lines stay
    env_file = Path(Sandbox.open(repo).record("a").path) / ".env"
    assert "DATABASE_URL=" in env_file.read_text() and oct(env_file.stat().st_mode & 0o777) == "0o600"
