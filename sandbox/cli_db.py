"""``sandbox db …``: a workspace's database (url, reset, checkpoints, psql) and the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_base import JsonOpt, open_sandbox, out, print_json, run

db_app = typer.Typer(no_args_is_help=True, help="A workspace's database: url, reset, checkpoints, psql, baseline.")


@db_app.command("url")
def db_url(name: str) -> None:
    """Print the workspace's database URL."""
    out.print(run(lambda: open_sandbox().db_url(name)), markup=False)


@db_app.command("reset")
def db_reset(name: str) -> None:
    """Make the workspace's database a fresh clone of the current baseline (the old state is kept as auto-…)."""
    run(lambda: open_sandbox().db_reset(name))
    out.print(f"{name}: database reset to the baseline")


@db_app.command("checkpoint")
def db_checkpoint(
    name: str, label: str,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing checkpoint of that label.")] = False,
) -> None:
    """Save the workspace's database as a named checkpoint (an existing label needs --force)."""
    run(lambda: open_sandbox().db_checkpoint(name, label, force=force))
    out.print(f"{name}: checkpoint {label} saved")


@db_app.command("restore")
def db_restore(name: str, label: str) -> None:
    """Return the workspace's database to a named checkpoint (the state it replaces is kept as auto-…)."""
    run(lambda: open_sandbox().db_restore(name, label))
    out.print(f"{name}: restored checkpoint {label}")


@db_app.command("drop-checkpoint")
def db_drop_checkpoint(name: str, label: str) -> None:
    """Delete a checkpoint of the workspace's database and free its space."""
    run(lambda: open_sandbox().db_drop_checkpoint(name, label))
    out.print(f"{name}: checkpoint {label} dropped")


@db_app.command("checkpoints")
def db_checkpoints(name: str, json_: JsonOpt = False) -> None:
    """List the workspace's checkpoints."""
    rows = [c.to_json() for c in run(lambda: open_sandbox().db_checkpoints(name))]
    if json_:
        print_json(rows)
        return
    for r in rows:
        out.print(f"{r['label']}\t{r['created_at']}" + ("\tautomatic" if r.get("auto") else ""), markup=False)


@db_app.command("psql")
def db_psql(name: str) -> None:
    """Open psql connected to the workspace's database."""
    raise typer.Exit(run(lambda: open_sandbox().db_psql(name)))


@db_app.command("baseline")
def db_baseline(
    refresh: Annotated[bool, typer.Option("--refresh", help="Rebuild from main (migrations plus seeds).")] = False,
    import_: Annotated[Optional[Path], typer.Option("--import", help="Load a pg_dump file (plain or custom).")] = None,
) -> None:
    """Rebuild the baseline from main, or load a dump into it."""
    res = run(lambda: open_sandbox().db_baseline(refresh=refresh, import_file=import_)).to_json()
    out.print(f"baseline ({res['strategy']}) at {res['baseline_head'] or '(no migration head)'}")


# -- migrate ----------------------------------------------------------------------------------------
