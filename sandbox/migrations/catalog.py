"""Schema catalog snapshots and their diff, as the gate uses them.

Reading the catalog is database access and lives in :mod:`sandbox.databases.catalog`
(:func:`snapshot`, :class:`Catalog`); the diff, which speaks the linter's findings, in
:mod:`sandbox.migrations.catalog_diff`. This module names both for the gate.
"""

from __future__ import annotations

from ..databases.catalog import DEFAULT_EXCLUDED_TABLES, Catalog, snapshot
from .catalog_diff import RULE_KINDS, classify_type_change, diff

__all__ = ["DEFAULT_EXCLUDED_TABLES", "RULE_KINDS", "Catalog", "classify_type_change", "diff", "snapshot"]
