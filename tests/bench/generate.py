"""Deterministic CSV files for the benchmark: same seed, same bytes, every run.

The clean file has 1,000,000 rows (~120 MB) of bigint, text, email, integer, numeric,
timestamptz, boolean and quoted text with commas and newlines; the dirty copy has 1 % bad
rows (a non-numeric amount, an impossible date, a ragged row, in turn).
"""

from __future__ import annotations

import random
from pathlib import Path

HEADER = "id,name,email,age,amount,created_at,active,comment\n"
#: The target table; the same for psql \copy and importd.
TABLE_DDL = """CREATE TABLE {name} (
    id bigint PRIMARY KEY, name text NOT NULL, email text, age integer, amount numeric(14,2),
    created_at timestamptz, active boolean, comment text)"""

_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def _row(i: int, rng: random.Random) -> str:
    w = _WORDS
    name = f"{w[rng.randrange(10)].title()} {w[rng.randrange(10)].title()}"
    comment = (f'"{w[rng.randrange(10)]}, {w[rng.randrange(10)]} said ""hi""\nsecond line"'
               if i % 5 == 0 else " ".join(w[rng.randrange(10)] for _ in range(4)))
    return (f"{i},{name},user.{i}@mail.example.com,{rng.randrange(18, 99)},{rng.randrange(0, 10**8) / 100:.2f},"
            f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} {rng.randrange(24):02d}:"
            f"{rng.randrange(60):02d}:{rng.randrange(60):02d}+00,{'true' if rng.random() < 0.5 else 'false'},"
            f"{comment}\n")


def _bad_row(i: int, rng: random.Random) -> str:
    kind = i % 3
    if kind == 0:
        return f"{i},Bad Amount,b{i}@example.com,30,not-a-number,2024-01-01 00:00:00+00,true,x\n"
    if kind == 1:
        return f"{i},Bad Date,b{i}@example.com,30,1.00,2024-13-45 00:00:00+00,true,x\n"
    return f"{i},Ragged,b{i}@example.com,30\n"


def generate(path: Path, rows: int = 1_000_000, bad_every: int = 0, seed: int = 7) -> Path:
    """Write the file unless an identical one is there; return its path."""
    if path.exists() and path.with_suffix(".done").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        f.write(HEADER)
        chunk: list[str] = []
        for i in range(1, rows + 1):
            chunk.append(_bad_row(i, rng) if bad_every and i % bad_every == 0 else _row(i, rng))
            if len(chunk) == 10_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))
    path.with_suffix(".done").touch()
    return path
