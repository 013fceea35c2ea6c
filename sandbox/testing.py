"""Public fakes: build a real :class:`~sandbox.api.Sandbox` without Docker or PostgreSQL.

Like httpx's ``MockTransport``: the orchestration is sandbox's own (the registry, the intent
journal, git worktrees of a real repository, recovery, gc), and only the collaborators that
reach engines are replaced. Use them to test automation built on sandbox, and to test every
orchestration decision in milliseconds::

    from sandbox.testing import fake_sandbox

    def test_rm_refuses_unsaved_work(tmp_path):
        sb = fake_sandbox(tmp_path)
        sb.up(["a"])
        (sb.config.worktrees_dir / "a" / "new.txt").write_text("work")
        with pytest.raises(UnsafeRemoval):
            sb.rm("a")

* :class:`FakeRuntime`: containers as a dictionary (``name = "none"``, so workspaces are git
  worktrees of the main checkout); ``fail`` makes one method raise.
* :class:`FakeStrategy`: databases and checkpoints as dictionaries; ``leftovers`` are owned
  resources gc must classify.
* :class:`FakeProjectRunner`: records each command and answers with a chosen exit code.
* :class:`FakeClock`: the time checkpoint labels are made from, moved by hand.
* :func:`fake_sandbox`: a temporary git repository with ``sandbox.toml``, initialised, and its
  ``Sandbox`` built with the fakes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from . import config as config_mod
from .api import Sandbox
from .checks import Check, OwnedResource
from .databases.base import CheckpointInfo, ConnInfo
from .errors import DatabaseError, SandboxError, UsageError
from .git import run
from .project import RunResult
from .results import Event
from .runtime.base import WorkspaceSpec

__all__ = ["FakeClock", "FakeProjectRunner", "FakeRuntime", "FakeSandbox", "FakeStrategy", "Fakes", "fake_sandbox", "reopen",
           "git_repo"]


class FakeClock:
    """A clock that moves only when told (``advance``)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += timedelta(seconds=seconds)


class _Persisted:
    """With ``state_file`` set, the fake's state lives in that file, read before and written
    after each call: it survives a process that sandbox's kill points SIGKILL (a test forks the
    operation, and a new ``Sandbox`` on the same file sees what the killed one left)."""

    state_file: Path | None
    _persisted: tuple[str, ...] = ()

    def _load(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            for key, value in pickle.loads(self.state_file.read_bytes()).items():
                object.__setattr__(self, key, value)

    def _save(self) -> None:
        if self.state_file is not None:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps({k: getattr(self, k) for k in self._persisted}))
            os.replace(tmp, self.state_file)


_F = TypeVar("_F", bound=Callable[..., Any])


_calls = threading.RLock()      # the fakes answer one call at a time, as one engine would
_depth = threading.local()


def _persist(fn: _F) -> _F:
    """Read the state before the outermost call and write it after (calls made inside it see it)."""
    @functools.wraps(fn)
    def wrapper(self: _Persisted, *args: Any, **kwargs: Any) -> Any:
        with _calls:
            outer = getattr(_depth, "n", 0) == 0
            if outer:
                self._load()
            _depth.n = getattr(_depth, "n", 0) + 1
            try:
                return fn(self, *args, **kwargs)
            finally:
                _depth.n -= 1
                if outer:
                    self._save()
    return wrapper  # type: ignore[return-value]


def _raise(fail: Mapping[str, SandboxError], what: str) -> None:
    if what in fail:
        raise fail[what]


