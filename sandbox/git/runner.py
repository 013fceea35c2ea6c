"""The one way sandbox runs git: one environment, one deadline, one error.

Every git process (on the host) starts here. ``LC_ALL=C`` (git's messages and words such as
"initializing" stay readable), ``GIT_TERMINAL_PROMPT=0`` (never interactive), a deadline
(:func:`git_timeout`) after which the whole process group is killed, and, for anything that is
not main's own repository and checkout (``trusted=False``), ``core.fsmonitor=false`` and
``core.hooksPath=/dev/null``: nothing a workspace wrote runs on the host. Over a work tree
sandbox does not trust, every filter driver the configuration defines is blanked too: a
workspace's ``.gitattributes`` may name any of them (``* filter=lfs``), and git would run its
``clean`` command on the host over the workspace's files.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from ..errors import ServiceUnavailable, UnsafeToTell, UsageError, WorkspaceError

DEFAULT_GIT_TIMEOUT = 30.0
# Commands that check out a whole tree (clone, worktree add/remove) may take longer than a probe.
LONG = 10

# What git must not run or consult for a repository (or work tree) sandbox does not trust.
HARDENED = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null")


class GitFailed(WorkspaceError):
    """git exited non-zero: ``args`` (what ran, after ``git``), ``returncode`` and ``stderr``."""

    def __init__(self, args: tuple[str, ...], returncode: int, stderr: str, *, where: str = "") -> None:
        self.args_run = args
        self.returncode = returncode
        self.stderr = stderr
        verb = args[0] if args else ""
        super().__init__(f"git {verb} failed{' in ' + where if where else ''}: "
                         f"{meaningful(stderr, f'git exited {returncode}')}")


class GitTimedOut(UnsafeToTell):
    """git outlived :func:`git_timeout` (a FIFO, a hostile include): its process group was killed."""


def git_timeout() -> float:
    """Seconds any one git call may take (``SANDBOX_GIT_TIMEOUT``, default 30): a workspace's
    repository can hold a FIFO or a hostile config that would otherwise block git forever."""
    raw = os.environ.get("SANDBOX_GIT_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_GIT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"SANDBOX_GIT_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise UsageError(f"SANDBOX_GIT_TIMEOUT={raw!r} must be a positive number of seconds")
    return value


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every git process gets (plus ``extra``: ``GIT_INDEX_FILE``, …)."""
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", **(extra or {})}


def argv(cwd: Path | str, args: tuple[str, ...] | list[str], *, trusted: bool,
         work_tree: Path | None = None) -> list[str]:
    """The full command line for ``git -C cwd [hardening] [--work-tree] ARGS``."""
    pre = ["git", "-C", str(cwd)]
    if not trusted:
        pre += HARDENED
        if work_tree is not None:
            pre += filters_blanked(cwd)
    if work_tree is not None:
        pre.append(f"--work-tree={work_tree}")
    return [*pre, *args]


_FILTER_KEY = re.compile(r"^filter\.(.+)\.[^.]+$")
_filters_seen: dict[str, tuple[tuple[Any, ...], tuple[str, ...]]] = {}


