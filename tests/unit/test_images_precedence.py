"""The project image's precedence and the legacy builder's limits (issue #19), without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import config as config_mod
from sandbox.errors import WorkspaceError
from sandbox.runtime.images import ProjectImage, precedence, refuse_heredocs


def _project(root: Path, toml: str) -> config_mod.Config:
    (root / ".devcontainer").mkdir()
    (root / ".devcontainer" / "devcontainer.json").write_text('{"image": "registry.example/dev:1"}')
    (root / "sandbox.toml").write_text(toml)
    return config_mod.load(root)


def test_explicit_image_key_wins_over_devcontainer(tmp_path: Path) -> None:
    cfg = _project(tmp_path, '[workspace]\nimage = "sandbox/workspace:bookworm"\n')
    assert ProjectImage(cfg).source()[0] == "sandbox/workspace:bookworm"
    assert "wins over .devcontainer/" in precedence(cfg)


def test_devcontainer_used_when_sandbox_toml_names_no_image(tmp_path: Path) -> None:
    cfg = _project(tmp_path, '[workspace]\nruntime = "docker"\n')
    assert ProjectImage(cfg).source()[0] == "registry.example/dev:1"
    assert ".devcontainer/devcontainer.json" in precedence(cfg)


@pytest.mark.parametrize("text, bad", [
    ("FROM x\nRUN <<EOF\necho hi\nEOF\n", 2),
    ("FROM x\nRUN apt-get update\nCOPY <<-'END' /etc/motd\nhello\nEND\n", 3),
    ("FROM x\nRUN echo '<<not a heredoc' && true\n", None),
])
def test_heredocs_are_refused_clearly(tmp_path: Path, text: str, bad: int | None) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    if bad is None:
        refuse_heredocs(dockerfile)
        return
    with pytest.raises(WorkspaceError, match=rf"Dockerfile:{bad}: a heredoc") as info:
        refuse_heredocs(dockerfile)
    assert "scripts/build-images" not in str(info.value)
