"""Finding alembic by asking alembic (issue #19): layouts, wrappers, interpreters, hints.

The project's interpreter here is this test run's own (it has alembic, SQLAlchemy and AnyIO),
through the host runner; nothing needs Docker or a database (``describe`` and offline SQL run with
no database). The Docker runner with real projects is tests/e2e/test_real_projects_2.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox.config import parse
from sandbox.errors import MigrationError, WorkspaceError
from sandbox.migrations.alembic import AlembicTool
from sandbox.migrations.discover import (
    discover,
    failure_cause,
    failure_hint,
    find_configs,
    migrations_checks,
)
from sandbox.project import HostProjectRunner, _host_python

ROOT = Path(__file__).resolve().parents[2]

OFFLINE_ENV = '''
from alembic import context
config = context.config
{prelude}

def run():
    context.configure(url="postgresql://u:p@localhost/db", literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()

{call}
'''

REVISION = '''"""r
Revision ID: {rev}
Revises: {down}
"""
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down_literal}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("t_{rev}", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade():
    op.drop_table("t_{rev}")
'''


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def revision(folder: Path, rev: str, down: str | None) -> None:
    write(folder / f"{rev}_r.py", REVISION.format(rev=rev, down=down or "", down_literal=repr(down)))


def tool_for(root: Path, config: str, **migrations: str) -> AlembicTool:
    cfg = parse(root, {"migrations": {"python": sys.executable, "config": config, **migrations}}, environ={})
    return AlembicTool(config, runner=HostProjectRunner(cfg), app=cfg.migrations.app, wrap=cfg.migrations.wrap,
                       layout_file=root / ".sandbox" / "alembic-layout.json", main_root=root)


# -- layouts ------------------------------------------------------------------------------------------
def test_package_form_with_version_locations_chosen_in_env_py(tmp_path: Path) -> None:
    """Prefect's pattern: ``script_location = pkg:server:database:_migrations`` (every ":" a path
    separator), and env.py choosing ``context.script.version_locations`` (a folder per dialect) at
    run time. init's discovery finds them; the static reading alone sees two histories."""
    pkg = tmp_path / "src" / "pkg"
    write(pkg / "__init__.py", "")
    mig = pkg / "server" / "database" / "_migrations"
    write(mig / "env.py", OFFLINE_ENV.format(
        prelude="import os\ncontext.script.version_locations = "
                "[os.path.join(os.path.dirname(__file__), 'versions', 'postgresql')]",
        call="run()"))
    revision(mig / "versions" / "postgresql", "aaa000000001", None)
    revision(mig / "versions" / "postgresql", "bbb000000002", "aaa000000001")
    revision(mig / "versions" / "sqlite", "9990000000aa", None)
    write(tmp_path / "alembic.ini", "[alembic]\nscript_location = pkg:server:database:_migrations\n"
                                    "prepend_sys_path = src\n")
    tool = tool_for(tmp_path, "alembic.ini")
    assert tool.layout(tmp_path).script_location == mig.resolve()   # type: ignore[union-attr]
    # static: every folder under versions/ is read, so the sqlite history makes a second head
    assert tool.heads(tmp_path) == ["9990000000aa", "bbb000000002"]
    found = discover(tool, tmp_path)
    assert found is not None
    assert found.layout == "package"
    assert found.script_location == "src/pkg/server/database/_migrations"
    assert found.version_locations == ("src/pkg/server/database/_migrations/versions/postgresql",)
    assert found.heads == ("bbb000000002",) and found.revisions == 2
    assert tool.heads(tmp_path) == ["bbb000000002"]          # what alembic said, applied from now on
    checks = migrations_checks(tool, tmp_path)                # doctor agrees with init
    assert checks[0].ok and "bbb000000002" in checks[0].detail and "2 revision(s)" in checks[0].detail


def test_flask_migrate_layout_is_found_and_needs_no_script_location(tmp_path: Path) -> None:
    write(tmp_path / "migrations" / "alembic.ini", "[alembic]\n\n[loggers]\nkeys = root\n")
    write(tmp_path / "migrations" / "env.py", OFFLINE_ENV.format(prelude="", call="run()"))
    revision(tmp_path / "migrations" / "versions", "ccc000000001", None)
    assert find_configs(tmp_path) == ["migrations/alembic.ini"]
    # the default config name is not there, but alembic configuration is: never "no migrations"
    default = tool_for(tmp_path, "alembic.ini")
    with pytest.raises(MigrationError, match=r"migrations/alembic.ini"):
        discover(default, tmp_path)
    assert not migrations_checks(default, tmp_path)[0].ok
    tool = tool_for(tmp_path, "migrations/alembic.ini")
    assert tool.heads(tmp_path) == ["ccc000000001"]
    found = discover(tool, tmp_path)
    assert found is not None and found.heads == ("ccc000000001",)
    assert found.script_location == "migrations"
    sql = tool.offline_sql(tmp_path, "ccc000000001")
    assert "CREATE TABLE t_ccc000000001" in sql


