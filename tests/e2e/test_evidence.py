"""The gate's replay evidence end to end: real git, real alembic, real Postgres, through the CLI.

Workspace c's revisions are traced statement by statement on the gate's clone; their findings
carry the locks, rewrites and row counts measured there, and the constraints they add are checked
against the other live workspaces' data (d breaks them, e does not).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from sandbox import Sandbox

from .conftest import add_revision, cli, toml_for


def by_rule(report: dict, rule: str, revision: str) -> dict:
    return next(f for f in report["findings"] if f["rule"] == rule and f["revision"] == revision)


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["template", "schema", "snapshot"])
def test_findings_carry_replay_evidence_and_name_workspaces_whose_data_breaks_them(  # type: ignore[no-untyped-def]
        demo_factory, need_pg, strategy: str) -> None:
    if strategy == "snapshot" and os.geteuid() != 0:
        from conftest import service_missing
        service_missing("copy-on-write storage: the snapshot strategy provisions a btrfs pool as root")
    repo = demo_factory(toml_for(strategy))
    cli(repo, "up", "c", "d", "e")
    sb = Sandbox.open(repo)
    tree = Path(sb.record("c").path)
    with psycopg.connect(**sb.conninfo("d").kwargs()) as conn:     # d's own data; e is as the baseline
        conn.execute("INSERT INTO posts (id, user_id, title) VALUES (10, 1, NULL), (11, 1, NULL), (12, 2, NULL)")
        conn.execute("INSERT INTO users (id, email) VALUES (10, 'ada@example.com'), (11, 'ada@example.com')")

    add_revision(tree, "c001", "0001", 'op.alter_column("posts", "title", nullable=False)')
    add_revision(tree, "c002", "c001", 'op.create_index("ux_users_email", "users", ["email"], unique=True)')
    add_revision(tree, "c003", "c002",
                 'op.add_column("users", sa.Column("r", sa.Float(), server_default=sa.text("random()")))')
    res = cli(repo, "migrate", "check", "c", "--json", check=1)
    report = json.loads(res.stdout)
    assert report["revisions"] == ["c001", "c002", "c003"]

    not_null = by_rule(report, "set-not-null", "c001")
    ev = not_null["evidence"]
    assert ev["fails_on"] == {"d": 3} and ev["checked_on"] == ["d", "e"]     # the baseline is clean: it replayed
    assert {"mode": "AccessExclusiveLock", "relation": "public.posts"} in ev["locks"]
    assert ev["rows"] == 2 and ev["rewrite"] is False and isinstance(ev["held_ms"], int)
    assert "would fail on workspace d (3 rows)" in not_null["message"]

    unique = by_rule(report, "add-unique-constraint", "c002")
    assert unique["evidence"]["fails_on"] == {"d": 3}                      # three rows share ada@example.com
    assert {"mode": "ShareLock", "relation": "public.users"} in unique["evidence"]["locks"]

    volatile = by_rule(report, "volatile-default", "c003")
    assert volatile["evidence"]["rewrite"] is True and volatile["evidence"]["rows"] == 3
    assert volatile["evidence"]["small_table"] is True and "public.users holds 3 rows" in volatile["message"]
    assert "fails_on" not in volatile["evidence"]                          # nothing to check on data

    text = cli(repo, "migrate", "check", "c", check=1).stdout
    assert "evidence: took ACCESS EXCLUSIVE on public.users for " in text
    assert "and rewrote it (3 rows) on the baseline" in text
    assert "on the baseline; would fail on workspace d (3 rows)" in text

    if strategy == "snapshot":      # a stopped workspace's own cluster does not answer: noted, not fatal
        cli(repo, "stop", "e")
        report = json.loads(cli(repo, "migrate", "check", "c", "--json", check=1).stdout)
        assert by_rule(report, "set-not-null", "c001")["evidence"]["checked_on"] == ["d"]
        assert report["notes"].count("workspace e's database did not answer: its data was not checked") == 1

    # d cleans its data: the same revisions no longer name it (they stay errors: d's code may still
    # write NULLs, which is what the destructive rule is about)
    with psycopg.connect(**sb.conninfo("d").kwargs()) as conn:
        conn.execute("DELETE FROM posts WHERE title IS NULL")
        conn.execute("DELETE FROM users WHERE id IN (10, 11)")
    report = json.loads(cli(repo, "migrate", "check", "c", "--json", check=1).stdout)
    assert by_rule(report, "set-not-null", "c001")["evidence"]["fails_on"] == {}
    assert "would fail" not in by_rule(report, "set-not-null", "c001")["message"]


@pytest.mark.postgres
def test_revisions_that_cannot_be_traced_replay_through_alembic(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    cli(repo, "up", "f")
    sb = Sandbox.open(repo)
    tree = Path(sb.record("f").path)
    # reads the connection: alembic cannot render it offline
    add_revision(tree, "f001", "0001",
                 'n = op.get_bind().execute(sa.text("SELECT count(*) FROM posts")).scalar()\n'
                 '    op.drop_column("posts", "title")')
    # says one thing offline and does another online: its offline SQL is not traced
    add_revision(tree, "f002", "f001",
                 'if context.is_offline_mode():\n'
                 '        op.add_column("users", sa.Column("nick", sa.Text()))\n'
                 '    else:\n'
                 '        op.drop_column("audit_log", "event")',
                 extra="from alembic import context\n")
    report = json.loads(cli(repo, "migrate", "check", "f", "--json", check=1).stdout)
    drops = {(f["revision"], f["object"]): f for f in report["findings"] if f["rule"] == "drop-column"}
    # both drops come from the catalog diff of alembic's online run, without evidence
    assert set(drops) == {("f001", "public.posts.title"), ("f002", "public.audit_log.event")}
    assert all("evidence" not in f for f in drops.values())
    assert any(n.startswith("f001: no offline SQL") for n in report["notes"])
    assert not any(f["rule"] == "apply-failed" for f in report["findings"])


@pytest.mark.docker
def test_evidence_with_docker_workspaces_and_database_server(demo_factory, docker_client, need_pg) -> None:  # type: ignore[no-untyped-def]
    """alembic renders the offline SQL in the project's image; the trace and the data checks run from
    sandbox's own process against the Docker database server."""
    for image in ("sandbox/workspace:bookworm", "sandbox/postgres:15"):
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            from conftest import service_missing
            service_missing(f"image {image} missing: run scripts/build-images")
    repo = demo_factory('[workspace]\nruntime = "docker"\nports = 10\n\n'
                        '[database]\nstrategy = "template"\nserver = "docker"\nseed = ["db/seed.sql"]\n')
    cli(repo, "up", "c")
    cli(repo, "up", "d")
    sb = Sandbox.open(repo)
    with psycopg.connect(**sb.conninfo("d").kwargs()) as conn:
        conn.execute("INSERT INTO posts (id, user_id, title) VALUES (10, 1, NULL), (11, 2, NULL)")
    cli(repo, "exec", "c", "--", "sh", "-c", "cat > migrations/versions/c001.py <<'PY'\n"
        '"""c001\n\nRevision ID: c001\nRevises: 0001\n"""\n'
        "from alembic import op\n"
        'revision = "c001"\ndown_revision = "0001"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade():\n    op.alter_column('posts', 'title', nullable=False)\n\n\n"
        "def downgrade():\n    pass\nPY\n"
        "git add -A && git -c user.name=t -c user.email=t@example.com commit -qm c001")
    report = json.loads(cli(repo, "migrate", "check", "c", "--json", check=1).stdout)
    not_null = by_rule(report, "set-not-null", "c001")
    assert not_null["evidence"]["fails_on"] == {"d": 2} and not_null["evidence"]["checked_on"] == ["d"]
    assert {"mode": "AccessExclusiveLock", "relation": "public.posts"} in not_null["evidence"]["locks"]
    assert "would fail on workspace d (2 rows)" in not_null["message"]


