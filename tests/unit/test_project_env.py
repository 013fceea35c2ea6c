"""The project's environment: [workspace.env] mapping, the env file, the project root, static reading."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from sandbox import config as cfg
from sandbox.databases.base import ConnInfo
from sandbox.envfile import write_block
from sandbox.errors import ConfigError, MigrationError
from sandbox.migrations.scan import heads_of, read_layout, scan_revisions
from sandbox.project import project_env
from sandbox.git import find_project_root

DB = ConnInfo(host="127.0.0.1", port=30001, user="ws_a", password="s3cret", dbname="app",
              container_host="db", container_port=5432)


def test_workspace_env_maps_the_project_s_own_names(tmp_path: Path) -> None:
    config = cfg.parse(tmp_path, {"workspace": {"env": {
        "POSTGRES_SERVER": "${PGHOST}", "POSTGRES_PORT": "${PGPORT}", "POSTGRES_USER": "${PGUSER}",
        "POSTGRES_PASSWORD": "${PGPASSWORD}", "POSTGRES_DB": "${PGDATABASE}", "PRICE": "$$5",
        "PLAIN": "x"}}}, environ={})
    inside = project_env(config, {"SANDBOX_WORKSPACE": "a"}, DB, container=True)
    assert (inside["POSTGRES_SERVER"], inside["POSTGRES_PORT"]) == ("db", "5432")
    assert (inside["POSTGRES_USER"], inside["POSTGRES_PASSWORD"], inside["POSTGRES_DB"]) == ("ws_a", "s3cret", "app")
    assert inside["PRICE"] == "$5" and inside["PLAIN"] == "x"
    assert inside["SANDBOX_DATABASE_URL"] == inside["DATABASE_URL"] == "postgresql://ws_a:s3cret@db:5432/app"
    host = project_env(config, {}, DB, container=False)
    assert (host["POSTGRES_SERVER"], host["POSTGRES_PORT"]) == ("127.0.0.1", "30001")


def test_a_reference_to_an_unknown_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$\{HOME\} is not a workspace value"):
        cfg.parse(tmp_path, {"workspace": {"env": {"X": "${HOME}/x"}}}, environ={})


def test_the_managed_block_never_follows_a_symlink(tmp_path: Path) -> None:
    """A workspace can point its .env at a host file: the host must not read or write through it."""
    host_file = tmp_path / "host-secret"
    host_file.write_text("do not leak\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".env").symlink_to(host_file)
    write_block(ws / ".env", {"DATABASE_URL": "postgresql://a"})
    assert host_file.read_text() == "do not leak\n"
    assert not (ws / ".env").is_symlink()
    assert "do not leak" not in (ws / ".env").read_text()
    assert "DATABASE_URL=postgresql://a" in (ws / ".env").read_text()


def test_the_project_root_of_a_workspace_comes_from_its_path(tmp_path: Path) -> None:
    """No git runs inside a workspace's repository to find the project: the path says it."""
    main = tmp_path / "proj"
    subprocess.run(["git", "init", "-q", str(main)], check=True)
    inner = main / ".sandbox" / "worktrees" / "a" / "src"
    inner.mkdir(parents=True)
    # a hostile repository in the workspace that would mislead `git rev-parse`
    subprocess.run(["git", "init", "-q", str(main / ".sandbox" / "worktrees" / "a")], check=True)
    assert find_project_root(inner) == main.resolve()
    assert find_project_root(main) == main.resolve()


def _project(tmp_path: Path, ini: str) -> Path:
    (tmp_path / "alembic.ini").write_text(ini)
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    return tmp_path


def test_layout_outside_the_tree_is_refused(tmp_path: Path) -> None:
    tree = _project(tmp_path, "[alembic]\nscript_location = /etc\n")
    with pytest.raises(MigrationError, match="outside"):
        read_layout(tree, "alembic.ini")


def test_static_scan_reads_labels_and_depends_on_without_importing(tmp_path: Path) -> None:
    tree = _project(tmp_path, "[alembic]\nscript_location = migrations\n")
    marker = tmp_path / "ran"
    (tree / "migrations" / "versions" / "a.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nrevision = 'a'\ndown_revision = None\n"
        "branch_labels = ('core',)\ndepends_on = None\n")
    (tree / "migrations" / "versions" / "b.py").write_text(
        "revision: str = 'b'\ndown_revision: str = 'a'\nbranch_labels = None\ndepends_on = ['a']\n")
    layout = read_layout(tree, "alembic.ini")
    assert layout is not None and layout.workdir == tree.resolve()
    revs = scan_revisions(tree, layout)
    assert revs["a"].branch_labels == ("core",) and revs["b"].depends_on == ("a",)
    assert heads_of(revs) == ["b"]
    assert not marker.exists()


def test_duplicate_revision_ids_are_an_error(tmp_path: Path) -> None:
    tree = _project(tmp_path, "[alembic]\nscript_location = migrations\n")
    for name in ("x1.py", "x2.py"):
        (tree / "migrations" / "versions" / name).write_text("revision = 'x'\ndown_revision = None\n")
    layout = read_layout(tree, "alembic.ini")
    assert layout is not None
    with pytest.raises(MigrationError, match="declared twice"):
        scan_revisions(tree, layout)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_write_block_hands_the_file_to_the_container_user(tmp_path: Path) -> None:
    write_block(tmp_path / ".env", {"A": "1"}, owner=(1000, 1000))
    st = (tmp_path / ".env").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 1000, 0o600)
