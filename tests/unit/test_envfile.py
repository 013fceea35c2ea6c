from pathlib import Path

from sandbox.envfile import BEGIN, END, remove_block, render, write_block


def test_managed_block_keeps_user_lines(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MY_KEY=1\n# my comment\n")
    write_block(env, {"DATABASE_URL": "postgresql://u:p@h:1/d", "X": "a b"})
    write_block(env, {"DATABASE_URL": "postgresql://u:p@h:2/d"})
    text = env.read_text()
    assert text.startswith("MY_KEY=1\n# my comment\n")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "h:2" in text and "h:1" not in text and "X=" not in text
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    remove_block(env)
    assert env.read_text() == "MY_KEY=1\n# my comment\n"


def test_render_formats() -> None:
    assert render({"A": "x y"}) == 'A="x y"\n'
    assert render({"A": "it's"}, "shell") == "export A='it'\\''s'\n"
