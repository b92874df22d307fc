"""`make bench`: importd against `psql \\copy`, measured in one run on this machine.

Prints one table: rows/s, MB/s, the ratio to `psql \\copy` of the same file into the same
kind of table, and the worker's peak RSS, for importd's engine alone and end to end, in
each mode (atomic: one transaction, one COPY stream; resumable: two streams, see
:mod:`importd.imports.copy.streams`); the same with 1 % bad rows; the engine's peak RSS on a file twice
as large; the engine reading the clean file from an S3 store (moto on loopback) against the
same file from local disk, as a ratio; and 500 files of 100 rows through 4 workers (jobs/s). Timings are
noisy on a shared 2-core machine: compare ratios within one run. The import rate limit
(10/min) is lifted for the run (IMPORTD_RATE_LIMIT=none), since it alone would cap the
small-file case at 0.17 jobs/s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from importd.config import Settings
from importd.imports import store
from importd.imports.submit import submit
from importd.worker import topology
from importd.worker.publisher import Publisher, broker_connection
from tests.bench.generate import TABLE_DDL, generate
from tests.support import infra

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench-data"
DB = "importd_bench"
VHOST = "importd-bench"
#: Interleaved runs of each clean case, even so that each order comes equally often (the table
#: shows the median).
ROUNDS = 4
#: The clean cases of each round: psql, then importd's engine alone and end to end in each mode
#: (resumable loads on two COPY streams, see importd/streams.py).
STEPS = {"psql": "psql", "engine-atomic": "engine atomic", "e2e-atomic": "end to end atomic",
         "engine-resumable": "engine resumable", "e2e-resumable": "end to end resumable"}
TABLES = ("bench_psql", "bench_engine", "bench_e2e", "bench_dirty", "bench_double", "bench_small")


@dataclass
class Row:
    name: str
    rows: int
    seconds: float
    size: int
    baseline_s: float | None = None
    rss_mb: float | None = None
    extra: str = ""

    def line(self) -> str:
        ratio = f"{self.baseline_s / self.seconds:5.2f} x" if self.baseline_s else "   1.00 x"
        rss = f"{self.rss_mb:7.1f}" if self.rss_mb is not None else "      -"
        return (f"| {self.name:<38} | {self.rows:>9} | {self.seconds:7.2f} | {self.rows / self.seconds:>9.0f} | "
                f"{self.size / 1e6 / self.seconds:6.1f} | {ratio:>8} | {rss} | {self.extra}")


def settings() -> Settings:
    return Settings(
        broker_url=f"amqp://guest:guest@127.0.0.1:5672/{VHOST}",
        database_url=f"postgresql://postgres@127.0.0.1:5432/{DB}",
        redis_prefix="importd-bench",
        upload_dir=DATA / "uploads",
        tables=",".join(f"public.{t}" for t in TABLES),
        rate_limit="none",
        concurrency=1,
    )


def prepare(s: Settings) -> None:
    infra.rabbitmqctl("delete_vhost", VHOST, check=False)
    infra.create_vhost(VHOST)
    infra.create_database(DB)
    with broker_connection(s) as conn:
        topology.declare(conn)
    store.migrate(s)
    s.upload_dir.mkdir(parents=True, exist_ok=True)
    for table in TABLES:
        reset_table(s, table)


def reset_table(s: Settings, table: str) -> None:
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{table}")
        conn.execute(TABLE_DDL.format(name=f"public.{table}"))


def psql_copy(s: Settings, path: Path, table: str) -> float:
    quiesce(s)
    reset_table(s, table)
    started = time.perf_counter()
    subprocess.run(["psql", s.database_url, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy public.{table} FROM '{path}' WITH (FORMAT csv, HEADER true)"], check=True)
    return time.perf_counter() - started


def engine_alone(s: Settings, path: Path, table: str, mode: str = "atomic", key: str | None = None,
                 env: dict[str, str] | None = None) -> tuple[float, float, dict[str, object]]:
    """The engine in a process of its own (no broker): seconds, peak RSS in MB, the job. With
    ``key`` (and ``env`` naming its store) the file is read from that object instead."""
    quiesce(s)
    reset_table(s, table)
    staged = s.upload_dir / path.name  # jobs may only read files inside the upload directory
    if not staged.exists():
        os.link(path, staged)
    out = subprocess.run([sys.executable, "-m", "tests.bench.engine_once", key or str(staged), f"public.{table}",
                          mode], env=infra.env_for(s, IMPORTD_LOG_LEVEL="warning", **(env or {})), cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"engine run failed: {out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["rss_mb"]), result["job"]


def s3_against_local(s: Settings, path: Path, rounds: int = ROUNDS) -> tuple[Row, Row]:
    """The engine alone reading ``path`` from local disk and the same bytes from an S3 store
    (moto's server on loopback, started here), interleaved: (local row, S3 row with the ratio
    local time / S3 time). The S3 server shares the two cores with the import, so the ratio
    is a floor for a store on its own hosts."""
    from importd.imports import storage
    from tests.support.s3 import aws_env, s3_process

    local: list[float] = []
    remote: list[float] = []
    peaks: dict[str, float] = {}
    with s3_process() as server:
        env = {"IMPORTD_STORAGE_URL": server.url("bench"), "IMPORTD_S3_ENDPOINT_URL": server.endpoint, **aws_env()}
        s3 = storage.open_url(env["IMPORTD_STORAGE_URL"], server.endpoint)
        s3.write_file(path.name, path)
        for round_ in range(rounds):
            for where in ("local", "s3") if round_ % 2 == 0 else ("s3", "local"):
                if where == "local":
                    secs, peaks[where], _job = engine_alone(s, path, "bench_engine")
                    local.append(secs)
                else:
                    secs, peaks[where], _job = engine_alone(s, path, "bench_engine", key=path.name, env=env)
                    remote.append(secs)
    rows, size, base = 1_000_000, path.stat().st_size, statistics.median(local)
    return (Row("importd engine atomic, local disk", rows, base, size, rss_mb=peaks["local"], extra=spread(local)),
            Row("importd engine atomic, S3 (vs local)", rows, statistics.median(remote), size, base,
                peaks["s3"], spread(remote)))


def end_to_end(s: Settings, path: Path, table: str, publisher: Publisher, mode: str = "atomic"
               ) -> tuple[float, float, str]:
    """Submit to SUCCESS with one worker running: seconds, the child's peak RSS, the state."""
    quiesce(s)
    reset_table(s, table)
    with infra.worker(s, DATA, "-Q", "import_queue,bulk_ops_queue", "-c", "1") as w:
        w.wait_consuming()
        (child,) = w.child_pids()
        started = time.perf_counter()
        job = submit(s, path, f"public.{table}", publisher=publisher, max_errors=10**9, mode=mode)
        state = wait_final(s, job.id, 600)
        seconds = time.perf_counter() - started
        rss = peak_rss_mb(child)
    return seconds, rss, state


