"""What the fault suite proved, summed over the run and printed at its end.

A fault counts as *hit* only when state read at the moment of injection showed it met running
work (see ``tests/faults/evidence.py``); the others are *missed* and prove nothing. Recovery
paths are counted from job events and job rows after each scenario's audit. ``messages
stranded`` counts ready and unacked messages once the workers are stopped. Hostile inputs
(messages, CSV files, HTTP requests) are counted apart: they are the work itself, not a fault
that may or may not meet work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

#: The counters, in the order they are printed.
FIELDS = ("faults injected", "faults hit", "faults missed", "hostile inputs", "jobs run", "rows checked", "rows lost",
          "rows duplicated", "messages stranded")
#: How each counter is printed (plain name when absent).
LABELS = {"faults hit": "faults that hit running work", "faults missed": "faults that missed (not counted)",
          "messages stranded": "messages stranded (ready + unacked)"}

#: Where a test run saves its counts (JSON) for :func:`main` to sum over runs.
SAVE_ENV = "IMPORTD_TEST_REPORT_FILE"

totals: Counter[str] = Counter()
paths: Counter[str] = Counter()


def add(**counts: int) -> None:
    """``add(faults_injected=3, rows_checked=1000)``: underscores stand for spaces."""
    for key, value in counts.items():
        name = key.replace("_", " ")
        assert name in FIELDS, name
        totals[name] += value


def add_paths(observed: Mapping[str, int]) -> None:
    """Recovery paths observed after a fault (see ``tests/faults/evidence.py``)."""
    paths.update({k: v for k, v in observed.items() if v})


def dump() -> dict[str, dict[str, int]]:
    """The counts of this process, to send to the process that prints the summary."""
    return {"totals": dict(totals), "paths": dict(paths)}


def merge(data: Mapping[str, Mapping[str, int]] | None) -> None:
    """Add another process's :func:`dump`."""
    if data:
        totals.update(data.get("totals", {}))
        paths.update(data.get("paths", {}))


def summary() -> str:
    counts = ", ".join(f"{LABELS.get(name, name)}: {totals[name]}" for name in FIELDS)
    observed = ", ".join(f"{name}: {n}" for name, n in sorted(paths.items())) or "none"
    return f"{counts}; recovery paths observed: {observed}"


def main(argv: list[str]) -> int:
    """``python -m tests.support.report FILE...``: one summary line over the runs that saved
    their counts (``IMPORTD_TEST_REPORT_FILE``); a missing file is a run that counted nothing."""
    import json
    from pathlib import Path

    for name in argv:
        if Path(name).exists():
            merge(json.loads(Path(name).read_text()))
    print(summary())
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
