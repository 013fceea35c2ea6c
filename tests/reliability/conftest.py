"""Reliability tests: hostile input, damaged state, full disks, many networks.

They reuse the end-to-end helpers (a throwaway demo project initialised with sandbox).
"""

from __future__ import annotations

from e2e.conftest import cli, demo_factory, git, make_demo_repo, need_pg, toml_for  # noqa: F401