def spread(runs: list[float]) -> str:
    return "[" + " ".join(f"{r:.2f}" for r in runs) + "]"


def quiesce(s: Settings) -> None:
    """Drop the loaded tables, delete submitted copies and checkpoint before each timed case,
    so the checkpointer and writeback working off one load do not share the two cores with
    the next (whichever case ran second used to pay for the first)."""
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS public.{table}")
        conn.execute("CHECKPOINT")
    for path in s.upload_dir.glob("*.csv"):
        if path.stat().st_nlink == 1:  # a submitted copy (the engine's inputs are hard links)
            path.unlink()
    os.sync()


def small_files(s: Settings, publisher: Publisher, count: int = 500, rows: int = 100) -> float:
    """Jobs per second for ``count`` files of ``rows`` rows through 4 workers."""
    reset_table(s, "bench_small")
    files = []
    lines = (DATA / "clean.csv").read_text().splitlines(keepends=True)
    header, body = lines[0], [line for line in lines[1:200_000] if line.count('"') == 0]
    for i in range(count):
        f = DATA / "small" / f"s{i}.csv"
        f.parent.mkdir(exist_ok=True)
        chunk = body[i * rows:(i + 1) * rows]
        f.write_text(header + "".join(chunk))
        files.append(f)
    ids = [submit(s, f, "public.bench_small", publisher=publisher).id for f in files]
    with infra.worker(s, DATA, "-Q", "import_queue,bulk_ops_queue", "-c", "4") as w:
        w.wait_consuming(4)
        wait_all_final(s, ids, 600)
    with psycopg.connect(s.database_url) as conn:
        first, last = conn.execute("SELECT min(started_at), max(finished_at) FROM importd.jobs WHERE id = ANY(%s)",
                                   (ids,)).fetchone() or (None, None)
    assert first and last
    return count / (last - first).total_seconds()


