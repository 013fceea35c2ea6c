"""Which image the project's code runs in, and when a Dockerfile's image must be rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import config as cfg
from sandbox.errors import ConfigError
from sandbox.runtime.images import ProjectImage, inputs_hash


def test_the_configured_image_when_nothing_is_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_WORKSPACE_IMAGE", raising=False)
    config = cfg.parse(tmp_path, {"workspace": {"image": "acme/dev:1"}}, environ={})
    assert ProjectImage(config).source() == ("acme/dev:1", None, None)


def test_a_devcontainer_image_or_dockerfile_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDBOX_WORKSPACE_IMAGE", raising=False)
    dc = tmp_path / ".devcontainer"
    dc.mkdir()
    (dc / "devcontainer.json").write_text('{\n  // a comment\n  "image": "acme/devcontainer:2",\n}\n')
    config = cfg.parse(tmp_path, {}, environ={})
    assert ProjectImage(config).source() == ("acme/devcontainer:2", None, None)
    (dc / "devcontainer.json").write_text('{"build": {"dockerfile": "Dockerfile", "context": ".."}, '
                                          '/* block */ "name": "x // not a comment"}')
    what, dockerfile, context = ProjectImage(config).source()
    assert what == "dockerfile" and dockerfile == (dc / "Dockerfile").resolve() and context == tmp_path.resolve()


def test_sandbox_toml_dockerfile_wins_and_must_exist(tmp_path: Path) -> None:
    config = cfg.parse(tmp_path, {"workspace": {"dockerfile": "backend/Dockerfile"}}, environ={})
    what, dockerfile, context = ProjectImage(config).source()
    assert what == "dockerfile" and dockerfile == tmp_path / "backend" / "Dockerfile"
    assert context == tmp_path / "backend"
    with pytest.raises(ConfigError, match="does not exist"):
        ProjectImage(config).tag()


def test_the_inputs_hash_follows_the_files_the_build_reads(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\nCOPY req.txt /\n")
    (tmp_path / "req.txt").write_text("alembic==1.13\n")
    (tmp_path / ".dockerignore").write_text("notes/\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("1")
    first = inputs_hash(tmp_path / "Dockerfile", tmp_path, {})
    (tmp_path / "notes" / "a.md").write_text("2")                       # ignored by .dockerignore
    (tmp_path / ".sandbox").mkdir()
    (tmp_path / ".sandbox" / "registry.db").write_text("state")         # never part of a build
    assert inputs_hash(tmp_path / "Dockerfile", tmp_path, {}) == first
    (tmp_path / "req.txt").write_text("alembic==1.14\n")
    second = inputs_hash(tmp_path / "Dockerfile", tmp_path, {})
    assert second != first
    assert inputs_hash(tmp_path / "Dockerfile", tmp_path, {"SANDBOX_CA_CERT": "pem"}) != second
