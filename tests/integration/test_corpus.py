"""PostgreSQL as the oracle on CSV files nobody on this project wrote (issue 12 item 11).

Each file of the peer corpus (``<repository>/../shared/corpus``, see its README and
MANIFEST.tsv) is loaded by ``psql \\copy`` into one table and by importd into an identical
one, in atomic and resumable modes, with max_errors 0 and with the manifest's max_errors,
in small batches so that most files span several COPYs. The rows must be the same, as
text (NULL and '' told apart):

- a file psql loads: importd loads the same rows, whatever the mode and max_errors;
- a file psql refuses: with max_errors 0 importd ends FAILURE and keeps nothing psql would
  not load; with max_errors it loads exactly the records psql loads one by one (each behind
  the header line) and rejects the others.

Line endings are the point of issue 12 item 11: PostgreSQL decides the line-end style (LF,
CRLF or bare CR) at the first line of the file and refuses any other style after it, but
each importd batch is its own COPY. A ``\\.`` line is data to importd, the value ``\\.``
(documented divergence: psql silently stops reading there), so psql's answer for such a file
is that of the same file with the line quoted.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from importd.config import Settings
from tests.support import oracle
from tests.support.importing import run_import

ROOT = Path(__file__).resolve().parents[2]
#: The peer corpus: beside the repository (CI clones it with shared/ next to the clone).
CORPUS = ROOT.parent / "shared" / "corpus"
PSQL_TABLE, IMPORTD_TABLE = "corpus_psql", "corpus_importd"
#: Files up to this size load in batches of :data:`SMALL_BATCH` bytes (several COPYs per file).
SMALL_FILE, SMALL_BATCH = 64 * 1024, 48
#: Larger files load in about this many batches.
LARGE_FILE_BATCHES = 6


def manifest() -> list[dict[str, str]]:
    if not (CORPUS / "MANIFEST.tsv").is_file():
        return []
    with (CORPUS / "MANIFEST.tsv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


ENTRIES = manifest()


def spec_of(entry: dict[str, str]) -> oracle.Spec:
    columns = [tuple(c.split(":", 1)) for c in json.loads(entry["columns"])]
    named = {"tab": "\t", "0x02": "\x02"}
    delim = entry["delimiter"]
    delim = named.get(delim, chr(int(delim, 16)) if delim.startswith("0x") else delim)
    return oracle.Spec(columns=[(n, t) for n, t in columns], delimiter=delim, encoding=entry["encoding"])


@pytest.fixture
def csettings(isettings: Settings) -> Settings:
    return dataclasses.replace(isettings, tables=f"public.{IMPORTD_TABLE}")


@pytest.mark.skipif(not ENTRIES, reason=f"no peer corpus at {CORPUS}")
@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_importd_loads_each_corpus_file_as_psql_copy_does(entry: dict[str, str], csettings: Settings,
                                                         db: Any, tmp_path: Path) -> None:
    source = CORPUS / entry["file"]
    spec = spec_of(entry)
    url = csettings.database_url
    read_as = oracle.quote_end_markers(source, tmp_path)
    whole = oracle.load_whole(db, url, spec, read_as, PSQL_TABLE)
    if whole.accepted:
        good, bad = whole.rows, 0
    else:
        good, bad = oracle.load_each(db, url, spec, read_as, PSQL_TABLE, tmp_path)
        assert bad > 0, "psql refuses the file but loads each of its records alone"
    path = csettings.upload_dir / f"corpus-{entry['file']}"
    shutil.copyfile(source, path)  # importd reads from its upload directory only
    size = path.stat().st_size
    options = {"delimiter": spec.delimiter, "encoding": spec.encoding,
               "batch_bytes": SMALL_BATCH if size <= SMALL_FILE else size // LARGE_FILE_BATCHES + 1}
    max_errors = int(entry["max_errors"] or 0)
    problems = []
    for mode in ("atomic", "resumable"):
        for allowed in (0, max_errors):
            oracle.reset(db, spec, IMPORTD_TABLE)
            rec, _ = run_import(csettings, path, IMPORTD_TABLE, mode=mode, max_errors=allowed, options=options)
            loaded = oracle.table_rows(db, IMPORTD_TABLE)
            run = f"{mode}, max_errors {allowed}: {rec.state} {rec.error or ''}"
            if bad == 0:
                if rec.state != "SUCCESS" or loaded != good:
                    problems.append((run, _diff(loaded, good)))
            elif allowed < bad:
                if rec.state != "FAILURE" or not oracle.multiset_within(loaded, good) or (mode == "atomic" and loaded):
                    problems.append((run, _diff(loaded, good)))
            elif rec.state != "SUCCESS" or loaded != good or rec.rows_rejected != bad:
                problems.append((run + f" (rejected {rec.rows_rejected}, psql refuses {bad})", _diff(loaded, good)))
    assert not problems, problems


def _diff(loaded: list[str], expected: list[str]) -> dict[str, list[str]]:
    """Rows importd loaded that psql did not, and rows it missed (the first few)."""
    extra = sorted((oracle.Counter(loaded) - oracle.Counter(expected)).elements())[:5]
    missing = sorted((oracle.Counter(expected) - oracle.Counter(loaded)).elements())[:5]
    return {"extra": extra, "missing": missing}