def wait_final(s: Settings, job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT state FROM importd.jobs WHERE id = %s", (job_id,)).fetchone()
            if row and row[0] in ("SUCCESS", "FAILURE", "CANCELLED"):
                return str(row[0])
            time.sleep(0.02)
    raise TimeoutError(job_id)


def wait_all_final(s: Settings, ids: list[str], timeout: float) -> None:
    """Wait for every job on one connection, polling a count every 0.2 s: a connection per job
    (a backend forked for each) took CPU from the workers being measured (~150 vs ~330 jobs/s)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM importd.jobs WHERE id = ANY(%s)"
                               " AND state IN ('SUCCESS', 'FAILURE', 'CANCELLED')", (ids,)).fetchone()
            if row and row[0] == len(ids):
                return
            time.sleep(0.2)
    raise TimeoutError(f"{len(ids)} jobs")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown cpu")
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores, {cpu}; {pg}; Python {sys.version.split()[0]}"


def main() -> int:
    s = settings()
    print("generating data (deterministic, cached in bench-data/) ...", flush=True)
    clean = generate(DATA / "clean.csv")
    dirty = generate(DATA / "dirty.csv", bad_every=100)
    double = generate(DATA / "double.csv", rows=2_000_000, seed=8)
    prepare(s)
    publisher = Publisher(s)
    rows = 1_000_000
    size = clean.stat().st_size
    print("IMPORTD_RATE_LIMIT=none: the 10/min import limit is lifted for the benchmark.", flush=True)
    results = []
    runs: dict[str, list[float]] = {step: [] for step in STEPS}
    rss: dict[str, float] = {}
    outcome: dict[str, str] = {}
    for round_ in range(ROUNDS):  # interleaved, and in reverse order every other round, so
        # neither a slow minute nor the machine speeding up over the run favours a case
        for step in STEPS if round_ % 2 == 0 else tuple(reversed(STEPS)):
            if step == "psql":
                runs[step].append(psql_copy(s, clean, "bench_psql"))
                continue
            kind, mode = step.split("-")
            if kind == "engine":
                secs, rss[step], job = engine_alone(s, clean, "bench_engine", mode)
                outcome[step] = str(job.get("state"))
            else:
                secs, rss[step], outcome[step] = end_to_end(s, clean, "bench_e2e", publisher, mode)
            runs[step].append(secs)
    base = statistics.median(runs["psql"])
    results.append(Row("psql \\copy (clean)", rows, base, size, extra=spread(runs["psql"])))
    for step, name in STEPS.items():
        if step != "psql":
            results.append(Row(f"importd {name} (clean)", rows, statistics.median(runs[step]), size, base,
                               rss[step], f"{outcome[step]} {spread(runs[step])}"))
    for mode in ("atomic", "resumable"):
        secs, peak, job = engine_alone(s, dirty, "bench_dirty", mode)
        results.append(Row(f"importd engine {mode} (1% bad rows)", rows, secs, dirty.stat().st_size, base, peak,
                           f"{job.get('state')}, {job.get('rows_rejected')} rejected"))
    for mode in ("atomic", "resumable"):
        secs, peak, job = engine_alone(s, double, "bench_double", mode)
        results.append(Row(f"importd engine {mode} (2x file)", 2 * rows, secs, double.stat().st_size, 2 * base,
                           peak, str(job.get("state"))))
    results.extend(s3_against_local(s, clean))
    quiesce(s)
    jobs_per_s = small_files(s, publisher)
    publisher.close()
    print(f"\nmachine: {machine()}")
    print("| case                                   |      rows |       s |    rows/s |   MB/s | vs psql  | RSS MB  |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(r.line())
    print(f"\n500 files x 100 rows, 4 workers: {jobs_per_s:.0f} jobs/s")
    print(f"(clean cases: median of {ROUNDS} interleaved runs, each after a checkpoint, runs in brackets;"
          " ratio = psql \\copy time / importd time on the same kind of table; for the 2x file the psql"
          " time is doubled; RSS is the importing process's peak)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
