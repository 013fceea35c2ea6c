"""Background jobs: commands longer than a tool call may last (clients drop calls after ~60 s).

``job_start`` runs the command in the workspace from a thread of the server and returns an id;
``job_read(id, offset)`` returns the output from ``offset`` on, whether it is still running and
its exit code; ``job_stop`` ends it. The command runs as the leader of a process group of its own
(``setsid``), whose id it reports first, so ``job_stop`` can signal the whole group inside the
container: Docker has no API to kill an exec.

Jobs live as long as the server process: when it ends, it stops the jobs still running. Their
output is kept in a bounded buffer.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..errors import SandboxError, UsageError
from ..runtime.base import OutputSink

MAX_BUFFER = 4 * 1024 * 1024        # characters of output kept per job
MAX_CHUNK = 64 * 1024               # characters returned per read
MAX_WAIT = 30.0                     # seconds a read may wait for news
_MARK = "sandbox-job-pgid "
# sh, made a session and group leader by setsid, says its pid (the group's id), then becomes the command
_WRAP = ("setsid", "-w", "sh", "-c", f'echo "{_MARK}$$"; exec "$@"', "sh")

Runner = Callable[[str, Sequence[str], OutputSink], int]        # (workspace, argv, sink) -> exit code


@dataclass
class Job:
    id: str
    workspace: str
    argv: list[str]
    started: float = field(default_factory=time.monotonic)
    text: str = ""
    base: int = 0                   # characters dropped from the front of ``text``
    pgid: int | None = None
    exit_code: int | None = None
    error: str | None = None
    running: bool = True
    stopped: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, line: str) -> None:
        with self.changed:
            if self.pgid is None and line.startswith(_MARK) and line[len(_MARK):].isdigit():
                self.pgid = int(line[len(_MARK):])
                self.changed.notify_all()
                return
            self.text += line + "\n"
            if len(self.text) > MAX_BUFFER:
                cut = len(self.text) - MAX_BUFFER
                self.text, self.base = self.text[cut:], self.base + cut
            self.changed.notify_all()

    def finish(self, code: int | None, error: str | None = None) -> None:
        with self.changed:
            self.exit_code, self.error, self.running = code, error, False
            if error:
                self.text += f"[sandbox: the job failed: {error}]\n"
            self.changed.notify_all()


@dataclass(frozen=True)
class Chunk:
    job: Job
    output: str
    offset: int
    next_offset: int
    skipped: int
    running: bool
    exit_code: int | None


class Jobs:
    """The jobs of one server: started with ``runner`` (the workspace's exec), in threads."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, workspace: str, argv: Sequence[str]) -> Job:
        if not argv:
            raise UsageError("argv is empty: give the command as a list, e.g. [\"pytest\", \"-q\"]")
        with self._lock:
            job = Job(id=f"job-{next(self._ids)}", workspace=workspace, argv=list(argv))
            self._jobs[job.id] = job
        thread = threading.Thread(target=self._run, args=(job,), name=f"sandbox-{job.id}", daemon=True)
        thread.start()
        return job

    def _run(self, job: Job) -> None:
        try:
            code = self.runner(job.workspace, [*_WRAP, *job.argv], job.add)
        except SandboxError as exc:
            job.finish(None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a job's failure is reported by job_read, never raised
            job.finish(None, f"{type(exc).__name__}: {exc}")
        else:
            job.finish(code)

    def get(self, job_id: str, workspace: str | None = None) -> Job:
        job = self._jobs.get(job_id)
        if job is None or (workspace is not None and job.workspace != workspace):
            raise UsageError(f"no job {job_id!r}" + (f" in workspace {workspace!r}" if workspace else ""))
        return job

    def read(self, job: Job, offset: int = 0, wait_s: float = 0.0) -> Chunk:
        if offset < 0:
            raise UsageError("offset must be 0 or more")
        deadline = time.monotonic() + max(0.0, min(wait_s, MAX_WAIT))
        with job.changed:
            while job.running and offset >= job.base + len(job.text):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                job.changed.wait(left)
            skipped = max(0, job.base - offset)
            start = max(offset, job.base)
            output = job.text[start - job.base:start - job.base + MAX_CHUNK]
            return Chunk(job, output, start, start + len(output), skipped, job.running, job.exit_code)

    def stop(self, job: Job, kill: Callable[[str, Sequence[str]], None], grace: float = 5.0) -> Chunk:
        """TERM the job's process group, then KILL it after ``grace`` seconds."""
        with job.changed:
            deadline = time.monotonic() + grace      # a job just started has not said its group yet
            while job.running and job.pgid is None and time.monotonic() < deadline:
                job.changed.wait(deadline - time.monotonic())
            pgid, running = job.pgid, job.running
        if running and pgid is not None:
            job.stopped = True
            for signal in ("TERM", "KILL"):
                kill(job.workspace, ["sh", "-c", f'kill -{signal} -"$1" 2>/dev/null || true', "sh", str(pgid)])
                with job.changed:
                    deadline = time.monotonic() + grace
                    while job.running and time.monotonic() < deadline:
                        job.changed.wait(deadline - time.monotonic())
                    if not job.running:
                        break
        return self.read(job, job.base)

    def stop_all(self, kill: Callable[[str, Sequence[str]], None]) -> None:
        """Stop every running job (the server is going away: nothing is left running in a workspace)."""
        for job in list(self._jobs.values()):
            if job.running:
                try:
                    self.stop(job, kill, grace=2.0)
                except SandboxError:
                    pass                    # the workspace is gone or stopped: so is the job
