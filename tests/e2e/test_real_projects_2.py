"""Real projects, round two (issue #19): layouts that need alembic's own resolution or a wrapper.

Each project is a copy of a fixture in tests/fixtures/real/ (see its NOTICE.md), committed to a
fresh git repository with only `sandbox.toml` written by the user, then driven through the CLI:

* flask_microblog: miguelgrinberg/microblog, the Flask-Migrate layout (`migrations/alembic.ini`
  without `script_location`; env.py takes the URL and metadata from `flask.current_app`). The
  application is found as `flask db upgrade` finds it (`.flaskenv`'s FLASK_APP).
* litestar_fullstack: litestar-org/litestar-fullstack, an env.py that runs only under
  advanced-alchemy's CLI (`wrap = "advanced-alchemy:app.config:alchemy"`).
* ziggurat_foundations: ergo/ziggurat_foundations, a package-form `script_location`
  (`ziggurat_foundations:migrations`, which alembic resolves by importing the package) and a
  version table named in env.py.

init reports the real head and where alembic found the revisions; then up a b, an additive
revision committed in a and merged, a destructive one in b blocked (its finding names both escape
hatches), rebase, reset, and the project's own models queried inside workspace a.

The CI checks the issue lists (no Docker needed) are in tests/integration/test_discover.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import cli, git
from .test_real_projects import (
    RealProject,
    Revision,
    _revision_file,
    columns,
    commit_inside,
    db_url,
    down_revision,
    execute,
    findings,
    query,
    real_repo,
    workspaces,
)

__all__ = ["real_repo"]   # the fixture, shared with test_real_projects

MICROBLOG_HEAD = "834b1a697901"
MICROBLOG = RealProject(
    fixture="flask_microblog",
    # what a user of microblog writes: its image, the Flask-Migrate config, a log to stdout (the
    # app otherwise writes logs/ into the checkout when not in debug mode)
    toml='''[workspace]
runtime = "docker"
dockerfile = "Dockerfile"

[workspace.env]
LOG_TO_STDOUT = "1"

[database]
seed = []

[migrations]
config = "migrations/alembic.ini"
''',
    versions="migrations/versions",
    head=MICROBLOG_HEAD,
    tables=("user", "post", "message", "notification", "task"),
    additive=Revision(
        "5a1c2e3d4f60_user_nickname.py", "5a1c2e3d4f60", MICROBLOG_HEAD,
        _revision_file("5a1c2e3d4f60", MICROBLOG_HEAD, "user nickname", "",
                       "op.add_column('user', sa.Column('nickname', sa.String(length=64), nullable=True))",
                       "op.drop_column('user', 'nickname')")),
    add_column=("user", "nickname"),
    destructive=Revision(
        "9e8d7c6b5a40_drop_post_language.py", "9e8d7c6b5a40", MICROBLOG_HEAD,
        _revision_file("9e8d7c6b5a40", MICROBLOG_HEAD, "drop post language", "",
                       "op.drop_column('post', 'language')",
                       "op.add_column('post', sa.Column('language', sa.String(length=5), nullable=True))")),
    drop_column=("post", "language"),
    # the project's own models, in its own application context, against the workspace's database
    tests=("python -c \"import sqlalchemy as sa; from app import create_app, db; from app.models import User; "
           "app = create_app(); app.app_context().push(); "
           "u = User(username='ws', email='ws@example.com'); u.set_password('pw'); db.session.add(u); "
           "db.session.commit(); "
           "print('users:', db.session.scalar(sa.select(sa.func.count()).select_from(User)))\""),
    env_names={},
)

LITESTAR_HEAD = "dc54b25d8b6c"
LITESTAR = RealProject(
    fixture="litestar_fullstack",
    # env.py reads config.db_url/config.engine: it runs only under advanced-alchemy's CLI (`app database
    # upgrade`), whose alembic Config sandbox builds from the project's own SQLAlchemy config object
    toml='''[workspace]
runtime = "docker"
dockerfile = "Dockerfile"

[workspace.env]
SECRET_KEY = "sandbox-e2e-dummy-secret-key"

[database]
seed = []

[migrations]
config = "src/py/app/db/migrations/alembic.ini"
version_table = "ddl_version"
wrap = "advanced-alchemy:app.config:alchemy"
''',
    versions="src/py/app/db/migrations/versions",
    head=LITESTAR_HEAD,
    tables=("user_account", "team", "tag", "role"),
    additive=Revision(
        "2026-11-30_tag_color_4b2d6e8f0a13.py", "4b2d6e8f0a13", LITESTAR_HEAD,
        _revision_file("4b2d6e8f0a13", LITESTAR_HEAD, "tag color", "",
                       "op.add_column('tag', sa.Column('color', sa.String(length=16), nullable=True))",
                       "op.drop_column('tag', 'color')")),
    add_column=("tag", "color"),
    destructive=Revision(
        "2026-11-30_drop_tag_description_7c9e1a3b5d24.py", "7c9e1a3b5d24", LITESTAR_HEAD,
        _revision_file("7c9e1a3b5d24", LITESTAR_HEAD, "drop tag description", "",
                       "op.drop_column('tag', 'description')",
                       "op.add_column('tag', sa.Column('description', sa.String(length=255), nullable=True))")),
    drop_column=("tag", "description"),
    # the project's own models and session config, in workspace a, against a's database
    tests=("cd src/py && printf '%s\\n' 'import asyncio, sqlalchemy as sa' 'from app.config import alchemy' "
           "'from app.db import models as m' 'async def main():' '    async with alchemy.get_session() as s:' "
           "'        s.add(m.Tag(name=\"ws\", slug=\"ws\")); await s.commit()' "
           "'        print(\"tags:\", await s.scalar(sa.select(sa.func.count()).select_from(m.Tag)))' "
           "'asyncio.run(main())' > /tmp/q.py && PYTHONPATH=. python /tmp/q.py"),
    env_names={},
)

ZIGGURAT_HEAD = "613e7c11dead"
ZIGGURAT = RealProject(
    fixture="ziggurat_foundations",
    # alembic.ini says script_location = ziggurat_foundations:migrations (package form: alembic imports
    # the package to find the folder); env.py names its own version table
    toml='''[workspace]
runtime = "docker"
dockerfile = "Dockerfile"

[database]
seed = []

[migrations]
config = "alembic.ini"
version_table = "alembic_ziggurat_foundations_version"
''',
    versions="ziggurat_foundations/migrations/versions",
    head=ZIGGURAT_HEAD,
    tables=("users", "groups", "resources", "users_groups", "users_permissions", "external_identities"),
    additive=Revision(
        "4d2e6f8a0b13_group_color.py", "4d2e6f8a0b13", ZIGGURAT_HEAD,
        _revision_file("4d2e6f8a0b13", ZIGGURAT_HEAD, "group color", "",
                       "op.add_column('groups', sa.Column('color', sa.Unicode(16), nullable=True))",
                       "op.drop_column('groups', 'color')")),
    add_column=("groups", "color"),
    destructive=Revision(
        "8a1c3e5b7d92_drop_group_description.py", "8a1c3e5b7d92", ZIGGURAT_HEAD,
        _revision_file("8a1c3e5b7d92", ZIGGURAT_HEAD, "drop group description", "",
                       "op.drop_column('groups', 'description')",
                       "op.add_column('groups', sa.Column('description', sa.Text(), nullable=True))")),
    drop_column=("groups", "description"),
    # the project's own models (its test suite's concrete classes) and its UserService, against a's
    # database (DATABASE_URL, as its tests take DB_STRING)
    tests=("python -c \"import os, sqlalchemy as sa; from sqlalchemy.orm import sessionmaker; "
           "from ziggurat_foundations.tests.conftest import User; "
           "from ziggurat_foundations.models.services.user import UserService; "
           "s = sessionmaker(bind=sa.create_engine(os.environ['DATABASE_URL']))(); "
           "u = User(user_name='ws', email='ws@example.com'); UserService.set_password(u, 'pw'); "
           "s.add(u); s.commit(); "
           "print('users:', s.query(User).count(), UserService.by_user_name('ws', db_session=s).user_name)\""),
    env_names={},
)

VERSION_TABLE = {"litestar_fullstack": "ddl_version", "ziggurat_foundations": "alembic_ziggurat_foundations_version"}
EXPECTED_OUTPUT = {"flask_microblog": "users: 1", "litestar_fullstack": "tags: 1",
                   "ziggurat_foundations": "users: 1 ws"}


def version_of(project: RealProject, url: str) -> list[str]:
    table = VERSION_TABLE.get(project.fixture, "alembic_version")
    return [r[0] for r in query(url, f"SELECT version_num FROM {table}")]


@pytest.mark.docker
@pytest.mark.parametrize("project", [pytest.param(MICROBLOG, id="flask_microblog"),
                                     pytest.param(LITESTAR, id="litestar_fullstack"),
                                     pytest.param(ZIGGURAT, id="ziggurat_foundations")])
def test_real_project_round_two(real_repo, project: RealProject) -> None:  # type: ignore[no-untyped-def]
    repo = real_repo(project.fixture, project.toml)

    # init asks alembic where the revisions are, and says so: config, script location, head, count
    init = cli(repo, "init", "--json", timeout=900)
    res = json.loads(init.stdout)
    found = res["migrations"]
    assert found["heads"] == [project.head], found
    assert found["revisions"] == len([f for f in (repo / project.versions).glob("*.py")
                                      if "\nrevision = " in f.read_text()]), found
    assert found["version_locations"] == [project.versions], found
    assert res["baseline_head"] == project.head and res["baseline_verified"], res
    assert git(repo, "status", "--porcelain") == "", "init left main's checkout dirty"
    # doctor agrees with init
    doctor = json.loads(cli(repo, "doctor", "--json", check=None).stdout)
    checks = doctor["checks"] if isinstance(doctor, dict) else doctor
    mig = [c for c in checks if c["name"] == "migrations"]
    assert mig and mig[0]["ok"] and project.head in mig[0]["detail"], mig

    up = json.loads(cli(repo, "up", "a", "b", "--json", timeout=600).stdout)
    assert [r["ok"] for r in up] == [True, True], up
    ls = workspaces(repo)
    for n in ("a", "b"):
        assert ls[n]["migrations"]["head"] == project.head, ls[n]
    checkout = {n: Path(ls[n]["path"]) for n in ("a", "b")}
    urls = {n: db_url(repo, n) for n in ("a", "b")}
    for url in urls.values():
        assert version_of(project, url) == [project.head]
        tables = {r[0] for r in query(url, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")}
        assert set(project.tables) <= tables, tables

    # a: an additive revision, merged
    commit_inside(repo, "a", checkout["a"], project.additive, project.versions)
    merged = json.loads(cli(repo, "merge", "a", "--json", timeout=600).stdout)
    assert merged["ok"] is True, merged
    assert merged["revisions"] == [project.additive.rev], merged

    # b: a destructive revision, blocked; the finding says what breaks and names both escape hatches
    commit_inside(repo, "b", checkout["b"], project.destructive, project.versions)
    main_after_a = git(repo, "rev-parse", "HEAD").strip()
    blocked = cli(repo, "merge", "b", "--json", check=1, timeout=600)
    destructive = [f for f in findings(blocked) if f["kind"] == "destructive" and f["severity"] == "error"]
    assert destructive, blocked.stdout
    message = destructive[0]["message"]
    assert "--allow-destructive" in message and "sandbox: allow" in message, message
    assert git(repo, "rev-parse", "HEAD").strip() == main_after_a

    # rebase moves b's revision onto main's head and re-applies it
    cli(repo, "migrate", "rebase", "b", timeout=600)
    b_file = checkout["b"] / project.versions / project.destructive.file
    assert down_revision(b_file.read_text()) == project.additive.rev
    assert version_of(project, urls["b"]) == [project.destructive.rev]
    table, column = project.drop_column
    assert column not in columns(urls["b"], table)

    # reset: b's database is the baseline again (main's head)
    execute(urls["b"], "CREATE TABLE scratch_before_reset (id int)")
    cli(repo, "db", "reset", "b", timeout=600)
    url_b = db_url(repo, "b")
    assert version_of(project, url_b) == [project.additive.rev]
    assert column in columns(url_b, table)

    # the project's own code, in workspace a, against a's database
    out = cli(repo, "exec", "a", "--", "sh", "-c", project.tests, check=None, timeout=600)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert EXPECTED_OUTPUT[project.fixture] in out.stdout, out.stdout
