"""Summarise what the reliability tests measured (``SANDBOX_RELIABILITY_REPORT``, JSON lines) as the
tables of docs/reliability.md::

    SANDBOX_RELIABILITY_REPORT=/tmp/rel.jsonl pytest tests/reliability -q
    python tests/reliability/figures.py /tmp/rel.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def summarise(lines: list[dict[str, object]]) -> str:
    out: list[str] = []
    faults = [x for x in lines if x["test"] == "fault"]
    if faults:
        by_point = Counter(str(x["point"]).split("#")[0] for x in faults)
        lost = sum(int(str(x.get("lost", 0))) for x in faults)
        out.append(f"kills injected: {len(faults)} ({len(by_point)} distinct kill points), data lost: {lost}\n")
        out.append("| kill point | kills | recovered by |")
        out.append("|---|---|---|")
        for point in sorted(by_point):
            how = sorted({str(r) for x in faults if str(x["point"]).split("#")[0] == point
                          for r in list(x.get("recovery") or ["nothing left to do"])})  # type: ignore[call-overload]
            out.append(f"| `{point}` | {by_point[point]} | {', '.join(how)} |")
        out.append("")
    for load in (x for x in lines if x["test"] == "load"):
        out.append(f"load: {load['workspaces']} workspaces, {load['operations']} operations "
                   f"({load['by_operation']}), exit codes {load['exit_codes']}, kills {load['kills_total']} "
                   f"({load['kills']}), untouched workspaces checked {load['untouched_workspaces_checked']}, "
                   f"lost {load['lost']}, {load['seconds']} s")
    hostile = [x for x in lines if x["test"] == "hostile-migration"]
    if hostile:
        out.append(f"hostile migration files: {len(hostile)} tried; migrate check exit codes "
                   f"{dict(Counter(str(x['check']) for x in hostile))}; migrate status "
                   f"{dict(Counter(str(x['status']) for x in hostile))}; changed: "
                   f"{sum(int(str(x['changed'])) for x in hostile)}")
    return "\n".join(out)


if __name__ == "__main__":
    rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    print(summarise(rows))
