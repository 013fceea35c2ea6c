"""Real projects end to end (issue #10, "Done means"): sandbox runs a project's code in the
project's own image and verifies what it did.

Each project is a copy of a fixture in tests/fixtures/real/ (see its README.md), committed to a
fresh git repository with only `sandbox.toml` written by the user, then driven through the public
CLI:

* fastapi_backend: fastapi/full-stack-fastapi-template's backend/ (SQLModel, psycopg 3, its
  settings build the URL from POSTGRES_SERVER/PORT/USER/PASSWORD/DB, it commits `.env`);
* asyncpg_app: rafsaf/minimal-fastapi-postgres-template (async env.py on asyncpg, its settings
  read DATABASE__HOSTNAME/… through pydantic-settings);
* misdirected: an env.py that ignores every URL and migrates localhost:5432/app; a decoy
  PostgreSQL listens there, and must receive nothing.

For the first two: init (the baseline verified: it holds the project's tables), up a b, an
additive revision committed inside a's container and merged, a destructive revision in b blocked
by the gate (before and after `migrate rebase b`), `db reset b`, and the project's own tests run by
`sandbox exec a`. The third fails at init with the verification message.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest

from conftest import LocalPostgres, pg_bin_dir, service_missing

from .conftest import ROOT, cli, git

REAL = ROOT / "tests" / "fixtures" / "real"
NOT_REACHED = "the migrations did not reach the workspace database"
IMAGES = ("sandbox/workspace:bookworm", "sandbox/postgres:15")
GIT_ID = "-c user.name=t -c user.email=t@example.com"


# -- the projects ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Revision:
    file: str          # file name in the project's versions folder
    rev: str
    down: str
    text: str          # the file's text


@dataclass(frozen=True)
class RealProject:
    fixture: str
    toml: str
    versions: str                       # the versions folder, relative to the repository root
    head: str                           # the fixture's head revision
    tables: tuple[str, ...]             # tables the baseline must hold
    additive: Revision                  # written in workspace a: adds add_column
    add_column: tuple[str, str]
    destructive: Revision               # written in workspace b: drops drop_column
    drop_column: tuple[str, str]
    tests: str                          # the project's own tests, run in the checkout root
    env_names: dict[str, str]           # [workspace.env] names and the workspace value each must equal
    seed_check: str | None = None       # SQL returning 1 row when the seed is in the database


def _revision_file(rev: str, down: str, title: str, imports: str, upgrade: str, downgrade: str) -> str:
    return f'''"""{title}

Revision ID: {rev}
Revises: {down}
Create Date: 2026-11-30 12:00:00.000000

