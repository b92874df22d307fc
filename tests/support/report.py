"""What the fault suite proved, summed over the run and printed at its end."""

from __future__ import annotations

from collections import Counter

#: The counters, in the order they are printed.
FIELDS = ("faults injected", "jobs run", "rows checked", "rows lost", "rows duplicated", "messages stranded")

totals: Counter[str] = Counter()


def add(**counts: int) -> None:
    """``add(faults_injected=3, rows_checked=1000)``: underscores stand for spaces."""
    for key, value in counts.items():
        name = key.replace("_", " ")
        assert name in FIELDS, name
        totals[name] += value


def summary() -> str:
    return ", ".join(f"{name}: {totals[name]}" for name in FIELDS)
