"""What runs online is what the gate judges (issue 15, items 2 and 10).

One Docker project (template strategy, Docker server, alembic in the project's image) whose
`[migrations] statement_timeout` is 3 s. Each workspace commits one hostile revision:

- ``od``: drops a column only when alembic runs online (``getattr(ctx, "as_" "sql")``, which no byte
  search for ``as_sql`` finds); its offline SQL is innocent;
- ``dl``: ``DELETE FROM posts WHERE id > 0`` on the seeded table;
- ``ru``: ``CREATE RULE … DO INSTEAD NOTHING`` on a seeded table;
- ``fr``: ``FORCE ROW LEVEL SECURITY`` (and a policy that hides every row) on a seeded table;
- ``sl``: ``SELECT pg_sleep(100)``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e.conftest import add_revision, cli, make_demo_repo

from .conftest import need_docker_images, safe_git, teardown

TOML = """\
[workspace]
runtime = "docker"
ports = 5

[database]
strategy = "template"
server = "docker"
seed = ["db/seed.sql"]

[migrations]
statement_timeout = "3s"
gate_timeout = "10m"
"""

ATTACKS = {
    "od": ('ctx = context.get_context()\n'
           '    if not getattr(ctx, "as_" "sql"):\n'
           '        op.drop_column("posts", "title")\n'
           '    else:\n'
           '        op.add_column("posts", sa.Column("subtitle", sa.Text()))',
           "from alembic import context\n"),
    "dl": ('op.execute("DELETE FROM posts WHERE id > 0")', ""),
    "ru": ('op.execute("CREATE RULE posts_swallow AS ON INSERT TO posts DO INSTEAD NOTHING")', ""),
    "fr": ('op.execute("ALTER TABLE users ENABLE ROW LEVEL SECURITY")\n'
           '    op.execute("ALTER TABLE users FORCE ROW LEVEL SECURITY")\n'
           '    op.execute("CREATE POLICY nobody ON users USING (false)")', ""),
    "sl": ('op.execute("SELECT pg_sleep(100)")', ""),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_client: Any) -> Iterator[Path]:
    need_docker_images(docker_client)
    tmp = tmp_path_factory.mktemp("online")
    os.chmod(tmp, 0o755)
    repo = make_demo_repo(tmp / "proj", TOML)
    try:
        cli(repo, "init")
        res = json.loads(cli(repo, "up", *ATTACKS, "--no-container", "--json").stdout)
        assert all(r["ok"] for r in res), res
        paths = {row["name"]: Path(row["path"]) for row in json.loads(cli(repo, "ls", "--json").stdout)}
        for ws, (body, extra) in ATTACKS.items():
            add_revision(paths[ws], f"{ws}001", "0001", body, extra=extra, commit=False)
            # the test's own git, as the workspace's agent would commit (its checkout is not root's)
            trusted = ["-c", f"safe.directory={paths[ws]}", "-c", "user.name=t", "-c", "user.email=t@example.com"]
            safe_git(paths[ws], *trusted, "add", "-A")
            safe_git(paths[ws], *trusted, "commit", "-qm", f"{ws}: attack")
        yield repo
    finally:
        teardown(repo, docker_client)


def check(repo: Path, ws: str) -> dict[str, Any]:
    res = cli(repo, "migrate", "check", ws, "--json", check=None)
    report = json.loads(res.stdout)
    assert res.returncode == 1, report
    assert not report["ok"]
    return report


def rules(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in report["findings"]:
        out.setdefault(f["rule"], []).append(f)
    return out


@pytest.mark.docker
def test_a_column_dropped_only_online_fails_the_gate(project: Path) -> None:
    found = rules(check(project, "od"))
    drop = found.get("drop-column", [])
    assert [(f["object"], f["severity"]) for f in drop] == [("public.posts.title", "error")], found
    differ = found.get("online-offline-differ", [])
    assert differ and differ[0]["severity"] == "error" and differ[0]["revision"] == "od001"
    assert "behaves differently online than offline" in differ[0]["message"]
    assert "public.posts" in differ[0]["message"]


@pytest.mark.docker
def test_deleting_the_baselines_rows_fails_the_gate(project: Path) -> None:
    found = rules(check(project, "dl"))
    lost = found.get("rows-lost", [])
    assert [(f["object"], f["kind"], f["severity"]) for f in lost] == [("public.posts", "destructive", "error")]
    assert "2 → 0" in lost[0]["message"]
    assert found.get("delete-rows"), found          # the offline SQL says so too


@pytest.mark.docker
def test_a_rule_that_swallows_inserts_fails_the_gate(project: Path) -> None:
    found = rules(check(project, "ru"))
    assert [(f["object"], f["severity"]) for f in found.get("create-rule", [])] == [("public.posts", "error")]


@pytest.mark.docker
def test_forced_row_level_security_fails_the_gate(project: Path) -> None:
    found = rules(check(project, "fr"))
    for rule in ("enable-row-level-security", "force-row-level-security", "create-policy"):
        assert [(f["object"], f["severity"]) for f in found.get(rule, [])] == [("public.users", "error")], rule
    # the owner now sees no row of users: the online run's counts say its rows are gone
    assert [f["object"] for f in found.get("rows-lost", [])] == ["public.users"]


@pytest.mark.docker
def test_a_sleeping_revision_stops_at_the_statement_timeout(project: Path) -> None:
    start = time.monotonic()
    found = rules(check(project, "sl"))
    took = time.monotonic() - start
    failed = found.get("apply-failed", [])
    assert failed and "statement timeout" in failed[0]["message"], found
    assert "[migrations] statement_timeout" in failed[0]["message"]
    assert took < 60, f"the gate took {took:.0f} s for a 3 s statement timeout"