"""
from alembic import op
import sqlalchemy as sa
{imports}

# revision identifiers, used by Alembic.
revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
    {upgrade}


def downgrade():
    {downgrade}
'''


FASTAPI_HEAD = "fe56fa70289e"
FASTAPI = RealProject(
    fixture="fastapi_backend",
    # What a user of the template writes: the image, the template's five variable names, alembic.ini.
    toml='''[workspace]
runtime = "docker"
dockerfile = "backend/Dockerfile.sandbox"

[workspace.env]
POSTGRES_SERVER = "${PGHOST}"
POSTGRES_PORT = "${PGPORT}"
POSTGRES_USER = "${PGUSER}"
POSTGRES_PASSWORD = "${PGPASSWORD}"
POSTGRES_DB = "${PGDATABASE}"

[database]
seed = []

[migrations]
config = "backend/alembic.ini"
''',
    versions="backend/app/alembic/versions",
    head=FASTAPI_HEAD,
    tables=("user", "item"),
    additive=Revision(
        "3b8f2c1d4e5a_add_nickname_to_user.py", "3b8f2c1d4e5a", FASTAPI_HEAD,
        _revision_file("3b8f2c1d4e5a", FASTAPI_HEAD, "Add nickname to User", "import sqlmodel.sql.sqltypes",
                       'op.add_column("user", sa.Column("nickname", '
                       'sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))',
                       'op.drop_column("user", "nickname")')),
    add_column=("user", "nickname"),
    destructive=Revision(
        "9d4e6f7a8b1c_drop_item_description.py", "9d4e6f7a8b1c", FASTAPI_HEAD,
        _revision_file("9d4e6f7a8b1c", FASTAPI_HEAD, "Drop Item.description", "import sqlmodel.sql.sqltypes",
                       'op.drop_column("item", "description")',
                       'op.add_column("item", sa.Column("description", '
                       'sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))')),
    drop_column=("item", "description"),
    # the template's own tests: the CRUD tests and the items API (TestClient against the database)
    tests="cd backend && python -m pytest -q -p no:cacheprovider tests/crud tests/api/routes/test_items.py",
    env_names={"POSTGRES_SERVER": "PGHOST", "POSTGRES_PORT": "PGPORT", "POSTGRES_USER": "PGUSER",
               "POSTGRES_PASSWORD": "PGPASSWORD", "POSTGRES_DB": "PGDATABASE"},
)

ASYNCPG_HEAD = "5f1d4c8a9b02"
ASYNCPG = RealProject(
    fixture="asyncpg_app",
    # pydantic-settings with env_nested_delimiter="__": DATABASE__HOSTNAME is settings.database.hostname.
    # The JWT key has no default upstream (it comes from .env, which is not committed).
    toml='''[workspace]
runtime = "docker"
dockerfile = "Dockerfile"

[workspace.env]
DATABASE__HOSTNAME = "${PGHOST}"
DATABASE__PORT = "${PGPORT}"
DATABASE__USERNAME = "${PGUSER}"
DATABASE__PASSWORD = "${PGPASSWORD}"
DATABASE__DB = "${PGDATABASE}"
SECURITY__JWT_SECRET_KEY = "sandbox-e2e-dummy-jwt-key"

[database]
seed = ["db/seed.sql"]
''',
    versions="alembic/versions",
    head=ASYNCPG_HEAD,
    tables=("user_account", "refresh_token"),
    additive=Revision(
        "2026113012_add_user_account_display_name_a7c3e9f1d2b4.py", "a7c3e9f1d2b4", ASYNCPG_HEAD,
        _revision_file("a7c3e9f1d2b4", ASYNCPG_HEAD, "add user_account.display_name", "",
                       'op.add_column("user_account", sa.Column("display_name", sa.String(length=128), '
                       'nullable=True))',
                       'op.drop_column("user_account", "display_name")')),
    add_column=("user_account", "display_name"),
    destructive=Revision(
        "2026113013_drop_refresh_token_used_c2d8b6a4e0f9.py", "c2d8b6a4e0f9", ASYNCPG_HEAD,
        _revision_file("c2d8b6a4e0f9", ASYNCPG_HEAD, "drop refresh_token.used", "",
                       'op.drop_column("refresh_token", "used")',
                       'op.add_column("refresh_token", sa.Column("used", sa.Boolean(), nullable=False, '
                       'server_default=sa.false()))')),
    drop_column=("refresh_token", "used"),
    # upstream's addopts need pytest-xdist, pytest-cov and 100% coverage: see the fixture's README
    tests="python -m pytest -o addopts= -q -p no:cacheprovider app/tests",
    env_names={"DATABASE__HOSTNAME": "PGHOST", "DATABASE__PORT": "PGPORT", "DATABASE__USERNAME": "PGUSER",
               "DATABASE__PASSWORD": "PGPASSWORD", "DATABASE__DB": "PGDATABASE"},
    seed_check="SELECT 1 FROM user_account u JOIN refresh_token t USING (user_id) "
               "WHERE u.email = 'seed@example.com'",
)


# -- helpers --------------------------------------------------------------------------------------
def copy_fixture(fixture: str, dest: Path, toml: str) -> Path:
    """The fixture as a fresh git repository on main, with sandbox.toml committed beside it."""
    shutil.copytree(REAL / fixture, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (dest / "sandbox.toml").write_text(toml)
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], check=True)
    git(dest, "config", "user.name", "t")
    git(dest, "config", "user.email", "t@example.com")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", f"{fixture} (tests/fixtures/real) and sandbox.toml")
    return dest


@pytest.fixture
def real_repo(tmp_path: Path, docker_client) -> Iterator[Callable[[str, str], Path]]:  # type: ignore[no-untyped-def]
    for image in IMAGES:
        try:
            docker_client.images.get(image)
        except Exception:  # noqa: BLE001
            service_missing(f"image {image} missing: run scripts/build-images")
    made: list[Path] = []

    def make(fixture: str, toml: str) -> Path:
        repo = copy_fixture(fixture, tmp_path / fixture, toml)
        made.append(repo)
        return repo

    yield make
    for repo in made:
        if not (repo / ".sandbox").exists():
            continue
        from sandbox import Sandbox
        try:
            Sandbox.open(repo).deinit(force=True)
        except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
            print(f"cleanup of {repo} failed: {exc}")


def workspaces(repo: Path) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in json.loads(cli(repo, "ls", "--json").stdout)}


def db_url(repo: Path, name: str) -> str:
    url = cli(repo, "db", "url", name).stdout.strip()
    assert url.startswith(("postgresql://", "postgres://")), url
    return url


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def execute(url: str, sql: str) -> None:
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def columns(url: str, table: str) -> set[str]:
    return {r[0] for r in query(url, "SELECT column_name FROM information_schema.columns "
                                     "WHERE table_schema = 'public' AND table_name = %s", table)}


def alembic_version(url: str) -> list[str]:
    return [r[0] for r in query(url, "SELECT version_num FROM alembic_version")]


def findings(res: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    data = json.loads(res.stdout)
    assert data["ok"] is False, data
    return list(data["findings"])


def commit_inside(repo: Path, name: str, checkout: Path, rev: Revision, versions: str) -> None:
    """Write the revision file into the workspace's checkout, then `git add` and commit it inside the
    workspace's container (as an agent working there would)."""
    path = checkout / versions / rev.file
    path.write_text(rev.text)
    rel = f"{versions}/{rev.file}"
    cli(repo, "exec", name, "--", "sh", "-c",
        f"git add {rel} && git {GIT_ID} commit -q -m 'migration {rev.rev}'")


