"""A real, minimal alembic project for tests: ``make_alembic_project`` and ``add_revision``.

Importable from any test as ``from alembic_project import ...`` (pytest puts ``tests/`` on
``sys.path`` because ``tests/conftest.py`` lives there and ``tests/`` is not a package).

The project looks like one ``alembic init`` would produce, trimmed::

    alembic.ini                 script_location = migrations
    migrations/env.py           URL from sqlalchemy.url, else DATABASE_URL
    migrations/script.py.mako
    migrations/versions/ba5e0001_initial.py   users(id, email), posts(id, user_id -> users, title)
    db/seed.sql                 three users, two posts

Revision files follow alembic's standard template (docstring with ``Revision ID:``,
``Revises:`` and ``Create Date:``, then ``revision``/``down_revision`` assignments), so code that
rewrites them is exercised on the real format.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path

INITIAL_REVISION = "ba5e0001"
"""The id of the revision ``make_alembic_project`` writes (creates users and posts)."""

ALEMBIC_INI = """\
# A minimal alembic configuration (written by tests/alembic_project.py).

[alembic]
script_location = migrations
prepend_sys_path = .
path_separator = os
# sqlalchemy.url is left out on purpose: env.py falls back to DATABASE_URL.

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
datefmt = %H:%M:%S
"""

# env.py and the revision template are the demo project's own (templates/demo), so the tests
# exercise exactly what users start from.
_DEMO = Path(__file__).resolve().parents[1] / "templates" / "demo" / "migrations"
ENV_PY = (_DEMO / "env.py").read_text()
SCRIPT_MAKO = (_DEMO / "script.py.mako").read_text()

INITIAL_UPGRADE = """\
op.create_table(
    "users",
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("email", sa.Text(), nullable=False),
)
op.create_table(
    "posts",
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("title", sa.String(200)),
)
"""

INITIAL_DOWNGRADE = """\
op.drop_table("posts")
op.drop_table("users")
"""

SEED_SQL = """\
INSERT INTO users (id, email) VALUES (1, 'ada@example.com'), (2, 'bob@example.com'),
                                     (3, 'cy@example.com');
SELECT setval(pg_get_serial_sequence('users', 'id'), 3);
INSERT INTO posts (id, user_id, title) VALUES (1, 1, 'hello'), (2, 2, 'world');
SELECT setval(pg_get_serial_sequence('posts', 'id'), 2);
"""

_GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git_commit(tree: Path, paths: Sequence[Path | str], message: str) -> None:
    """Stage ``paths`` (relative to ``tree`` or absolute) and commit them in ``tree``."""
    env = {**os.environ, **_GIT_ENV}
    rel = [str(Path(p).relative_to(tree)) if Path(p).is_absolute() else str(p) for p in paths]
    subprocess.run(["git", "-C", str(tree), "add", "--", *rel], check=True, env=env)
    subprocess.run(["git", "-C", str(tree), "commit", "-q", "-m", message, "--", *rel],
                   check=True, env=env)


def make_alembic_project(repo: Path, *, commit: bool = True) -> None:
    """Write a minimal real alembic project into ``repo`` (a git checkout) and commit it.

    The one revision is :data:`INITIAL_REVISION`; ``db/seed.sql`` fills both tables.
    """
    repo = Path(repo)
    versions = repo / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (repo / "db").mkdir(exist_ok=True)
    files = {
        repo / "alembic.ini": ALEMBIC_INI,
        repo / "migrations" / "env.py": ENV_PY,
        repo / "migrations" / "script.py.mako": SCRIPT_MAKO,
        repo / "db" / "seed.sql": SEED_SQL,
    }
    for path, text in files.items():
        path.write_text(text)
    gitignore = repo / ".gitignore"
    existing = gitignore.read_text() if gitignore.exists() else ""
    if "__pycache__/" not in existing.splitlines():
        prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
        gitignore.write_text(prefix + "__pycache__/\n")
    initial = add_revision(repo, INITIAL_REVISION, None, INITIAL_UPGRADE, INITIAL_DOWNGRADE,
                           message="initial: users and posts")
    if commit:
        git_commit(repo, [*files, gitignore, initial], "alembic project")


def add_revision(tree: Path, rev_id: str, down: str | Sequence[str] | None, upgrade_ops: str,
                 downgrade_ops: str = "pass", message: str = "", *, commit: bool = False,
                 typed: bool = True, create_date: str = "2024-01-01 00:00:00.000000") -> Path:
    """Write ``migrations/versions/<rev_id>_<slug>.py`` in alembic's standard template format.

    ``upgrade_ops``/``downgrade_ops`` are Python statements (``op.add_column(...)``,
    ``op.execute("...")``), dedented and indented into the function bodies. ``down`` is the
    parent id, a sequence of ids for a merge revision, or None for a root. ``typed=False``
    writes the older untyped form (``down_revision = 'x'``). With ``commit=True`` the file is
    committed in ``tree`` with git.
    """
    tree = Path(tree)
    versions = tree / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"\W+", "_", message.lower()).strip("_")[:40] or "revision"
    path = versions / f"{rev_id}_{slug}.py"
    if down is None or isinstance(down, str):
        down_value: str | tuple[str, ...] | None = down
    else:
        down_value = tuple(down)
    revises = ", ".join(down_value) if isinstance(down_value, tuple) else (down_value or "")

    def body(ops: str) -> str:
        ops = textwrap.dedent(ops).strip("\n") or "pass"
        return textwrap.indent(ops, "    ")

    if typed:
        header = ("from typing import Sequence, Union\n\nfrom alembic import op\n"
                  "import sqlalchemy as sa\n\n\n# revision identifiers, used by Alembic.\n"
                  f"revision: str = {rev_id!r}\n"
                  f"down_revision: Union[str, Sequence[str], None] = {down_value!r}\n"
                  "branch_labels: Union[str, Sequence[str], None] = None\n"
                  "depends_on: Union[str, Sequence[str], None] = None\n")
        sig_up, sig_down = "def upgrade() -> None:", "def downgrade() -> None:"
    else:
        header = ("from alembic import op\nimport sqlalchemy as sa\n\n\n"
                  "# revision identifiers, used by Alembic.\n"
                  f"revision = {rev_id!r}\ndown_revision = {down_value!r}\n"
                  "branch_labels = None\ndepends_on = None\n")
        sig_up, sig_down = "def upgrade():", "def downgrade():"
    text = (f'"""{message}\n\nRevision ID: {rev_id}\nRevises: {revises}\n'
            f'Create Date: {create_date}\n\n"""\n'
            f"{header}\n\n{sig_up}\n{body(upgrade_ops)}\n\n\n{sig_down}\n{body(downgrade_ops)}\n")
    path.write_text(text)
    if commit:
        git_commit(tree, [path], f"revision {rev_id}")
    return path
