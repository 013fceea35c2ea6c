"""``sandbox git NAME -- ARGS``: a person's git command in a workspace's checkout.

In a Docker workspace the checkout's files belong to the container's user, so git runs inside the
container (the caller hands :func:`in_container` the runtime's exec): the host's git never reads
that repository, and its ownership check ("dubious ownership") is not weakened. In a ``runtime =
"none"`` workspace the checkout is a worktree of main's repository, owned by the user: git runs
on the host, hardened as for any workspace (no hooks, no fsmonitor), with the caller's terminal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ServiceUnavailable, UsageError
from .runner import argv, environment

Exec = Callable[[Sequence[str]], int]


def _check(args: Sequence[str]) -> list[str]:
    if not args:
        raise UsageError("no git arguments given: sandbox git NAME -- ARGS...")
    return list(args)


def in_container(exec_: Exec, args: Sequence[str]) -> int:
    """git ARGS inside the workspace's container (its working directory: the checkout); git's exit code."""
    return exec_(["git", *_check(args)])


def on_host(worktree: Path, args: Sequence[str]) -> int:
    """git ARGS in a host worktree, hardened, with this process's terminal; git's exit code."""
    cmd = argv(worktree, _check(args), trusted=False)
    env = environment()
    env.pop("GIT_TERMINAL_PROMPT", None)          # a person is at the terminal
    try:
        return subprocess.call(cmd, env=env)
    except FileNotFoundError as exc:
        raise ServiceUnavailable("git is not installed", hint="apt-get install git") from exc