@dataclass
class FakeRuntime(_Persisted):
    """The container runtime as a dictionary: workspace → "running" or "exited".

    ``fail["up"] = ServiceUnavailable(...)`` makes ``up`` raise (any method name works);
    ``calls`` lists ``(method, workspace)`` in order; ``exec_code`` is what ``exec`` returns.
    """

    name: str = "none"
    containers: dict[str, str] = field(default_factory=dict)
    networks: set[str] = field(default_factory=set)
    fail: dict[str, SandboxError] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    exec_code: int = 0
    state_file: Path | None = None
    _persisted = ("containers", "networks")

    def _call(self, method: str, workspace: str) -> None:
        self.calls.append((method, workspace))
        _raise(self.fail, method)

    @_persist
    def ensure_network(self, project: str, name: str) -> str | None:
        self._call("ensure_network", name)
        return None

    @_persist
    def up(self, spec: WorkspaceSpec) -> None:
        self._call("up", spec.name)
        self.containers[spec.name] = "running"

    @_persist
    def stop(self, project: str, name: str) -> None:
        self._call("stop", name)
        if name in self.containers:
            self.containers[name] = "exited"

    @_persist
    def remove(self, project: str, name: str) -> None:
        self._call("remove", name)
        self.containers.pop(name, None)

    @_persist
    def status(self, project: str, name: str) -> str:
        _raise(self.fail, "status")
        return self.containers.get(name, "absent") if self.name != "none" else "none"

    @_persist
    def statuses(self, project: str) -> dict[str, str]:
        _raise(self.fail, "statuses")
        self.calls.append(("statuses", ""))
        return dict(self.containers) if self.name != "none" else {}

    @_persist
    def exec(self, spec: WorkspaceSpec, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             interactive: bool = False, output: Callable[[str], None] | None = None) -> int:
        self._call("exec", spec.name)
        return self.exec_code

    @_persist
    def owned(self, project: str) -> list[OwnedResource]:
        _raise(self.fail, "owned")
        return [OwnedResource("container", f"fake-{n}", n) for n in self.containers]

    @_persist
    def remove_owned(self, resource: OwnedResource) -> None:
        self._call("remove_owned", resource.id)
        if resource.workspace is not None:
            self.containers.pop(resource.workspace, None)

    @_persist
    def doctor(self) -> list[Check]:
        return [Check("runtime", True, "fake runtime")]


@dataclass
class _FakeDb:
    running: bool = True
    generation: int = 0                        # bumped by reset and restore: which copy is in place
    source: str = "baseline"                   # what the current copy was made from
    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)