def down_revision(text: str) -> str | None:
    m = re.search(r"""^down_revision\s*(?::[^=]*)?=\s*['"]([0-9a-z_]+)['"]""", text, re.M)
    return m.group(1) if m else None


# -- the two projects, end to end -----------------------------------------------------------------
@pytest.mark.docker
@pytest.mark.parametrize("project", [pytest.param(FASTAPI, id="fastapi_backend"),
                                     pytest.param(ASYNCPG, id="asyncpg_app")])
def test_real_project_end_to_end(real_repo, project: RealProject) -> None:  # type: ignore[no-untyped-def]
    repo = real_repo(project.fixture, project.toml)
    tracked_env = bool(git(repo, "ls-files", ".env").strip())
    assert tracked_env == (project is FASTAPI)      # the template commits .env; rafsaf's ignores it
    env_before = (repo / ".env").read_text() if tracked_env else None

    # init: builds the project's image, migrates the baseline inside it, and verifies it
    init = cli(repo, "init", timeout=900, quiet=False)
    if tracked_env:
        # the managed block goes to an untracked, excluded .env.sandbox, and init says so
        assert ".env.sandbox" in init.stdout + init.stderr, init.stdout + init.stderr
        assert (repo / ".env").read_text() == env_before
    assert git(repo, "status", "--porcelain") == "", "init left main's checkout dirty"

    up = json.loads(cli(repo, "up", "a", "b", "--json", timeout=600).stdout)
    assert [r["ok"] for r in up] == [True, True], up
    ls = workspaces(repo)
    for n in ("a", "b"):
        assert ls[n]["state"] == "ready" and ls[n]["container"]["status"] == "running", ls[n]
        assert ls[n]["migrations"]["head"] == project.head, ls[n]
        assert ls[n]["migrations"]["base_head"] == project.head, ls[n]
    checkout = {n: Path(ls[n]["path"]) for n in ("a", "b")}

    # the baseline was verified: each clone holds the project's tables at the fixture's head,
    # owned by the role the workspace connects as, through a plain URL
    urls = {n: db_url(repo, n) for n in ("a", "b")}
    for n, url in urls.items():
        assert "options=" not in url, url
        assert alembic_version(url) == [project.head]
        owners = dict(query(url, "SELECT tablename::text, tableowner::text FROM pg_tables "
                                 "WHERE schemaname = 'public'"))
        assert set(project.tables) <= owners.keys(), owners
        (current_user,), = query(url, "SELECT current_user::text")
        assert {owners[t] for t in project.tables} == {current_user}, (owners, current_user)
        if project.seed_check:
            assert query(url, project.seed_check) == [(1,)], "the seed is not in the baseline"

    # [workspace.env]: the project's own names carry the workspace's values
    env = json.loads(cli(repo, "env", "a", "--format", "json").stdout)
    for mine, theirs in project.env_names.items():
        assert mine in env and str(env[mine]) == str(env[theirs]), (mine, env.get(mine), theirs, env[theirs])

    if tracked_env:
        # a fresh workspace is clean: the tracked .env is untouched, the block is in .env.sandbox
        assert cli(repo, "exec", "a", "--", "git", "status", "--porcelain").stdout.strip() == ""
        assert (checkout["a"] / ".env").read_text() == env_before
        assert "DATABASE_URL" in (checkout["a"] / ".env.sandbox").read_text()

    # a: an additive revision, committed inside its container, applied there by the project's own alembic
    commit_inside(repo, "a", checkout["a"], project.additive, project.versions)
    alembic_dir = "backend" if project is FASTAPI else "."
    cli(repo, "exec", "a", "--", "sh", "-c", f"cd {alembic_dir} && python -m alembic upgrade head")
    table, column = project.add_column
    assert column in columns(urls["a"], table)
    assert alembic_version(urls["a"]) == [project.additive.rev]

    # b: a destructive revision on the same head, committed inside its container
    commit_inside(repo, "b", checkout["b"], project.destructive, project.versions)

    # a merges: the gate replays it in the project's image, main moves, the baseline follows
    main_before = git(repo, "rev-parse", "HEAD").strip()
    merged = json.loads(cli(repo, "merge", "a", "--json", timeout=600).stdout)
    assert merged["ok"] is True and merged.get("merged", True), merged
    assert merged["revisions"] == [project.additive.rev], merged
    assert git(repo, "rev-parse", "HEAD").strip() != main_before
    assert project.additive.file in git(repo, "ls-tree", "--name-only", "HEAD", project.versions + "/")
    ls = workspaces(repo)
    assert ls["b"]["migrations"]["base_head"] == project.additive.rev, ls["b"]
    assert ls["b"]["migrations"]["behind"] == 1, ls["b"]

    # b is blocked: its revision drops a column (and sits on the old head)
    main_after_a = git(repo, "rev-parse", "HEAD").strip()
    table, column = project.drop_column
    blocked = cli(repo, "merge", "b", "--json", check=1, timeout=600)
    destructive = [f for f in findings(blocked) if f["kind"] == "destructive" and f["severity"] == "error"]
    assert destructive, blocked.stdout
    assert any(column in (f.get("statement") or "") + (f.get("object") or "") for f in destructive), blocked.stdout
    assert git(repo, "rev-parse", "HEAD").strip() == main_after_a

    # rebase moves b's revision onto main's head and re-applies it to b's database
    cli(repo, "migrate", "rebase", "b", timeout=600)
    b_file = checkout["b"] / project.versions / project.destructive.file
    assert down_revision(b_file.read_text()) == project.additive.rev, b_file.read_text()
    assert alembic_version(urls["b"]) == [project.destructive.rev]
    assert column not in columns(urls["b"], table)
    assert project.add_column[1] in columns(urls["b"], project.add_column[0])
    # still blocked, now for the drop alone: nothing about ordering is left
    blocked = cli(repo, "merge", "b", "--json", check=1, timeout=600)
    errors = [f for f in findings(blocked) if f["severity"] == "error"]
    assert errors and {f["kind"] for f in errors} == {"destructive"}, blocked.stdout
    assert git(repo, "rev-parse", "HEAD").strip() == main_after_a

    # reset: b's database becomes a fresh clone of the current baseline (main's head, a's column)
    execute(urls["b"], "CREATE TABLE scratch_before_reset (id int)")
    cli(repo, "db", "reset", "b", timeout=600)
    url_b = db_url(repo, "b")
    assert alembic_version(url_b) == [project.additive.rev]
    assert column in columns(url_b, table)
    assert project.add_column[1] in columns(url_b, project.add_column[0])
    assert query(url_b, "SELECT to_regclass('public.scratch_before_reset')") == [(None,)]
    if project.seed_check:
        assert query(url_b, project.seed_check) == [(1,)]

    # the project's own tests pass inside workspace a, against a's database
    res = cli(repo, "exec", "a", "--", "sh", "-c", project.tests, check=None, timeout=600)
    assert res.returncode == 0, f"the project's tests failed in workspace a\n{res.stdout}\n{res.stderr}"
    assert " passed" in res.stdout, res.stdout

    # a merged and holds nothing uncommitted (the tracked .env was never touched): rm needs no --force
    cli(repo, "rm", "a")


