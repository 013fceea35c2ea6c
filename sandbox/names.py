"""Workspace names: the one pattern of the contract, checked before anything is touched."""

from __future__ import annotations

import hashlib
import re

from .errors import InvalidName

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid workspace name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise InvalidName(str(name))
    return name


def pg_name(project_id: str, name: str, kind: str = "ws") -> str:
    """A PostgreSQL identifier (database, role or schema) owned by sandbox.

    Always ``sbx_<project_id>_<kind>_<name>`` lower-cased, so that ``gc`` can recognise
    what sandbox created, and at most 63 bytes: a long name is shortened with a hash.
    The result is still passed through ``psycopg.sql.Identifier`` wherever it reaches SQL.
    """
    ident = f"sbx_{project_id}_{kind}_{name}".lower()
    if len(ident) > 63:
        digest = hashlib.sha1(ident.encode()).hexdigest()[:8]
        ident = ident[:54] + "_" + digest
    return ident
