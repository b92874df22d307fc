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
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

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
    good, bad = psql_reading(db, csettings.database_url, spec, source, tmp_path)
    path = csettings.upload_dir / f"corpus-{entry['file']}"
    shutil.copyfile(source, path)  # importd reads from its upload directory only
    size = path.stat().st_size
    options = {"delimiter": spec.delimiter, "encoding": spec.encoding,
               "batch_bytes": SMALL_BATCH if size <= SMALL_FILE else size // LARGE_FILE_BATCHES + 1}
    runs = [(mode, allowed) for mode in ("atomic", "resumable") for allowed in (0, int(entry["max_errors"] or 0))]
    problems = [p for mode, allowed in runs
                if (p := differs(csettings, db, spec, path, (good, bad), mode, allowed, options))]
    assert not problems, problems


#: Fields of the generated files: plain, quoted with every kind of line break inside, bad integers.
TEXT = st.sampled_from(["a", "", " b", '""', '"q""q"', '"x\ny"', '"x\ry"', '"x\r\ny"', '"\n"', '"d,e"'])
NUMBER = st.sampled_from(["1", "", "-7", "x", '"2"'])
EOLS = st.sampled_from(["\n", "\r\n", "\r"])
GENERATED = oracle.Spec(columns=[("a", "text"), ("b", "text"), ("n", "integer")], delimiter=",", encoding="utf8")


@st.composite
def mixed_files(draw: st.DrawFn) -> bytes:
    """A header and records whose line ends mostly follow the header's, sometimes not."""
    eol = draw(EOLS)
    out = ["a,b,n" + eol]
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        end = draw(st.one_of(st.just(eol), EOLS) if draw(st.integers(0, 3)) == 0 else st.just(eol))
        out.append(f"{draw(TEXT)},{draw(TEXT)},{draw(NUMBER)}{end}")
    if len(out) > 1 and draw(st.booleans()):
        out[-1] = out[-1].rstrip("\r\n")  # no final line end
    return "".join(out).encode()


@hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=mixed_files(), batch=st.sampled_from([16, 64, 4096]), mode=st.sampled_from(["atomic", "resumable"]))
def test_files_mixing_line_ends_and_quoted_newlines_load_as_psql_copy_loads_them(csettings, db, tmp_path_factory,
                                                                                data, batch, mode):
    work = tmp_path_factory.mktemp("mixed")
    path = csettings.upload_dir / f"mixed-{uuid.uuid4().hex}.csv"
    path.write_bytes(data)
    expected = psql_reading(db, csettings.database_url, GENERATED, path, work)
    options = {"delimiter": ",", "batch_bytes": batch}
    problems = [p for allowed in (0, 100)
                if (p := differs(csettings, db, GENERATED, path, expected, mode, allowed, options))]
    assert not problems, (data, problems)


def psql_reading(db: Any, url: str, spec: oracle.Spec, source: Path, work: Path) -> tuple[list[str], int]:
    """(rows, bad records): psql's rows of the whole file if it loads, else of each record alone."""
    read_as = oracle.quote_end_markers(source, work)
    whole = oracle.load_whole(db, url, spec, read_as, PSQL_TABLE)
    if whole.accepted:
        return whole.rows, 0
    good, bad = oracle.load_each(db, url, spec, read_as, PSQL_TABLE, work)
    assert bad > 0, "psql refuses the file but loads each of its records alone"
    return good, bad


def differs(csettings: Settings, db: Any, spec: oracle.Spec, path: Path, expected: tuple[list[str], int],
            mode: str, allowed: int, options: dict[str, Any]) -> tuple[str, dict[str, list[str]]] | None:
    """How an importd run of ``path`` departs from psql's reading ``expected``; None if it does not.

    psql loads the file: the same rows, SUCCESS. psql refuses it: FAILURE when ``allowed`` is
    below the bad records, with nothing loaded in atomic mode and nothing psql would not load
    in resumable mode; else SUCCESS with exactly the rows of the good records.
    """
    good, bad = expected
    oracle.reset(db, spec, IMPORTD_TABLE)
    rec, _ = run_import(csettings, path, IMPORTD_TABLE, mode=mode, max_errors=allowed, options=options)
    loaded = oracle.table_rows(db, IMPORTD_TABLE)
    run = f"{mode}, max_errors {allowed}: {rec.state} {rec.error or ''} (rejected {rec.rows_rejected}, psql {bad})"
    if bad == 0 or allowed >= bad:
        ok = rec.state == "SUCCESS" and loaded == good and rec.rows_rejected == bad
    else:
        ok = (rec.state == "FAILURE" and oracle.multiset_within(loaded, good)
              and not (mode == "atomic" and loaded))
    return None if ok else (run, _diff(loaded, good))


def _diff(loaded: list[str], expected: list[str]) -> dict[str, list[str]]:
    """Rows importd loaded that psql did not, and rows it missed (the first few)."""
    extra = sorted((Counter(loaded) - Counter(expected)).elements())[:5]
    missing = sorted((Counter(expected) - Counter(loaded)).elements())[:5]
    return {"extra": extra, "missing": missing}
