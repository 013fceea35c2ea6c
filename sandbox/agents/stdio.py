"""Nothing but protocol on stdout.

Before anything else runs, ``sandbox mcp`` moves fd 1 to stderr and fd 0 to the null device, and
keeps private duplicates of both for the protocol. A hook, a child process or a stray ``print``
then writes to stderr instead of corrupting the JSON-RPC stream, and nothing reads the client's
messages but the server.
"""

from __future__ import annotations

import fcntl
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Wire:
    """The client's ends: private descriptors (close-on-exec, never inherited by children)."""

    input_fd: int
    output_fd: int


def claim_stdio() -> Wire:
    """Divert fd 0 and 1 and return the protocol's duplicates of them."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    output_fd = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    input_fd = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    return Wire(input_fd, output_fd)