def _config_stamp(cwd: Path | str) -> tuple[Any, ...]:
    """When the configuration files git reads for ``cwd`` last changed (what a cached answer
    of :func:`filters_blanked` depends on; an ``include`` elsewhere is read again each minute)."""
    home = Path(os.environ.get("HOME", "/root"))
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    files = [Path(cwd) / ".git" / "config", Path(cwd) / "config", home / ".gitconfig", xdg / "git" / "config",
             Path("/etc/gitconfig"), *(Path(os.environ[v]) for v in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM")
                                        if os.environ.get(v))]
    stamp: list[Any] = [int(time.monotonic() // 60)]
    for f in files:
        try:
            st = f.stat()
            stamp.append((st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


def filters_blanked(cwd: Path | str) -> list[str]:
    """``-c filter.NAME.clean=`` (and ``smudge``, ``process``, ``required=false``) for every
    filter driver git's configuration for ``cwd`` defines: over an untrusted work tree no
    filter runs, whatever its ``.gitattributes`` names. Fails closed: a configuration git cannot
    read raises :class:`UnsafeToTell`."""
    key, stamp = str(cwd), _config_stamp(cwd)
    seen = _filters_seen.get(key)
    if seen is None or seen[0] != stamp:
        res = _spawn(["git", "-C", key, *HARDENED, "config", "--null", "--name-only", "--get-regexp", r"^filter\."],
                     timeout=git_timeout(), env=environment(), input=None, text=True)
        if res.returncode not in (0, 1):        # 1: no such key
            raise UnsafeToTell(f"cannot read git's configuration in {cwd}: {meaningful(res.stderr, 'git config failed')}")
        names = sorted({m.group(1) for k in res.stdout.split("\0") if (m := _FILTER_KEY.match(k.strip()))})
        if any("=" in n for n in names):     # `-c` would split there: blanking it is not possible
            raise UnsafeToTell(f"git's configuration in {cwd} names a filter with '=' in its name")
        seen = _filters_seen[key] = (stamp, tuple(names))
    out: list[str] = []
    for name in seen[1]:
        out += ["-c", f"filter.{name}.clean=", "-c", f"filter.{name}.smudge=", "-c", f"filter.{name}.process=",
                "-c", f"filter.{name}.required=false"]
    return out


def _spawn(cmd: list[str], *, timeout: float, env: dict[str, str], input: str | bytes | None,
           text: bool) -> subprocess.CompletedProcess[Any]:
    """Run with a deadline. git runs in a session of its own, so that on timeout the whole group
    dies: `git fetch` spawns upload-pack, which is what blocks on a FIFO, and killing only the
    parent would leave it (holding our pipes) behind. Raises ``TimeoutExpired``."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, env=env,
                                start_new_session=True)
    except FileNotFoundError as exc:
        raise ServiceUnavailable("git is not installed", hint="apt-get install git") from exc
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def call(cwd: Path | str, *args: str, trusted: bool, input: str | bytes | None = None,
         timeout: float | None = None, env: dict[str, str] | None = None, work_tree: Path | None = None,
         binary: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run ``git -C cwd ARGS`` and return what it did (any exit code: the caller decides).

    A call that outlives its deadline (``timeout``, else :func:`git_timeout`) raises
    :class:`GitTimedOut`; git missing raises :class:`ServiceUnavailable`. ``binary``: stdout is
    bytes (stderr is always text).
    """
    limit = timeout or git_timeout()
    cmd = argv(cwd, args, trusted=trusted, work_tree=work_tree)
    try:
        res = _spawn(cmd, timeout=limit, env=environment(env), input=input, text=not binary)
    except subprocess.TimeoutExpired as exc:
        where = f" over {work_tree}" if work_tree is not None else f" in {cwd}"
        why = "" if trusted else ": the workspace's repository may hold a FIFO or a hostile config"
        raise GitTimedOut(f"git {args[0] if args else ''}{where} did not finish within {limit:g} s "
                          f"(SANDBOX_GIT_TIMEOUT){why}") from exc
    if binary and isinstance(res.stderr, bytes):
        res.stderr = res.stderr.decode(errors="replace")
    return res


def run(cwd: Path | str, *args: str, trusted: bool, input: str | bytes | None = None,
        timeout: float | None = None, env: dict[str, str] | None = None,
        work_tree: Path | None = None) -> str:
    """Run ``git -C cwd ARGS``; its stdout, or :class:`GitFailed` when it exits non-zero."""
    res = call(cwd, *args, trusted=trusted, input=input, timeout=timeout, env=env, work_tree=work_tree)
    if res.returncode != 0:
        raise GitFailed(tuple(args), res.returncode, res.stderr, where=str(cwd))
    return str(res.stdout)


def meaningful(text: str, default: str) -> str:
    """The meaningful line of git's error output (``fatal: …``)."""
    lines = [ln.strip() for ln in text.replace("stderr:", "").splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
    return (fatal or lines or [default])[-1].strip("'")


def failure(res: subprocess.CompletedProcess[Any]) -> str:
    """What a failed git call said."""
    err = res.stderr if isinstance(res.stderr, str) else bytes(res.stderr or b"").decode(errors="replace")
    return meaningful(err, f"git exited {res.returncode}")


def version() -> str | None:
    """``git --version`` (None when git is not installed or does not answer)."""
    try:
        res = call(".", "--version", trusted=True)
    except (ServiceUnavailable, GitTimedOut):
        return None
    return res.stdout.strip() if res.returncode == 0 else None