# -- an env.py that ignores every URL ---------------------------------------------------------------
MISDIRECTED_TOML = '''[workspace]
runtime = "docker"
dockerfile = "Dockerfile"

[database]
seed = []
'''


class DecoyPostgres(LocalPostgres):
    """A throwaway PostgreSQL on 127.0.0.1:5432, where the misdirected env.py aims (user and password
    `postgres`, database `app`); it logs every connection it receives."""

    def __init__(self, bin_dir: Path) -> None:
        super().__init__(bin_dir)
        self.port = 5432

    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def decoy_pg() -> Iterator[DecoyPostgres]:
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        service_missing("PostgreSQL binaries not found (apt-get install postgresql-15)")
        raise AssertionError  # unreachable
    if _port_in_use(5432):
        service_missing("127.0.0.1:5432 is in use: the decoy PostgreSQL needs it (and nothing else "
                        "may stand where the misdirected env.py aims)")
    pg = DecoyPostgres(bin_dir)
    try:
        pg.start()
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
            conn.execute("ALTER SYSTEM SET log_connections = on")
            conn.execute("SELECT pg_reload_conf()")
    except (subprocess.CalledProcessError, OSError, psycopg.Error) as exc:
        pg.stop()
        service_missing(f"could not start the decoy PostgreSQL on 127.0.0.1:5432: {exc}")
    yield pg
    pg.stop()


@pytest.mark.docker
@pytest.mark.postgres
def test_misdirected_env_py_fails_init_and_reaches_no_other_database(
        real_repo, decoy_pg: DecoyPostgres) -> None:  # type: ignore[no-untyped-def]
    repo = real_repo("misdirected", MISDIRECTED_TOML)
    log_before = len(decoy_pg.log())

    res = cli(repo, "init", check=None, timeout=900, quiet=False)
    out = res.stdout + res.stderr
    assert res.returncode == 1, f"init -> {res.returncode}\n{out}"
    assert NOT_REACHED in out, out
    # the hint names what env.py must honour
    assert any(k in out for k in ("DATABASE_URL", "sqlalchemy.url", "workspace.env")), out
    assert "Traceback" not in res.stderr, res.stderr

    # nothing reached the decoy: no connection at all, no alembic_version, no tables
    connections = [line for line in decoy_pg.log()[log_before:].splitlines() if "connection received" in line]
    assert connections == [], connections
    for dbname in ("app", "postgres"):
        assert query(decoy_pg.url(dbname), "SELECT to_regclass('public.alembic_version'), "
                                           "to_regclass('public.widgets')") == [(None, None)]
        assert query(decoy_pg.url(dbname), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
