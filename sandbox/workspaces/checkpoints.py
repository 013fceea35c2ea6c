"""A workspace's database over time: ``db reset``, checkpoints, ``db restore``.

Rules: a reset or a restore first keeps the database it replaces as an automatic checkpoint
(``auto-<UTC time>``; the newest :data:`AUTO_CHECKPOINTS` are kept); labels starting with
``auto-`` belong to those; an existing label is replaced only with ``force``.
"""

from __future__ import annotations

from ..core import Project
from ..disk import disk_full_translated
from ..errors import CheckpointExists, InvalidLabel, UsageError
from ..names import AUTO_PREFIX, validate_label
from ..results import CheckpointInfo, ResetResult

AUTO_CHECKPOINTS = 3       # automatic checkpoints kept per workspace (db reset and db restore make them)


def reset(p: Project, name: str) -> ResetResult:
    """The database becomes a fresh clone of the baseline; the state it replaces is kept
    as an automatic checkpoint (``auto-…``, the last :data:`AUTO_CHECKPOINTS` are kept)."""
    p.record(name)
    with p.locked(name) as rec, disk_full_translated(f"resetting the database of {name!r}"), \
            p.operation("db-reset", name) as op:
        kept = _keep_current(p, name)
        op.step("checkpointed", checkpoint=kept)
        p.progress(f"{name}: resetting the database to the baseline")
        info = p.db.reset(name, p.network(rec))
        op.step("reset")
        prune_auto(p, name)
    return ResetResult(name, info.url(), kept)


def checkpoint(p: Project, name: str, label: str, *, force: bool = False) -> CheckpointInfo:
    """Save the database as checkpoint ``label``; an existing label is replaced only with ``force``."""
    validate_label(label)
    if label.startswith(AUTO_PREFIX):
        raise InvalidLabel(label, f"labels starting with {AUTO_PREFIX!r} belong to the automatic "
                                  "checkpoints of reset and restore")
    p.record(name)
    with p.locked(name), disk_full_translated(f"checkpoint {label!r} of {name!r}"), \
            p.operation("db-checkpoint", name, label=label) as op:
        if not force and label in {c.label for c in p.db.checkpoints(name)}:
            raise CheckpointExists(name, label)
        cp = p.db.checkpoint(name, label)
        op.step("taken")
    return CheckpointInfo.of(cp, auto=False)


def restore(p: Project, name: str, label: str) -> None:
    """The database becomes checkpoint ``label``; the state it replaces is kept as ``auto-…``."""
    validate_label(label)
    p.record(name)
    with p.locked(name) as rec, disk_full_translated(f"restoring {name!r} to {label!r}"), \
            p.operation("db-restore", name, label=label) as op:
        if label not in [c.label for c in p.db.checkpoints(name)]:
            raise UsageError(f"workspace {name!r} has no checkpoint {label!r}",
                             hint=f"see `sandbox db checkpoints {name}`")
        kept = _keep_current(p, name)
        op.step("checkpointed", checkpoint=kept)
        p.db.restore(name, label, p.network(rec))
        op.step("restored")
        prune_auto(p, name)


def drop_checkpoint(p: Project, name: str, label: str) -> None:
    """Delete checkpoint ``label`` and give its space back."""
    validate_label(label)
    p.record(name)
    with p.locked(name), disk_full_translated(f"dropping checkpoint {label!r} of {name!r}"):
        p.db.drop_checkpoint(name, label)


def checkpoints(p: Project, name: str) -> list[CheckpointInfo]:
    p.record(name)
    return [CheckpointInfo.of(c, auto=c.label.startswith(AUTO_PREFIX)) for c in p.db.checkpoints(name)]


def _keep_current(p: Project, name: str) -> str | None:
    """Checkpoint the current database as ``auto-<UTC time>`` before it is replaced."""
    if not p.db.exists(name):
        return None
    taken = {c.label for c in p.db.checkpoints(name)}
    stamp = p.clock()
    label = f"{AUTO_PREFIX}{stamp:%Y%m%d-%H%M%S}-{stamp.microsecond // 1000:03d}"
    n = 1
    while label in taken:
        n += 1
        label = f"{AUTO_PREFIX}{stamp:%Y%m%d-%H%M%S}-{stamp.microsecond // 1000:03d}-{n}"
    p.progress(f"{name}: keeping the current database as checkpoint {label}")
    p.db.checkpoint(name, label)
    return label


def prune_auto(p: Project, name: str) -> None:
    """Keep the newest :data:`AUTO_CHECKPOINTS` automatic checkpoints."""
    autos = sorted((c for c in p.db.checkpoints(name) if c.label.startswith(AUTO_PREFIX)),
                   key=lambda c: (c.created_at, c.label))
    for old in autos[:-AUTO_CHECKPOINTS]:
        p.progress(f"{name}: dropping the oldest automatic checkpoint {old.label}")
        p.db.drop_checkpoint(name, old.label)

