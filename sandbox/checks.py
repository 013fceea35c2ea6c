"""Results of `doctor` checks, shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One doctor line: what was checked, whether it is fine, and what to do if not."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix,
                "required": self.required}


@dataclass(frozen=True)
class OwnedResource:
    """Something sandbox created (a container, network, database, role, snapshot...).

    ``gc`` compares these with the registry. ``workspace`` is None for shared
    resources such as the baseline.
    """

    kind: str            # "container", "network", "database", "role", "schema", "cluster", "snapshot", ...
    id: str              # the backend's own handle (container id, database name, path)
    workspace: str | None
    detail: str = ""
    transient: bool = False   # debris of an operation (a scratch copy, a half-built baseline, no label)

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "id": self.id, "workspace": self.workspace, "detail": self.detail}