@pytest.mark.postgres
def test_a_statement_that_fails_on_the_baseline_is_named(demo_factory, need_pg) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(toml_for("template"))
    cli(repo, "up", "g")
    tree = Path(Sandbox.open(repo).record("g").path)
    add_revision(tree, "g001", "0001",
                 'op.add_column("users", sa.Column("nick", sa.Text()))\n'
                 '    op.execute("ALTER TABLE users ADD CONSTRAINT ck_id CHECK (id > 1)")')
    report = json.loads(cli(repo, "migrate", "check", "g", "--json", check=1).stdout)
    (failed,) = [f for f in report["findings"] if f["rule"] == "apply-failed"]
    assert failed["revision"] == "g001" and failed["statement"] == "ALTER TABLE users ADD CONSTRAINT ck_id CHECK (id > 1)"
    assert "`ALTER TABLE users ADD CONSTRAINT ck_id CHECK (id > 1)` failed: check constraint" in failed["message"]
    # the trace rolled back, and alembic online then failed the same way: the SQL is not the culprit
    assert "is violated by some row" in failed["message"].split("; alembic: ", 1)[1]

    # after a COMMIT of its own (an autocommit block) the clone has moved on: no retry through alembic
    cli(repo, "up", "h")
    tree = Path(Sandbox.open(repo).record("h").path)
    add_revision(tree, "h001", "0001",
                 'op.add_column("users", sa.Column("n", sa.Integer()))\n'
                 '    with op.get_context().autocommit_block():\n'
                 '        op.execute("CREATE UNIQUE INDEX CONCURRENTLY ux_parity ON users ((id % 2))")')
    report = json.loads(cli(repo, "migrate", "check", "h", "--json", check=1).stdout)
    (failed,) = [f for f in report["findings"] if f["rule"] == "apply-failed"]
    assert failed["statement"] == "CREATE UNIQUE INDEX CONCURRENTLY ux_parity ON users ((id % 2))"
    assert "could not create unique index" in failed["message"] and "; alembic: " not in failed["message"]
