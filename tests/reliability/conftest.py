"""Reliability tests: hostile input, damaged state, full disks, many networks.

They reuse the end-to-end helpers (a throwaway demo project initialised with sandbox).
"""

from __future__ import annotations

from e2e.conftest import cli, demo_factory, git, make_demo_repo, need_pg, toml_for  # noqa: F401


def rtoml(strategy: str, server: str = "local", runtime: str = "none") -> str:
    """``toml_for`` with ports of their own (other suites on this host use the default block)."""
    return toml_for(strategy, server, runtime).replace("ports = 5\n", "ports = 5\nport_base = 41000\n")