@pytest.mark.parametrize("where, ini, reason", [
    ("alembic.ini", "[alembic]\nscript_location = nosuchpkg:migrations\n", "nosuchpkg"),
    ("alembic.ini", "[alembic]\n", "no script_location"),
    ("alembic.ini", "[loggers]\nkeys = root\n", "no [alembic] section"),
    # Flask-Migrate's place, while sandbox.toml names the default: never "no migrations"
    ("migrations/alembic.ini", "[alembic]\n", 'set [migrations] config = "migrations/alembic.ini"'),
])
def test_unresolvable_alembic_ini_fails_init_with_exit_1(tmp_path: Path, where: str, ini: str, reason: str) -> None:
    repo = tmp_path / "repo"
    write(repo / where, ini)
    write(repo / "sandbox.toml", f'[workspace]\nruntime = "none"\n\n[database]\nseed = []\n\n'
                                 f'[migrations]\npython = "{sys.executable}"\n')
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "commit", "-q", "-m", "x"], check=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "sandbox", "--project", str(repo), "init"], check=False, capture_output=True,
                         text=True, env=env, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert reason in out, out
    assert "no migrations" not in out, out
    assert "Traceback" not in out, out


# -- wrappers -----------------------------------------------------------------------------------------
ANYIO_ENV_CALL = '''
import anyio
import anyio.from_thread

async def configured():
    return True

anyio.from_thread.run(configured)     # NoEventLoopError unless alembic runs in an AnyIO worker thread
run()
'''


def _anyio_project(root: Path) -> None:
    write(root / "alembic.ini", "[alembic]\nscript_location = migrations\n")
    write(root / "migrations" / "env.py", OFFLINE_ENV.format(prelude="", call=ANYIO_ENV_CALL))
    revision(root / "migrations" / "versions", "ddd000000001", None)


def test_env_py_that_needs_an_anyio_worker_runs_under_wrap(tmp_path: Path) -> None:
    _anyio_project(tmp_path)
    bare = tool_for(tmp_path, "alembic.ini")
    with pytest.raises(MigrationError) as info:
        bare.offline_sql(tmp_path, "ddd000000001")
    assert "anyio-worker" in str(info.value)                  # the hint names the fix
    wrapped = tool_for(tmp_path, "alembic.ini", wrap="anyio-worker")
    assert "CREATE TABLE t_ddd000000001" in wrapped.offline_sql(tmp_path, "ddd000000001")
    found = discover(wrapped, tmp_path)
    assert found is not None and found.env_error is None and found.heads == ("ddd000000001",)


def test_wrap_module_callable_runs_alembic_in_the_projects_own_loop(tmp_path: Path) -> None:
    _anyio_project(tmp_path)
    write(tmp_path / "projcli.py", '''
        import anyio
        import anyio.to_thread


        def run_in_worker(run):
            async def main():
                return await anyio.to_thread.run_sync(run)
            return anyio.run(main)
    ''')
    wrapped = tool_for(tmp_path, "alembic.ini", wrap="projcli:run_in_worker")
    assert "CREATE TABLE t_ddd000000001" in wrapped.offline_sql(tmp_path, "ddd000000001")


def test_app_context_for_env_py(tmp_path: Path) -> None:
    """[migrations] app: an object with app_context() (a Flask app, or a factory returning one)."""
    write(tmp_path / "alembic.ini", "[alembic]\nscript_location = migrations\n")
    write(tmp_path / "myapp.py", '''
        import contextlib
        ACTIVE = []


        class App:
            @contextlib.contextmanager
            def app_context(self):
                ACTIVE.append(self)
                yield
                ACTIVE.pop()


        def create_app():
            return App()
    ''')
    write(tmp_path / "migrations" / "env.py", OFFLINE_ENV.format(
        prelude="import myapp\nif not myapp.ACTIVE:\n    raise RuntimeError('Working outside of application context.')",
        call="run()"))
    revision(tmp_path / "migrations" / "versions", "eee000000001", None)
    with pytest.raises(MigrationError, match="application context"):
        tool_for(tmp_path, "alembic.ini").offline_sql(tmp_path, "eee000000001")
    tool = tool_for(tmp_path, "alembic.ini", app="myapp:create_app")
    assert "CREATE TABLE t_eee000000001" in tool.offline_sql(tmp_path, "eee000000001")


