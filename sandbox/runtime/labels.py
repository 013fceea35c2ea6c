"""The labels every Docker object sandbox makes carries (part of the contract), and their roles.

``sandbox gc`` and ``sandbox ls`` find what belongs to a project by these labels, with one
list call filtered by :data:`LABEL_PROJECT`.
"""

from __future__ import annotations

LABEL_PROJECT = "dev.sandbox.project"
LABEL_WORKSPACE = "dev.sandbox.workspace"
LABEL_ROLE = "dev.sandbox.role"
LABEL_VOLUME = "dev.sandbox.volume"               # a snapshot cluster's data volume
# Who started a run container: gc removes it once that process is gone (pid + start time, so a
# reused pid does not keep it alive), whatever project it belongs to, even a deleted one.
LABEL_OWNER_PID = "dev.sandbox.owner-pid"
LABEL_OWNER_START = "dev.sandbox.owner-start"
LABEL_PROJECT_PATH = "dev.sandbox.project-path"

# values of LABEL_ROLE
ROLE_WORKSPACE = "workspace"
ROLE_NETWORK = "network"
ROLE_RUN = "run"                                  # the throwaway containers and networks of `run`
ROLE_DATABASE = "database"
ROLE_DATABASE_NETWORK = "database-network"


def project_filter(project_id: str, **labels: str) -> dict[str, list[str]]:
    """A Docker list filter for one project's objects (and any other ``label=value`` given,
    keyed by the label's name)."""
    return {"label": [f"{LABEL_PROJECT}={project_id}", *(f"{k}={v}" for k, v in labels.items())]}
