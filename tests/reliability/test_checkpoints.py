"""Checkpoints are never overwritten or lost silently: an existing label needs --force, reset and
restore keep what they replace (a ring of 3 automatic checkpoints), and checkpoints can be dropped."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from sandbox import Sandbox

from .conftest import cli, rtoml


def _value(url: str) -> int | None:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT to_regclass('marks') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        got = c.execute("SELECT max(v) FROM marks").fetchone()
        return int(got[0]) if got and got[0] is not None else None


def _mark(url: str, v: int) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS marks (v int)")
        c.execute("INSERT INTO marks VALUES (%s)", (v,))


def _labels(repo: Path, name: str) -> list[dict[str, object]]:
    return json.loads(cli(repo, "db", "checkpoints", name, "--json").stdout)  # type: ignore[no-any-return]


@pytest.mark.postgres
@pytest.mark.parametrize("strategy", ["template", "schema"])
def test_labels_are_not_overwritten_and_resets_keep_three(demo_factory, need_pg, strategy: str) -> None:  # type: ignore[no-untyped-def]
    repo = demo_factory(rtoml(strategy))
    cli(repo, "up", "w")
    url = Sandbox.open(repo).db_url("w")
    _mark(url, 1)
    cli(repo, "db", "checkpoint", "w", "one")
    _mark(url, 2)
    refused = cli(repo, "db", "checkpoint", "w", "one", check=1)
    assert "already has a checkpoint 'one'" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    cli(repo, "db", "restore", "w", "one")               # the refusal changed nothing: still mark 1
    assert _value(url) == 1
    _mark(url, 3)
    cli(repo, "db", "checkpoint", "w", "one", "--force")
    for bad, why in (("auto-1", "automatic"), ("a b", "invalid checkpoint label"), ("x..y", "invalid checkpoint label"),
                     (".x", "invalid checkpoint label")):
        res = cli(repo, "db", "checkpoint", "w", bad, check=2)
        assert why in res.stderr and "workspace name" not in res.stderr, res.stderr

    autos: list[str] = []
    for v in (10, 11, 12, 13):                       # four resets: each keeps what it replaced
        _mark(url, v)
        cli(repo, "db", "reset", "w")
        assert _value(url) is None
        labels = _labels(repo, "w")
        autos = [str(c["label"]) for c in labels if c["auto"]]
        assert len(autos) == min(3, v - 8)        # the restore above kept one too
    assert len(autos) == 3 and "one" in [c["label"] for c in _labels(repo, "w")]
    newest = autos[-1]
    cli(repo, "db", "restore", "w", newest)
    assert _value(url) == 13
    autos_after = [str(c["label"]) for c in _labels(repo, "w") if c["auto"]]
    assert len(autos_after) == 3 and autos_after[0] == autos[1]   # the oldest went; the reset state is kept

    cli(repo, "db", "drop-checkpoint", "w", "one")
    assert "one" not in [c["label"] for c in _labels(repo, "w")]
    missing = cli(repo, "db", "drop-checkpoint", "w", "one", check=2)
    assert "no checkpoint 'one'" in missing.stderr
