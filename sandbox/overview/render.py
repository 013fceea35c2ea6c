"""The overview in a terminal: a table of workspaces, a matrix of pairs and the findings (``rich``;
``sandbox overview --watch`` redraws it when :class:`~.dashboard.ChangeWatch` sees a change)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .model import Overview, Risk

STYLE = {Risk.NONE: "green", Risk.LOW: "yellow", Risk.MEDIUM: "dark_orange", Risk.HIGH: "bold red"}
MARK = {Risk.NONE: "·", Risk.LOW: "~", Risk.MEDIUM: "!", Risk.HIGH: "X"}


def render(ov: Overview) -> RenderableType:
    head = Text(f"main {ov.main_commit[:12]} ({ov.main_branch})"
                + (f", migration head {ov.main_head}" if ov.main_head else ""), style="bold")
    ws = Table(title="workspaces", title_justify="left")
    for col in ("name", "ahead", "behind", "uncommitted", "files", "+/-", "revisions", "gate", "into main"):
        ws.add_column(col)
    for w in ov.workspaces:
        unc = len(w.changed) + len(w.untracked)
        revs = ", ".join(w.revisions) + ("" if w.on_main_head or not w.revisions else " (not on main's head)")
        into = "-" if w.merges_cleanly is None else ("clean" if w.merges_cleanly else
                                                     "conflicts: " + ", ".join(w.merge_conflicts[:3]))
        ws.add_row(w.name, str(w.ahead), str(w.behind), str(unc) if unc else "-", str(len(w.paths)),
                   f"+{w.added}/-{w.removed}", revs or "-", w.gate.state.value, into)
    names = [w.name for w in ov.workspaces]
    matrix = Table(title="pairs (X conflict, ! rebase, ~ overlap, · nothing)", title_justify="left")
    matrix.add_column("")
    for n in names:
        matrix.add_column(n, justify="center")
    for a in names:
        cells: list[Text] = [Text(a, style="bold")]
        for b in names:
            p = ov.pair(a, b) if a != b else None
            cells.append(Text(MARK[p.risk], style=STYLE[p.risk]) if p else Text(""))
        matrix.add_row(*cells)
    lines: list[RenderableType] = [head, ws, matrix]
    for p in ov.pairs:
        for f in p.findings:
            lines.append(Text(f"{p.a}–{p.b} [{f.risk.label}] {f.message}", style=STYLE[f.risk]))
    return Group(*lines)
