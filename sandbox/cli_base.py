"""What every command of the ``sandbox`` command line shares: the consoles, the global options'
state, events rendered by kind, one error line and its exit code (:func:`run`), JSON output."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .api import Sandbox
from .errors import SandboxError
from .results import Event, EventKind

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)



class _State:
    project: Optional[Path] = None
    debug: bool = False
    quiet: bool = False


state = _State()


class Strategy(str, Enum):
    auto = "auto"
    snapshot = "snapshot"
    template = "template"
    schema = "schema"


class RuntimeKind(str, Enum):
    docker = "docker"
    none = "none"


class EnvFormat(str, Enum):
    dotenv = "dotenv"
    json = "json"
    shell = "shell"


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def render_event(event: Event) -> None:
    """Warnings are shown even with --quiet; progress is dimmed."""
    if event.kind is EventKind.WARNING:
        err.print(event.text(), markup=False, highlight=False)
    elif not state.quiet:
        err.print(f"[dim]· {escape(event.text())}[/dim]", markup=True, highlight=False)


def open_sandbox() -> Sandbox:
    return Sandbox.open(state.project, events=render_event)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(exc: SandboxError) -> NoReturn:
    if state.debug:
        raise exc
    err.print(f"error: {exc}", markup=False)
    raise typer.Exit(exc.exit_code)


def run(fn: Callable[[], Any]) -> Any:
    from .disk import is_disk_full
    from .errors import DiskFull
    try:
        return fn()
    except DiskFull as exc:
        fail(exc)
    except SandboxError as exc:
        if exc.exit_code != 3 and is_disk_full(exc):   # a backend that did not say so
            fail(DiskFull(exc.message))
        fail(exc)
    except OSError as exc:
        if is_disk_full(exc):
            fail(DiskFull(f"writing {exc.filename}" if exc.filename else "writing"))
        raise
