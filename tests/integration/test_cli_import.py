"""``importd migrate|submit|job|errors`` as real subprocesses against a real worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.importing import TABLES, run_import
from tests.support.infra import ROOT, env_for, wait_for

WORKER_ARGS = ("-Q", "import_queue,bulk_ops_queue", "-c", "1")
#: A closed port: Redis "down" without stopping the shared Redis.
REDIS_DOWN = "redis://127.0.0.1:6390/0"


def importd(settings, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "importd", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env_for(settings, IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none",
                                                       **env))


def test_migrate_twice_reports_up_to_date(isettings):
    out = importd(isettings, "migrate")
    assert (out.returncode, out.stdout) == (0, "database schema up to date\n")


def test_submit_follow_shows_a_progress_bar_and_ends_with_the_row_count(isettings, db, broker, start_worker,
                                                                         tmp_path: Path):
    source = tmp_path / "people.csv"
    source.write_bytes(b"id,name,age\n" + b"".join(b"%d,n%d,%d\n" % (i, i, i) for i in range(1, 1001)))
    with start_worker(*WORKER_ARGS, IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none") as w:
        w.wait_consuming()
        out = importd(isettings, "submit", str(source), "--table", "people", "--priority", "3", "--follow")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "SUCCESS: 1000 rows imported, 0 rejected\n"
    assert "[" + "#" * 30 + "] 100.0%  1,000 rows  SUCCESS" in out.stderr
    states = [line.rsplit("  ", 1)[-1] for line in out.stderr.splitlines() if line.startswith("[")]
    assert states[0] == "PENDING" or states[0].endswith("rows")  # never back to PENDING once started
    assert "PENDING" not in states[1:] and states.count("SUCCESS") == 1
    assert db.execute("SELECT count(*) FROM people").fetchone() == (1000,)


def test_submit_follow_exits_non_zero_when_the_job_fails(isettings, db, broker, start_worker, tmp_path: Path):
    source = tmp_path / "bad.csv"
    source.write_bytes(b"id,name,age\n1,a,1\n2,b,x\n")
    with start_worker(*WORKER_ARGS, IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none") as w:
        w.wait_consuming()
        out = importd(isettings, "submit", str(source), "--table", "people", "--follow")
    assert out.returncode == 1
    assert out.stdout == ('FAILURE: 0 rows imported, 1 rejected (1 row(s) rejected (max_errors 0); first: line 3,'
                          ' column age: invalid input syntax for type integer: "x")\n')


def test_submit_refused_by_the_header_check_exits_2_with_the_problems(isettings, db, tmp_path: Path):
    source = tmp_path / "bad.csv"
    source.write_bytes(b"id,age\n1,1\n")
    out = importd(isettings, "submit", str(source), "--table", "people")
    assert out.returncode == 2
    assert out.stderr == "importd submit: NOT NULL columns without default missing from the header: name\n"


def test_with_redis_down_the_import_succeeds_and_job_answers_from_postgresql(isettings, db, broker, start_worker,
                                                                             tmp_path: Path):
    source = tmp_path / "people.csv"
    source.write_bytes(b"id,name\n1,a\n2,b\n")
    with start_worker(*WORKER_ARGS, IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none",
                      IMPORTD_REDIS_URL=REDIS_DOWN) as w:
        w.wait_consuming()
        out = importd(isettings, "submit", str(source), "--table", "people", "--follow",
                      IMPORTD_REDIS_URL=REDIS_DOWN)
        assert out.returncode == 0, out.stderr
        assert out.stdout == "SUCCESS: 2 rows imported, 0 rejected\n"
        wait_for(lambda: "import succeeded" in w.output(), 10)
    job_id = next(line.split()[1] for line in out.stderr.splitlines() if line.startswith("job "))
    status = importd(isettings, "job", job_id, "--json", IMPORTD_REDIS_URL=REDIS_DOWN)
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert (found["source"], found["state"], found["rows"], found["rejected"]) == ("postgresql", "SUCCESS", 2, 0)
    live = importd(isettings, "job", job_id)  # Redis up again: it never heard of the job, PostgreSQL answers
    assert live.returncode == 0 and "(from postgresql)" in live.stdout and "state: SUCCESS" in live.stdout


def test_job_answers_from_redis_while_it_has_the_job(isettings, db):
    rec, _ = run_import(isettings, b"id,name\n1,a\n")
    out = importd(isettings, "job", rec.id, "--json")
    found = json.loads(out.stdout)
    assert (found["source"], found["state"], found["rows"], found["percent"]) == ("redis", "SUCCESS", "1", "100")
    assert importd(isettings, "job", "no-such-job").returncode == 1


def test_errors_prints_rejected_rows_as_csv(isettings, db):
    rec, _ = run_import(isettings, b'id,name,age\n1,a,x\n2,"b, c",\n3,,3\n', max_errors=5)
    out = importd(isettings, "errors", rec.id)
    assert out.returncode == 0
    assert out.stdout == (
        "line_number,column,value,reason\n"
        '2,age,x,"invalid input syntax for type integer: ""x"""\n'
        '4,name,,"null value in column ""name"" of relation ""people"" violates not-null constraint"\n')
