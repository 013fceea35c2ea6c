"""The gate's overall deadline (``[migrations] gate_timeout``), counted from the static check on."""

from __future__ import annotations

import time

from ...config import duration_seconds
from ..findings import Finding, Report


class GateTimeout(Exception):
    """The gate's deadline passed while ``doing``."""

    def __init__(self, doing: str) -> None:
        super().__init__(doing)
        self.doing = doing


class GateClock:
    """Seconds left of one gate run; :meth:`start` when the checks that take time begin."""

    def __init__(self, limit: str) -> None:
        self.limit = limit
        self._deadline: float | None = None

    def start(self) -> None:
        self._deadline = time.monotonic() + (duration_seconds(self.limit) or 900.0)

    def left(self, doing: str) -> float:
        """Seconds left before the deadline; past it, :class:`GateTimeout`."""
        if self._deadline is None:
            self.start()
        assert self._deadline is not None
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise GateTimeout(doing)
        return left

    def expired(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def timed_out(self, report: Report, doing: str) -> None:
        """Add the one ``gate-timeout`` finding (once)."""
        if any(f.rule == "gate-timeout" for f in report.findings):
            return
        report.extend([Finding(rule="gate-timeout", kind="apply", severity="error",
                               message=f"the gate stopped after {self.limit} ([migrations] gate_timeout) while "
                               f"{doing}; its scratch clones were removed")])
