"""Deterministic CSV files and tables for the benchmark: same seed, same bytes, every run.

Two files, each clean and with 1 % bad rows:

- the *narrow* file (shapes a-d): bigint, text, email, integer, numeric, timestamptz,
  boolean and quoted text with commas, doubled quotes and newlines in every fifth row;
  1,000,000 rows are ~118 MB;
- the *wide* file (shape e): an id and 31 columns of eight types (integer, text, numeric,
  timestamptz, boolean, date, bigint, double precision), ~260 bytes a row.

Bad rows (every 100th): a non-numeric number, an impossible date, a ragged row, in turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

HEADER = "id,name,email,age,amount,created_at,active,comment\n"
_NARROW_COLUMNS = """id bigint NOT NULL{pk}, name text NOT NULL, email text, age integer, amount numeric(14,2),
    created_at timestamptz, active boolean, comment text"""
#: The target table of the first benchmark (a primary key); the same for psql \copy and importd.
TABLE_DDL = "CREATE TABLE {name} (" + _NARROW_COLUMNS.replace("{pk}", " PRIMARY KEY") + ")"

#: The wide file's column types, cycled over its 31 columns after ``id``.
WIDE_TYPES = ("integer", "text", "numeric(12,2)", "timestamptz", "boolean", "date", "bigint", "double precision")
WIDE_COLUMNS = [f"c{i:02d}" for i in range(1, 32)]
WIDE_HEADER = "id," + ",".join(WIDE_COLUMNS) + "\n"
WIDE_DDL = ("CREATE TABLE {name} (id bigint PRIMARY KEY, "
            + ", ".join(f"{c} {WIDE_TYPES[i % len(WIDE_TYPES)]}" for i, c in enumerate(WIDE_COLUMNS)) + ")")

_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


@dataclass(frozen=True)
class Shape:
    """A kind of target table users load into."""

    key: str  # a-e
    name: str
    ddl: tuple[str, ...]  # statements, ``{name}`` the table
    wide: bool = False  # loads the wide file
    upsert: bool = False  # on_conflict=update into a table holding half the rows


SHAPES = (
    Shape("a", "no index", ("CREATE TABLE {name} (" + _NARROW_COLUMNS.replace("{pk}", "") + ")",)),
    Shape("b", "primary key", (TABLE_DDL,)),
    Shape("c", "primary key + text index", (TABLE_DDL, "CREATE INDEX ON {name} (email)")),
    Shape("d", "upsert into half-full pk", (TABLE_DDL,), upsert=True),
    Shape("e", "wide (32 columns, pk)", (WIDE_DDL,), wide=True),
)


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


def _wide_value(kind: str, rng: random.Random) -> str:
    r = rng.randrange(10**9)
    if kind == "integer":
        return str(r % 2_000_000 - 1_000_000)
    if kind == "text":
        return f"{_WORDS[r % 10]} {_WORDS[r // 10 % 10]}"
    if kind == "numeric(12,2)":
        return f"{r % 10**8 / 100:.2f}"
    if kind == "timestamptz":
        return f"2024-{r % 12 + 1:02d}-{r % 28 + 1:02d} {r % 24:02d}:{r % 60:02d}:{r // 60 % 60:02d}+00"
    if kind == "boolean":
        return "true" if r % 2 else "false"
    if kind == "date":
        return f"20{r % 30 + 1:02d}-{r % 12 + 1:02d}-{r % 28 + 1:02d}"
    if kind == "bigint":
        return str(r * 1009)
    return repr(r / 7919)


def _wide_row(i: int, rng: random.Random) -> str:
    return f"{i}," + ",".join(_wide_value(WIDE_TYPES[k % len(WIDE_TYPES)], rng) for k in range(31)) + "\n"


def _wide_bad_row(i: int, rng: random.Random) -> str:
    good = _wide_row(i, rng).rstrip("\n").split(",")
    kind = i % 3
    if kind == 0:
        good[1] = "not-a-number"  # c01 integer
    elif kind == 1:
        good[6] = "2024-13-45"  # c06 date
    else:
        good = good[:10]
    return ",".join(good) + "\n"


def generate(path: Path, rows: int = 1_000_000, bad_every: int = 0, seed: int = 7, wide: bool = False) -> Path:
    """Write the file unless an identical one is there; return its path."""
    if path.exists() and path.with_suffix(".done").exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    row, bad_row = (_wide_row, _wide_bad_row) if wide else (_row, _bad_row)
    with path.open("w", newline="") as f:
        f.write(WIDE_HEADER if wide else HEADER)
        chunk: list[str] = []
        for i in range(1, rows + 1):
            chunk.append(bad_row(i, rng) if bad_every and i % bad_every == 0 else row(i, rng))
            if len(chunk) == 10_000:
                f.write("".join(chunk))
                chunk.clear()
        f.write("".join(chunk))
    path.with_suffix(".done").touch()
    return path