def test_env_py_expecting_its_own_clis_config_is_told_the_wrap(tmp_path: Path) -> None:
    """env.py reads config.db_url (advanced-alchemy's Config): the runner reports the AttributeError's
    object class, and the hint comes from that type, not from the message."""
    write(tmp_path / "alembic.ini", "[alembic]\nscript_location = migrations\n")
    write(tmp_path / "migrations" / "env.py", OFFLINE_ENV.format(prelude="url = config.db_url", call="run()"))
    revision(tmp_path / "migrations" / "versions", "aaa000000009", None)
    with pytest.raises(MigrationError) as info:
        tool_for(tmp_path, "alembic.ini").offline_sql(tmp_path, "aaa000000009")
    assert "advanced-alchemy:module:config" in str(info.value)


def test_failure_causes_are_typed_not_read_from_the_message() -> None:
    flask_old = {"types": ["builtins.RuntimeError", "builtins.Exception"], "raised_in": "flask.globals"}
    flask_new = {"types": ["builtins.RuntimeError", "builtins.Exception"], "raised_in": "werkzeug.local"}
    anyio_4 = {"types": ["anyio._core._exceptions.NoEventLoopError", "builtins.RuntimeError"],
               "raised_in": "anyio.from_thread"}
    anyio_3 = {"types": ["builtins.RuntimeError"], "raised_in": "anyio.from_thread"}
    config = {"types": ["builtins.AttributeError"], "attribute_of": "alembic.config.Config", "attribute": "db_url"}
    assert [failure_cause(f) for f in (flask_old, flask_new, anyio_4, anyio_3, config)] == [
        "app-context", "app-context", "event-loop", "event-loop", "foreign-config"]
    # the same words raised by the project's own code, or another object lacking an attribute: no guess
    own = {"types": ["builtins.RuntimeError"], "raised_in": "env_py",
           "error": "RuntimeError: Working outside of application context (AnyIO worker thread)"}
    other = {"types": ["builtins.AttributeError"], "attribute_of": "myapp.Settings",
             "error": "AttributeError: 'Config' object has no attribute 'db_url'"}
    assert failure_cause(own) is None and failure_cause(other) is None
    assert failure_hint(Path("/nonexistent"), None, flask_new, app=None, wrap=None) is not None
    assert failure_hint(Path("/nonexistent"), None, flask_new, app="m:create_app", wrap=None) is None


# -- interpreters and generated files ------------------------------------------------------------------
def test_venv_only_in_mains_checkout_is_the_worktrees_interpreter(tmp_path: Path) -> None:
    main, worktree = tmp_path / "main", tmp_path / "wt"
    venv_python = main / "backend" / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    (worktree / "backend").mkdir(parents=True)
    config = parse(main, {"migrations": {"config": "backend/alembic.ini"}}, environ={})
    assert _host_python(config, worktree, worktree / "backend") == [str(venv_python)]
    # the gate's runs use it: describe in the worktree, with main's .venv
    write(worktree / "backend" / "alembic.ini", "[alembic]\nscript_location = migrations\n")
    write(worktree / "backend" / "migrations" / "env.py", OFFLINE_ENV.format(prelude="", call="run()"))
    revision(worktree / "backend" / "migrations" / "versions", "fff000000001", None)
    tool = AlembicTool("backend/alembic.ini", runner=HostProjectRunner(config))
    assert tool.runner.python(worktree) == [str(venv_python)]
    assert "CREATE TABLE" in tool.offline_sql(worktree, "fff000000001")


def test_missing_interpreter_is_an_error_naming_the_key(tmp_path: Path) -> None:
    config = parse(tmp_path, {"migrations": {"python": ".venv/bin/python"}}, environ={})
    with pytest.raises(WorkspaceError, match=r"\[migrations\] python"):
        _host_python(config, tmp_path, tmp_path)


def test_missing_generated_file_is_named(tmp_path: Path) -> None:
    main, worktree = tmp_path / "main", tmp_path / "wt"
    write(main / "app" / "__init__.py", "")
    write(main / "app" / "_build_info.py", "VERSION = '1'\n")    # generated by the install, git-ignored
    for tree in (main, worktree):
        write(tree / "app" / "__init__.py", "")
        write(tree / "alembic.ini", "[alembic]\nscript_location = migrations\n")
        write(tree / "migrations" / "env.py", OFFLINE_ENV.format(prelude="import app._build_info", call="run()"))
        revision(tree / "migrations" / "versions", "abc000000001", None)
    config = parse(main, {"migrations": {"python": sys.executable}}, environ={})
    tool = AlembicTool(runner=HostProjectRunner(config), main_root=main)
    assert "CREATE TABLE" in tool.offline_sql(main, "abc000000001")
    with pytest.raises(MigrationError) as info:
        tool.offline_sql(worktree, "abc000000001")
    assert "app/_build_info.py" in str(info.value) and "[workspace] copy" in str(info.value)
    assert failure_hint(worktree, main, {"missing_module": "app._build_info", "type": "ModuleNotFoundError"},
                        app=None, wrap=None) is not None