@dataclass
class FakeStrategy(_Persisted):
    """Workspace databases as a dictionary. ``leftovers`` are owned resources that belong to no
    workspace (or to an unknown one): what gc must classify. ``fail`` as for :class:`FakeRuntime`."""

    name: str = "fake"
    clock: Callable[[], datetime] = field(default_factory=FakeClock)
    databases: dict[str, _FakeDb] = field(default_factory=dict)
    leftovers: list[OwnedResource] = field(default_factory=list)
    fail: dict[str, SandboxError] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    baseline_built: int = 0
    removed: list[OwnedResource] = field(default_factory=list)
    state_file: Path | None = None
    _persisted = ("databases", "leftovers", "baseline_built", "removed")

    def test_env(self, ws: str, db: ConnInfo, *, container: bool = False) -> dict[str, str]:
        """No test role: only a cluster per workspace may grant CREATEDB."""
        return {}

    def _call(self, method: str, ws: str) -> None:
        self.calls.append((method, ws))
        _raise(self.fail, method)

    def _conn(self, dbname: str) -> ConnInfo:
        return ConnInfo(host="127.0.0.1", port=1, user="fake", password="fake-secret", dbname=dbname)

    def _db(self, ws: str) -> _FakeDb:
        if ws not in self.databases:
            raise DatabaseError(f"workspace {ws!r} has no database")
        return self.databases[ws]

    @_persist
    def build_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        self._call("build_baseline", "")
        populate(self._conn("fake_baseline"))
        self.baseline_built += 1

    @_persist
    def import_baseline(self, dump: Path) -> None:
        self._call("import_baseline", "")
        self.baseline_built += 1

    @_persist
    def update_baseline(self, populate: Callable[[ConnInfo], None]) -> None:
        self.build_baseline(populate)

    @_persist
    def has_baseline(self) -> bool:
        return self.baseline_built > 0

    @_persist
    def baseline(self) -> ConnInfo:
        return self._conn("fake_baseline")

    @_persist
    def planned(self, ws: str, network: str | None = None) -> ConnInfo:
        return self._conn(f"fake_{ws}")

    @_persist
    def create(self, ws: str, network: str | None = None) -> ConnInfo:
        self._call("create", ws)
        self.databases.setdefault(ws, _FakeDb())
        return self.planned(ws, network)

    @_persist
    def info(self, ws: str, network: str | None = None) -> ConnInfo:
        self._db(ws)
        return self.planned(ws, network)

    @_persist
    def workspaces(self) -> set[str]:
        """Every workspace that has a database."""
        return set(self.databases)

    @_persist
    def exists(self, ws: str) -> bool:
        return ws in self.databases

    @_persist
    def start(self, ws: str, network: str | None = None) -> None:
        self._call("start", ws)
        self._db(ws).running = True

    @_persist
    def stop(self, ws: str) -> None:
        self._call("stop", ws)
        if ws in self.databases:
            self.databases[ws].running = False

    @_persist
    def reset(self, ws: str, network: str | None = None) -> ConnInfo:
        self._call("reset", ws)
        db = self._db(ws)
        db.generation, db.source, db.running = db.generation + 1, "baseline", True
        return self.planned(ws, network)

    @_persist
    def drop(self, ws: str) -> None:
        self._call("drop", ws)
        self.databases.pop(ws, None)

    @_persist
    def checkpoint(self, ws: str, label: str) -> CheckpointInfo:
        self._call("checkpoint", ws)
        cp = CheckpointInfo(label, self.clock().isoformat(), 0)
        self._db(ws).checkpoints[label] = cp
        return cp

    @_persist
    def restore(self, ws: str, label: str, network: str | None = None) -> None:
        self._call("restore", ws)
        db = self._db(ws)
        if label not in db.checkpoints:
            raise UsageError(f"workspace {ws!r} has no checkpoint {label!r}")
        db.generation, db.source, db.running = db.generation + 1, label, True

    @_persist
    def checkpoints(self, ws: str) -> list[CheckpointInfo]:
        return sorted(self._db(ws).checkpoints.values(), key=lambda c: (c.created_at, c.label))

    @_persist
    def drop_checkpoint(self, ws: str, label: str) -> None:
        self._call("drop_checkpoint", ws)
        self._db(ws).checkpoints.pop(label, None)

    @contextlib.contextmanager
    @_persist
    def scratch(self, tag: str) -> Iterator[ConnInfo]:
        yield self._conn(f"fake_scratch_{tag}")

    @_persist
    def owned(self) -> list[OwnedResource]:
        _raise(self.fail, "owned")
        return ([OwnedResource("baseline", "fake_baseline", None, "baseline")] if self.baseline_built else []) + \
            [OwnedResource("database", f"fake_{ws}", ws) for ws in self.databases] + list(self.leftovers)

    @_persist
    def remove_owned(self, resource: OwnedResource) -> None:
        self._call("remove_owned", resource.id)
        self.removed.append(resource)
        if resource in self.leftovers:
            self.leftovers.remove(resource)
        elif resource.workspace is not None:
            self.databases.pop(resource.workspace, None)

    @_persist
    def doctor(self) -> list[Check]:
        return [Check("database", True, "fake strategy")]


@dataclass
class FakeProjectRunner:
    """Runs nothing: records ``(argv, workspace)`` and answers ``code`` with ``output``."""

    kind: str = "fake"
    code: int = 0
    output: str = ""
    calls: list[tuple[tuple[str, ...], str | None]] = field(default_factory=list)

    def python(self, tree: Path) -> list[str]:
        return ["python3"]

    def runner_script(self) -> str:
        return "runner.py"

    def run(self, tree: Path, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
            db: ConnInfo | None, workspace: str | None = None, network: bool = True,
            writable: bool = False, timeout: float = 900) -> RunResult:
        self.calls.append((tuple(argv), workspace))
        return RunResult(self.code, self.output, "")


