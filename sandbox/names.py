"""Names and labels: checked before anything is touched.

A workspace NAME must match the contract's pattern and also be a branch name git accepts
(``git check-ref-format --branch``): within the pattern's alphabet git additionally refuses
``HEAD``, ``..`` anywhere, a trailing ``.`` and a trailing ``.lock``. Those rules are applied
here in Python (every command validates names, often several times); a property test checks
them against git itself over the whole alphabet.

Checkpoint labels have their own pattern, limit and message.
"""

from __future__ import annotations

import hashlib
import re

from .errors import InvalidLabel, InvalidName

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
LABEL_MAX = 48
AUTO_PREFIX = "auto-"            # labels of the automatic checkpoints kept by reset and restore


def git_branch_problem(name: str) -> str | None:
    """Why git would refuse ``name`` as a branch (for names in the contract's alphabet), or None."""
    if name == "HEAD":
        return "git reserves HEAD"
    if ".." in name:
        return "git refuses '..' in a branch name"
    if name.endswith(".lock"):
        return "git refuses a branch name ending in '.lock'"
    if name.endswith("."):
        return "git refuses a branch name ending in '.'"
    return None


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid workspace name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise InvalidName(str(name))
    problem = git_branch_problem(name)
    if problem:
        raise InvalidName(name, problem)
    return name


def validate_label(label: str) -> str:
    """Return ``label`` if it is a valid checkpoint label, else raise :class:`InvalidLabel`.

    Labels name directories, databases and files: the same alphabet as names, 1-48
    characters, and no ``..`` (nor a trailing ``.``) so that no label reads as a path step.
    """
    if not isinstance(label, str) or LABEL_RE.fullmatch(label) is None:
        raise InvalidLabel(str(label))
    if ".." in label or label.endswith("."):
        raise InvalidLabel(label, "no '..' and no trailing '.'")
    return label


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
