"""Docs are executable: every command has help text and appears in the README."""

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from sandbox import config as cfg
from sandbox.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> list[tuple[str, Any]]:
    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        if hasattr(cmd, "commands"):
            out += [(f"{name} {sub}", c) for sub, c in cmd.commands.items()]
        else:
            out.append((name, cmd))
    return out


@pytest.mark.parametrize("name, cmd", _commands(), ids=[n for n, _ in _commands()])
def test_every_command_has_help_and_is_documented(name: str, cmd: Any) -> None:
    assert cmd.help and len(cmd.help.strip()) > 10, f"{name} has no help text"
    readme = (ROOT / "README.md").read_text()
    assert f"sandbox {name}" in readme, f"`sandbox {name}` is missing from README.md"
    result = CliRunner().invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0


def test_contract_commands_exist() -> None:
    names = {n for n, _ in _commands()}
    for required in ["init", "up", "ls", "env", "exec", "shell", "stop", "rm", "db url", "db reset",
                     "db checkpoint", "db restore", "db checkpoints", "db psql", "db baseline",
                     "migrate status", "migrate check", "migrate lint", "migrate rebase", "merge", "sync",
                     "gc", "doctor"]:
        assert required in names


def test_template_config_documents_every_key(tmp_path: Path) -> None:
    import dataclasses
    import tomllib
    data = tomllib.loads((ROOT / "templates" / "sandbox.toml").read_text())
    cfg.parse(tmp_path, data, environ={})
    for section, cls in [("workspace", cfg.WorkspaceConfig), ("database", cfg.DatabaseConfig),
                         ("migrations", cfg.MigrationsConfig)]:
        text = (ROOT / "templates" / "sandbox.toml").read_text()
        for f in dataclasses.fields(cls):
            assert f"{f.name} =" in text or f"[{section}.{f.name}]" in text, f"[{section}] {f.name} undocumented"