GIT_ENV = {"GIT_AUTHOR_NAME": "sandbox tests", "GIT_AUTHOR_EMAIL": "tests@sandbox.invalid",
           "GIT_COMMITTER_NAME": "sandbox tests", "GIT_COMMITTER_EMAIL": "tests@sandbox.invalid"}


def git_repo(path: Path, files: Mapping[str, str] | None = None) -> Path:
    """A git repository at ``path`` on branch ``main`` with one commit of ``files``."""
    path.mkdir(parents=True, exist_ok=True)

    def git(*args: str) -> None:
        run(path, *args, trusted=True, env=GIT_ENV)

    git("init", "-q", "-b", "main")
    for name, text in (files or {"README.md": "fake project\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git("add", "-A")
    git("commit", "-q", "-m", "initial")
    return path


@dataclass
class Fakes:
    """The collaborators a :func:`fake_sandbox` was built with, and the events it reported."""

    runtime: FakeRuntime
    strategy: FakeStrategy
    runner: FakeProjectRunner
    clock: FakeClock
    events: list[Event] = field(default_factory=list)


class FakeSandbox(Sandbox):
    """A :class:`Sandbox` built by :func:`fake_sandbox`; ``fakes`` holds its collaborators."""

    fakes: Fakes


def _build(repo: Path, fakes: Fakes) -> FakeSandbox:
    sb = FakeSandbox(config_mod.load(repo), runtime=fakes.runtime, strategy=fakes.strategy, runner=fakes.runner,
                     clock=fakes.clock, events=fakes.events.append)
    sb.fakes = fakes
    return sb


def fake_sandbox(tmp: Path, *, toml: str | None = None, init: bool = True, persistent: bool = False,
                 runtime: FakeRuntime | None = None, strategy: FakeStrategy | None = None,
                 runner: FakeProjectRunner | None = None, clock: FakeClock | None = None) -> FakeSandbox:
    """A real :class:`Sandbox` on a fresh git repository under ``tmp``, with fakes for the
    runtime, the database strategy, the project runner and the clock (``sb.fakes``).

    ``init``: ``sandbox init`` has run (the registry exists, the baseline is built).
    ``persistent``: the fakes keep their state in files under ``tmp`` (see :func:`reopen`)."""
    clock = clock or FakeClock()
    fakes = Fakes(runtime or FakeRuntime(), strategy or FakeStrategy(clock=clock), runner or FakeProjectRunner(),
                  clock)
    if persistent:
        fakes.runtime.state_file = tmp / "fake-runtime.pickle"
        fakes.strategy.state_file = tmp / "fake-strategy.pickle"
    text = toml if toml is not None else '[workspace]\nruntime = "none"\ncopy = []\n[database]\nseed = []\n'
    repo = git_repo(tmp / "project", {config_mod.CONFIG_FILE: text, ".gitignore": "/.sandbox/\n"})
    sb = _build(repo, fakes)
    if init:
        sb.init()
    return sb


def reopen(sb: FakeSandbox) -> FakeSandbox:
    """A new ``Sandbox`` (a new process, as far as sandbox can tell) on the same project and, for
    a ``persistent`` one, on the same fakes' state: what a command run after a crash sees."""
    old = sb.fakes
    clock = FakeClock(old.clock.now)
    runtime = FakeRuntime(name=old.runtime.name, state_file=old.runtime.state_file)
    strategy = FakeStrategy(name=old.strategy.name, clock=clock, state_file=old.strategy.state_file)
    if old.strategy.state_file is None:
        runtime.containers, strategy.databases = old.runtime.containers, old.strategy.databases
        strategy.leftovers, strategy.baseline_built = old.strategy.leftovers, old.strategy.baseline_built
    return _build(sb.root, Fakes(runtime, strategy, FakeProjectRunner(), clock))
