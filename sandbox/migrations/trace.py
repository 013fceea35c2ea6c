"""The gate's replay of a revision, as the gate uses it.

Replaying SQL on a clone and probing workspaces' data is database access and lives in
:mod:`sandbox.databases.trace`; turning the measurements into findings' evidence lives in
:mod:`sandbox.migrations.evidence`. This module names both for the gate.
"""

from __future__ import annotations

from ..databases.sqltext import normalize, statements
from ..databases.trace import (DataCheck, Failure, Lock, ProbeResult, StatementTrace, Trace, probe,
                               trace)
from .evidence import annotate, evidence

__all__ = ["DataCheck", "Failure", "Lock", "ProbeResult", "StatementTrace", "Trace", "annotate",
           "evidence", "normalize", "probe", "statements", "trace"]
