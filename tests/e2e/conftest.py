"""End-to-end fixtures: a throwaway copy of the demo project, initialised with sandbox."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import pg_bin_dir, service_missing

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "templates" / "demo"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


def make_demo_repo(dest: Path, toml: str) -> Path:
    shutil.copytree(DEMO, dest)
    (dest / "sandbox.toml").write_text(toml)
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], check=True)
    git(dest, "config", "user.name", "t")
    git(dest, "config", "user.email", "t@example.com")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "demo project")
    return dest


def cli(repo: Path, *args: str, check: int | None = 0, timeout: float = 300,
        quiet: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "sandbox", *(["-q"] if quiet else []), "--project", str(repo), *args],
                         capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **GIT_ENV, "NO_COLOR": "1", "COLUMNS": "200"})
    if check is not None:
        assert res.returncode == check, f"sandbox {' '.join(args)} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def add_revision(tree: Path, rev: str, down: str, body: str, *, commit: bool = True, extra: str = "") -> Path:
    path = tree / "migrations" / "versions" / f"{rev}.py"
    path.write_text(f'''"""{rev}

Revision ID: {rev}
Revises: {down}
Create Date: 2026-11-29 00:00:00

"""
from alembic import op
import sqlalchemy as sa
{extra}
revision = "{rev}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    {body}


def downgrade() -> None:
    pass
''')
    if commit:
        git(tree, "add", "-A")
        git(tree, "commit", "-q", "-m", f"migration {rev}")
    return path


def toml_for(strategy: str, server: str = "local", runtime: str = "none") -> str:
    return (f'[workspace]\nruntime = "{runtime}"\nports = 5\n\n'
            f'[database]\nstrategy = "{strategy}"\nserver = "{server}"\nseed = ["db/seed.sql"]\n')


@pytest.fixture
def demo_factory(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Make an initialised demo project with the given sandbox.toml; everything is removed after."""
    made: list[Path] = []

    def make(toml: str) -> Path:
        repo = make_demo_repo(tmp_path / f"demo{len(made)}", toml)
        made.append(repo)
        cli(repo, "init")
        return repo

    yield make
    for repo in made:
        from sandbox import Sandbox
        try:
            Sandbox.open(repo).deinit(force=True)
        except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
            print(f"cleanup of {repo} failed: {exc}")


@pytest.fixture
def need_pg() -> None:
    if pg_bin_dir() is None:
        service_missing("PostgreSQL binaries not found")
