from pathlib import Path

import pytest

from sandbox import config as cfg
from sandbox.errors import ConfigError


def test_defaults_when_file_absent(tmp_path: Path) -> None:
    c = cfg.load(tmp_path, environ={})
    assert c.workspace.runtime == "docker"
    assert c.workspace.ports == 10
    assert c.database.strategy == "auto"
    assert c.migrations.policy == "additive"


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    (tmp_path / "sandbox.toml").write_text('[workspace]\nports = 4\n')
    c = cfg.load(tmp_path, environ={})
    assert c.workspace.ports == 4
    assert c.workspace.image == cfg.DEFAULT_WORKSPACE_IMAGE


def test_environment_overrides_images(tmp_path: Path) -> None:
    c = cfg.load(tmp_path, environ={"SANDBOX_WORKSPACE_IMAGE": "w:1", "SANDBOX_POSTGRES_IMAGE": "postgres:16"})
    assert c.workspace.image == "w:1"
    assert c.database.image == "postgres:16"


@pytest.mark.parametrize("text, key", [
    ('[workspace]\nportz = 3\n', "workspace.portz"),
    ('[nope]\nx = 1\n', "nope"),
    ('[workspace]\nports = "ten"\n', "workspace.ports"),
    ('[workspace]\nports = 0\n', "workspace.ports"),
    ('[workspace]\nruntime = "podman"\n', "workspace.runtime"),
    ('[database]\nstrategy = "zfs"\n', "database.strategy"),
    ('[database]\nseed = ["../../etc/passwd"]\n', "database.seed"),
    ('[database]\nseed = ["/etc/passwd"]\n', "database.seed"),
    ('[workspace]\nworktrees = "../elsewhere"\n', "workspace.worktrees"),
    ('[migrations]\npolicy = "yolo"\n', "migrations.policy"),
    ('[database]\nserver = "url"\n', "database.url"),
    ('[workspace]\nsetup = [1, 2]\n', "workspace.setup"),
])
def test_invalid_values_name_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "sandbox.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        cfg.load(tmp_path, environ={})
    assert info.value.key == key
    assert "sandbox.toml" in str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    (tmp_path / "sandbox.toml").write_text("[workspace\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        cfg.load(tmp_path, environ={})


def test_config_is_frozen(tmp_path: Path) -> None:
    c = cfg.load(tmp_path, environ={})
    with pytest.raises(Exception):
        c.workspace.ports = 3  # type: ignore[misc]


def test_default_toml_is_valid(tmp_path: Path) -> None:
    import tomllib
    text = cfg.DEFAULT_TOML.format(runtime="none", strategy="template", migrations="alembic.ini",
                                   seed='"db/seed.sql"')
    c = cfg.parse(tmp_path, tomllib.loads(text), environ={})
    assert c.workspace.runtime == "none"
    assert c.database.strategy == "template"
