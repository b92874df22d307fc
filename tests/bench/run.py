"""`make bench`: importd against `psql`, on the shapes of table users load into, in one run.

Shapes (:data:`tests.bench.generate.SHAPES`): (a) no index, (b) a primary key, (c) a primary
key and a secondary index on a text column, (d) ``on_conflict=update`` into (b) holding half
the rows already, against the recipe users write by hand (``\\copy`` into a temporary table,
then ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``), (e) a wide table of 32 columns.

For each shape the clean cases (psql; importd's engine alone and end to end, atomic and
resumable) run :data:`ROUNDS` times interleaved, in reverse order every other round, the
median shown; then the file with 1 % bad rows through the engine in both modes. Each row
shows wall seconds, the ratio to psql on the same shape (psql time / importd time), the CPU
seconds of the PostgreSQL backend(s) (read from ``/proc/<pid>/stat``: the server runs on this
host) and of the client, and the importing process's peak RSS; end-to-end rows say how long
the submit took (storing and hashing the file, the job row, the publish). Then 2x the
file on shape (b) (RSS flat in file size) and small files (jobs/s through 4 worker children).

Knobs: ``--quick`` (or IMPORTD_BENCH_QUICK=1) for small sizes while developing;
IMPORTD_BENCH_ROWS, IMPORTD_BENCH_ROUNDS, IMPORTD_BENCH_SHAPES (say ``bd``),
IMPORTD_BENCH_SMALL (small files, 0 to skip), IMPORTD_BENCH_S3 (0 skips the S3 row),
IMPORTD_BENCH_CASES=dirty (psql, the engine on the clean and the 1 % bad-row file, each ROUNDS
times interleaved; with IMPORTD_BENCH_BASE=DIR also the engine of the source tree DIR),
IMPORTD_BENCH_NAME (the database, vhost and Redis prefix: another one beside another bench),
IMPORTD_BENCH_S3_SERVERS (the S3 row's servers: ``moto`` by default, ``moto,rclone``).
IMPORTD_BENCH_SMALL_ROUNDS (runs of the small-file case; with IMPORTD_BENCH_BASE=DIR each run
runs a worker of DIR and one of this tree, in turn; with IMPORTD_BENCH_SHAPES= and
IMPORTD_BENCH_S3=0 only the small files run).
Timings are noisy on a shared 2-core machine: compare ratios within one run. The import rate
limit is lifted (IMPORTD_RATE_LIMIT=none).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from importd.config import Settings
from importd.imports import store
from importd.imports.submit import submit
from importd.worker import topology
from importd.worker.publisher import Publisher, broker_connection
from tests.bench.engine_once import process_cpu
from tests.bench.generate import SHAPES, Shape, generate
from tests.support import infra

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "bench-data"
#: The bench's own database, vhost and Redis prefix (another name lets two benches share the services).
NAME = os.environ.get("IMPORTD_BENCH_NAME", "importd_bench")
DB = NAME
VHOST = NAME.replace("_", "-")
QUICK = "--quick" in sys.argv or os.environ.get("IMPORTD_BENCH_QUICK") == "1"
#: Rows of the narrow file (shapes a-d); the wide file has 40 % of them (about the same bytes).
ROWS = int(os.environ.get("IMPORTD_BENCH_ROWS", 20_000 if QUICK else 1_000_000))
#: Interleaved runs of each clean case per shape (the table shows the median).
ROUNDS = int(os.environ.get("IMPORTD_BENCH_ROUNDS", 1 if QUICK else 2))
#: Which shapes run (letters of :data:`tests.bench.generate.SHAPES`).
ONLY = os.environ.get("IMPORTD_BENCH_SHAPES", "abcde")
#: Small files through 4 worker children (100 rows each); 0 skips the case.
SMALL = int(os.environ.get("IMPORTD_BENCH_SMALL", 100 if QUICK else 500))
#: Runs of the small-file case (with :data:`BASE`, each run runs both trees' workers).
SMALL_ROUNDS = int(os.environ.get("IMPORTD_BENCH_SMALL_ROUNDS", 1))
#: The clean cases of each round, in order (reversed every other round).
STEPS = ("psql", "engine-atomic", "e2e-atomic", "engine-resumable", "e2e-resumable")
#: Which cases run: ``all``, or ``dirty`` (psql and the engine on the clean file, the engine
#: on the 1 % bad-row file, each ROUNDS times interleaved: for work on the bad-row path).
CASES = os.environ.get("IMPORTD_BENCH_CASES", "all")
DIRTY_STEPS = ("psql", "engine-atomic", "engine-resumable", "dirty-atomic", "dirty-resumable")
#: A source tree of another version of importd (``git archive REV | tar -x -C DIR``): with
#: IMPORTD_BENCH_CASES=dirty its engine runs the bad-row cases too, interleaved, so a change
#: is measured against the code before it in one run.
BASE = os.environ.get("IMPORTD_BENCH_BASE", "")
BASE_LABEL = os.environ.get("IMPORTD_BENCH_BASE_LABEL", "base")
#: Tables importd loads into (allowlisted), dropped before every case.
TABLES = ("bench_psql", "bench_engine", "bench_e2e", "bench_small")
#: S3 servers the S3 row reads from (IMPORTD_BENCH_S3_SERVERS, comma separated: moto, rclone).
S3_SERVERS = [k for k in os.environ.get("IMPORTD_BENCH_S3_SERVERS", "moto").split(",") if k]
S3_NAMES = {"moto": "moto", "rclone": "rclone serve s3"}
SEED = "bench_seed"  # shape (d)'s half of the rows, copied into the target before each case
UPSERT = {"on_conflict": "update", "conflict_key": ["id"]}
NARROW = ("id", "name", "email", "age", "amount", "created_at", "active", "comment")


@dataclass
class Row:
    shape: str
    name: str
    rows: int
    seconds: float
    baseline_s: float | None = None
    backend_s: float | None = None
    client_s: float | None = None
    rss_mb: float | None = None
    extra: str = ""

    @property
    def ratio(self) -> float | None:
        return self.baseline_s / self.seconds if self.baseline_s else None

    def line(self) -> str:
        ratio = f"{self.ratio:.2f} x" if self.ratio else "1.00 x"
        num = (lambda v: f"{v:.2f}" if v is not None else "-")  # noqa: E731
        rss = f"{self.rss_mb:.0f}" if self.rss_mb is not None else "-"
        return (f"| {self.shape} | {self.name} | {self.rows:,} | {self.seconds:.2f} | "
                f"{self.rows / self.seconds:,.0f} | {ratio} | {num(self.backend_s)} | {num(self.client_s)} | "
                f"{rss} | {self.extra} |")


def settings() -> Settings:
    return Settings(
        broker_url=f"amqp://guest:guest@127.0.0.1:5672/{VHOST}",
        database_url=f"postgresql://postgres@127.0.0.1:5432/{DB}",
        redis_prefix=VHOST,
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


def reset_table(s: Settings, table: str, shape: Shape) -> None:
    """``table`` as ``shape`` has it, empty or (upsert) holding the seed's half of the rows."""
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS public.{table}")
        for ddl in shape.ddl:
            conn.execute(ddl.format(name=f"public.{table}"))  # type: ignore[arg-type]
        if shape.upsert:
            conn.execute(f"INSERT INTO public.{table} SELECT * FROM {SEED}")  # type: ignore[arg-type]
            conn.execute(f"VACUUM ANALYZE public.{table}")  # type: ignore[arg-type]
            conn.execute("CHECKPOINT")


def make_seed(s: Settings, clean: Path) -> None:
    """The even rows of the file, with other values, for shape (d) to update and keep."""
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SEED}")  # type: ignore[arg-type]
        conn.execute(SHAPES[0].ddl[0].format(name=SEED))  # type: ignore[arg-type]
        with conn.cursor() as cur, cur.copy(f"COPY {SEED} FROM STDIN (FORMAT csv, HEADER true)") as copy:  # type: ignore[arg-type]
            with clean.open("rb") as f:
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
        conn.execute(f"DELETE FROM {SEED} WHERE id % 2 = 1")  # type: ignore[arg-type]
        conn.execute(f"UPDATE {SEED} SET amount = amount + 1, comment = 'before the upsert'")  # type: ignore[arg-type]
        conn.execute(f"VACUUM ANALYZE {SEED}")  # type: ignore[arg-type]


def psql_script(path: Path, table: str, shape: Shape, stat: Path) -> str:
    """What psql runs: ``\\copy`` (or the upsert recipe), then the backend's /proc stat saved."""
    copy_opts = "WITH (FORMAT csv, HEADER true)"
    head = "SELECT pg_backend_pid() AS pid \\gset\n\\setenv BENCH_PID :pid\n"
    tail = f"\\! cat /proc/$BENCH_PID/stat > {stat}\n"
    if not shape.upsert:
        return head + f"\\copy public.{table} FROM '{path}' {copy_opts}\n" + tail
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in NARROW if c != "id")
    return head + ("BEGIN;\n"
                   f"CREATE TEMP TABLE stage (LIKE public.{table} INCLUDING DEFAULTS) ON COMMIT DROP;\n"
                   f"\\copy stage FROM '{path}' {copy_opts}\n"
                   f"INSERT INTO public.{table} SELECT * FROM stage ON CONFLICT (id) DO UPDATE SET {sets};\n"
                   "COMMIT;\n") + tail


def psql_load(s: Settings, path: Path, shape: Shape) -> dict[str, float]:
    """psql into a fresh table of the shape: seconds, backend and client CPU seconds."""
    quiesce(s)
    reset_table(s, "bench_psql", shape)
    stat = DATA / "psql-backend.stat"
    script = psql_script(path, "bench_psql", shape, stat)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(["psql", s.database_url, "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", "-"], input=script,
                   text=True, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    fields = stat.read_text().rsplit(")", 1)[1].split()
    backend = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    client = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"seconds": seconds, "backend_s": backend, "cpu_s": client}


def engine_alone(s: Settings, path: Path, shape: Shape, mode: str, key: str | None = None,
                 env: dict[str, str] | None = None, tree: Path = ROOT) -> dict[str, Any]:
    """The engine in a process of its own (no broker): seconds, CPU, peak RSS, the job. With
    ``key`` (and ``env`` naming its store) the file is read from that object instead; ``tree``:
    the source tree whose engine runs (this one, or :data:`BASE`)."""
    quiesce(s)
    reset_table(s, "bench_engine", shape)
    staged = s.upload_dir / path.name  # jobs may only read files inside the upload directory
    if not staged.exists():
        os.link(path, staged)
    opts = json.dumps(UPSERT if shape.upsert else {})
    out = subprocess.run([sys.executable, "-m", "tests.bench.engine_once", key or str(staged), "public.bench_engine",
                          mode, opts], env=infra.env_for(s, IMPORTD_LOG_LEVEL="warning", PYTHONPATH=str(tree),
                                                           **(env or {})), cwd=tree,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"engine run failed: {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


class EndToEnd:
    """One worker (one child) for every end-to-end case; its peak RSS is reset before each."""

    def __init__(self, s: Settings, publisher: Publisher) -> None:
        self.s, self.publisher = s, publisher
        self.ctx = infra.worker(s, DATA, "-Q", "import_queue", "-c", "1")
        self.w = self.ctx.__enter__()
        self.w.wait_consuming()
        (self.child,) = self.w.child_pids()

    def load(self, path: Path, shape: Shape, mode: str) -> dict[str, Any]:
        """Submit to a final state: seconds, the submit's share, the child's CPU and peak RSS."""
        quiesce(self.s)
        reset_table(self.s, "bench_e2e", shape)
        Path(f"/proc/{self.child}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        cpu = process_cpu(self.child)
        started = time.perf_counter()
        job = submit(self.s, path, "public.bench_e2e", publisher=self.publisher, max_errors=10**9, mode=mode,
                     options=UPSERT if shape.upsert else None)
        submitted = time.perf_counter() - started
        state = wait_final(self.s, job.id, 1800)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "submit_s": submitted, "state": state, "rss_mb": peak_rss_mb(self.child),
                "cpu_s": process_cpu(self.child) - cpu}

    def close(self) -> None:
        self.ctx.__exit__(None, None, None)


def quiesce(s: Settings) -> None:
    """Drop the loaded tables, delete submitted copies and checkpoint before each timed case,
    so the checkpointer and writeback working off one load do not share the two cores with
    the next (whichever case ran second used to pay for the first)."""
    with psycopg.connect(s.database_url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS public.{table}")  # type: ignore[arg-type]
        conn.execute("CHECKPOINT")
    for path in s.upload_dir.glob("*.csv"):
        if path.stat().st_nlink == 1:  # a submitted copy (the engine's inputs are hard links)
            path.unlink()
    os.sync()


def files(shape: Shape) -> tuple[Path, Path, int]:
    """The clean and the dirty file of a shape, and their row count."""
    rows = ROWS * 2 // 5 if shape.wide else ROWS
    kind = "wide" if shape.wide else "narrow"
    clean = generate(DATA / f"{kind}-{rows}.csv", rows=rows, wide=shape.wide)
    dirty = generate(DATA / f"{kind}-{rows}-dirty.csv", rows=rows, bad_every=100, wide=shape.wide)
    return clean, dirty, rows


def s3_against_local(s: Settings, shape: Shape) -> list[Row]:
    """The engine alone reading the clean file of ``shape`` from local disk and the same bytes
    from S3 servers on loopback started here (:data:`S3_SERVERS`), interleaved; ratio = local
    time / S3 time. A server shares the two cores with the import, so the ratio is a floor for
    a store on hosts of its own: each S3 row says how much CPU the server spent per run, and
    the ratio with that time taken off the S3 time (a ceiling: part of it overlaps the load)."""
    from importd.imports import storage

    clean, _dirty, rows = files(shape)
    order = ["local", *S3_SERVERS]
    got: dict[str, list[dict[str, Any]]] = {where: [] for where in order}
    with contextlib.ExitStack() as stack:
        servers = {kind: stack.enter_context(s3_server(kind)) for kind in S3_SERVERS}
        envs = {kind: s3_env(server) for kind, server in servers.items()}
        for kind, server in servers.items():
            storage.open_url(envs[kind]["IMPORTD_STORAGE_URL"], server.endpoint).write_file(clean.name, clean)
        for round_ in range(ROUNDS):
            for where in order if round_ % 2 == 0 else reversed(order):
                if where == "local":
                    got[where].append(engine_alone(s, clean, shape, "atomic"))
                    continue
                server_cpu = process_cpu(servers[where].pid)
                run = engine_alone(s, clean, shape, "atomic", key=clean.name, env=envs[where])
                got[where].append({**run, "server_s": process_cpu(servers[where].pid) - server_cpu})
    base = median(got["local"], "seconds")
    label = f"({shape.key}) from S3"
    out = [Row(label, "importd engine atomic, local disk", rows, base, None, median(got["local"], "backend_s"),
               median(got["local"], "cpu_s"), max(g["rss_mb"] for g in got["local"]),
               f"{spread(got['local'])}; header read {median(got['local'], 'header_s'):.2f} s")]
    for kind in S3_SERVERS:
        runs, server_s = got[kind], median(got[kind], "server_s")
        pairs = " ".join(f"{a['seconds'] / b['seconds']:.2f}" for a, b in zip(got["local"], runs, strict=True))
        without = base / max(median(runs, "seconds") - server_s, 1e-9)
        out.append(Row(label, f"importd engine atomic, S3 on {S3_NAMES[kind]} (ratio: vs local disk)", rows,
                       median(runs, "seconds"), base, median(runs, "backend_s"), median(runs, "cpu_s"),
                       max(g["rss_mb"] for g in runs),
                       f"{spread(runs)}; ratio per round {pairs}; header read (the first GET's wait) "
                       f"{median(runs, 'header_s'):.2f} s; server CPU {server_s:.2f} s a run, "
                       f"ratio without it {without:.2f} x"))
    return out


@contextlib.contextmanager
def s3_server(kind: str) -> Iterator[Any]:
    """A started S3 server of ``kind`` (:data:`S3_NAMES`) with one bucket."""
    from tests.support.s3 import disk_s3, s3_process

    if kind == "moto":
        with s3_process() as server:
            yield server
        return
    with tempfile.TemporaryDirectory(dir=DATA) as root, disk_s3(Path(root)) as disk:
        yield disk.server


def s3_env(server: Any) -> dict[str, str]:
    from tests.support.s3 import aws_env

    return {"IMPORTD_STORAGE_URL": server.url("bench"), "IMPORTD_S3_ENDPOINT_URL": server.endpoint, **aws_env()}


def bench_shape(s: Settings, shape: Shape, e2e: EndToEnd | None) -> list[Row]:
    clean, dirty, rows = files(shape)
    if shape.upsert:
        make_seed(s, clean)
    label = f"({shape.key}) {shape.name}"
    steps: tuple[str, ...] = STEPS
    if CASES == "dirty":
        steps = DIRTY_STEPS + (("base-atomic", "base-resumable") if BASE else ())
    runs: dict[str, list[dict[str, Any]]] = {step: [] for step in steps}
    for round_ in range(ROUNDS):  # interleaved, and in reverse order every other round, so
        # neither a slow minute nor the machine speeding up over the run favours a case
        for step in steps if round_ % 2 == 0 else tuple(reversed(steps)):
            print(f"  {label}: {step} (round {round_ + 1}/{ROUNDS})", flush=True)
            if step == "psql":
                runs[step].append(psql_load(s, clean, shape))
                continue
            kind, mode = step.split("-")
            if kind in ("dirty", "base"):
                runs[step].append(engine_alone(s, dirty, shape, mode, tree=Path(BASE) if kind == "base" else ROOT))
            elif kind == "engine":
                runs[step].append(engine_alone(s, clean, shape, mode))
            else:
                assert e2e is not None
                runs[step].append(e2e.load(clean, shape, mode))
    base = median(runs["psql"], "seconds")
    psql = "psql recipe (\\copy to temp, INSERT ON CONFLICT)" if shape.upsert else "psql \\copy"
    out = [Row(label, psql, rows, base, None, median(runs["psql"], "backend_s"), median(runs["psql"], "cpu_s"),
               extra=spread(runs["psql"]))]
    for step in steps[1:]:
        kind, mode = step.split("-")
        got = runs[step]
        if kind in ("dirty", "base"):
            continue
        name = f"importd {'engine' if kind == 'engine' else 'end to end'} {mode}"
        secs = median(got, "seconds")
        if kind == "engine":
            extra = f"{got[-1]['job'].get('state')} {spread(got)}"
            out.append(Row(label, name, rows, secs, base, median(got, "backend_s"), median(got, "cpu_s"),
                           max(g["rss_mb"] for g in got), extra))
        else:
            sub = median(got, "submit_s")
            extra = f"{got[-1]['state']}, submit {sub:.2f} s ({100 * sub / secs:.0f} %) {spread(got)}"
            out.append(Row(label, name, rows, secs, base, None, median(got, "cpu_s"),
                           max(g["rss_mb"] for g in got), extra))
    for mode in ("atomic", "resumable"):
        if CASES != "dirty":
            print(f"  {label}: 1 % bad rows, {mode}", flush=True)
            runs[f"dirty-{mode}"] = [engine_alone(s, dirty, shape, mode)]
        got = runs[f"dirty-{mode}"]
        job = got[-1]["job"]
        out.append(Row(label, f"importd engine {mode}, 1 % bad rows", rows, median(got, "seconds"), base,
                       median(got, "backend_s"), median(got, "cpu_s"), max(g["rss_mb"] for g in got),
                       f"{job.get('state')}, {job.get('rows_rejected')} rejected"
                       + (f" {spread(got)}" if len(got) > 1 else "")))
    for mode in ("atomic", "resumable") if "base-atomic" in runs else ():
        got = runs[f"base-{mode}"]
        out.append(Row(label, f"{BASE_LABEL} engine {mode}, 1 % bad rows", rows, median(got, "seconds"), base,
                       median(got, "backend_s"), median(got, "cpu_s"), max(g["rss_mb"] for g in got),
                       f"{got[-1]['job'].get('state')}, {got[-1]['job'].get('rows_rejected')} rejected {spread(got)}"))
    if shape.key == "b" and CASES != "dirty":
        double = generate(DATA / f"narrow-{2 * ROWS}-s8.csv", rows=2 * ROWS, seed=8)
        for mode in ("atomic", "resumable"):
            print(f"  {label}: 2x file, {mode}", flush=True)
            got1 = engine_alone(s, double, shape, mode)
            out.append(Row(label, f"importd engine {mode}, 2x file", 2 * rows, got1["seconds"], 2 * base,
                           got1["backend_s"], got1["cpu_s"], got1["rss_mb"], str(got1["job"].get("state"))))
    return out


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def spread(runs: list[dict[str, Any]]) -> str:
    return "[" + " ".join(f"{r['seconds']:.2f}" for r in runs) + "]"


def bench_backends_cpu() -> float:
    """CPU seconds of the live PostgreSQL backends connected to the bench database."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"postgres: ") and f" {DB} ".encode() in cmd:
                total += process_cpu(int(proc.name))
    return total


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (/proc/stat: every process, others' too)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def small_files(s: Settings, publisher: Publisher, count: int, rows: int = 100,
                tree: Path = ROOT) -> tuple[float, str]:
    """Jobs per second for ``count`` files of ``rows`` rows through 4 worker children (their
    code from ``tree``), and where a job's time goes: CPU milliseconds per job of the worker
    processes, of their PostgreSQL backends, and of the whole machine (RabbitMQ, Redis and
    others' work included)."""
    reset_table(s, "bench_small", SHAPES[1])
    paths = []
    lines = files(SHAPES[1])[0].read_text().splitlines(keepends=True)
    header, body = lines[0], [line for line in lines[1:] if line.count('"') == 0]
    for i in range(count):
        f = DATA / "small" / f"s{i}.csv"
        f.parent.mkdir(exist_ok=True)
        chunk = body[i * rows:(i + 1) * rows]  # distinct ids: the table has a primary key
        f.write_text(header + "".join(chunk))
        paths.append(f)
    ids = [submit(s, f, "public.bench_small", publisher=publisher).id for f in paths]
    with infra.worker(s, DATA, "-Q", "import_queue", "-c", "4", PYTHONPATH=str(tree)) as w:
        w.wait_consuming(4)
        procs = [w.proc.pid, *w.child_pids()]
        worker0, backend0, busy0 = sum(map(process_cpu, procs)), bench_backends_cpu(), machine_busy_s()
        wait_all_final(s, ids, 600)
        worker1, backend1, busy1 = sum(map(process_cpu, procs)), bench_backends_cpu(), machine_busy_s()
    with psycopg.connect(s.database_url) as conn:
        first, last = conn.execute("SELECT min(started_at), max(finished_at) FROM importd.jobs WHERE id = ANY(%s)",
                                   (ids,)).fetchone() or (None, None)
    assert first and last
    ms = (lambda a, b: f"{1000 * (b - a) / count:.1f}")  # noqa: E731
    per_job = (f"CPU per job: worker {ms(worker0, worker1)} ms, its PostgreSQL backends {ms(backend0, backend1)} ms,"
               f" whole machine {ms(busy0, busy1)} ms (RabbitMQ, Redis and others' work included; 2 cores)")
    return count / (last - first).total_seconds(), per_job


def small_rounds(s: Settings, publisher: Publisher) -> tuple[float, str, list[str]]:
    """The small-file case :data:`SMALL_ROUNDS` times; with :data:`BASE`, each round runs the
    base tree's worker and this tree's, in turn (swapped every other round). Returns this
    tree's median jobs/s, the CPU line of its last run, and one line per run."""
    trees = [("this tree", ROOT)] + ([(BASE_LABEL, Path(BASE))] if BASE else [])
    got: dict[str, list[float]] = {name: [] for name, _ in trees}
    lines, per_job = [], ""
    for round_ in range(SMALL_ROUNDS):
        for name, tree in (trees if round_ % 2 else trees[::-1]):
            quiesce(s)
            print(f"  small files: {SMALL} x 100 rows, 4 children ({name}, run {round_ + 1})", flush=True)
            rate, cpu = small_files(s, publisher, SMALL, tree=tree)
            got[name].append(rate)
            per_job = cpu if tree == ROOT else per_job
            lines.append(f"- {name}: {rate:.0f} jobs/s; {cpu}")
    if BASE:
        for name, rates in got.items():
            lines.append(f"- {name}: median {statistics.median(rates):.0f} jobs/s "
                         f"[{' '.join(f'{r:.0f}' for r in rates)}]")
    return float(statistics.median(got["this tree"])), per_job, lines


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


def goals(results: list[Row], jobs_per_s: float | None) -> list[str]:
    """The issue's goals, each with what this run measured."""
    def ratios(name: str, keys: str) -> list[tuple[str, float]]:
        return [(r.shape[:3], r.ratio) for r in results if r.name == name and r.shape[1] in keys and r.ratio]

    out = []
    for label, name, keys, want in (
            ("atomic end to end >= 1.0 x (a-c, e)", "importd end to end atomic", "abce", 1.0),
            ("resumable end to end >= 1.3 x (a-c, e)", "importd end to end resumable", "abce", 1.3),
            ("upsert atomic >= 1.0 x the psql recipe", "importd end to end atomic", "d", 1.0),
            ("upsert resumable >= 1.0 x the psql recipe", "importd end to end resumable", "d", 1.0),
            ("1 % bad rows atomic >= 0.9 x", "importd engine atomic, 1 % bad rows", "abcde", 0.9),
            ("1 % bad rows resumable >= 0.9 x", "importd engine resumable, 1 % bad rows", "abcde", 0.9)):
        got = ratios(name, keys)
        if got:
            ok = all(r >= want for _, r in got)
            out.append(f"- {'met    ' if ok else 'NOT met'} {label}: " + ", ".join(f"{k} {r:.2f}" for k, r in got))
    s3 = [(r.name.split(" on ")[1].split(" ")[0], r.ratio) for r in results if " S3 on " in r.name and r.ratio]
    if s3:
        ok = all(ratio >= 0.9 for _, ratio in s3)
        out.append(f"- {'met    ' if ok else 'NOT met'} S3 >= 0.9 x local disk: "
                   + ", ".join(f"{kind} {ratio:.2f}" for kind, ratio in s3))
    rss = [r.rss_mb for r in results if r.rss_mb is not None]
    if rss:
        out.append(f"- {'met    ' if max(rss) < 150 else 'NOT met'} worker RSS < 150 MB: max {max(rss):.0f} MB")
    if jobs_per_s is not None:
        out.append(f"- {'met    ' if jobs_per_s >= 400 else 'NOT met'} small files >= 400 jobs/s: {jobs_per_s:.0f}")
    return out


def main() -> int:
    started = time.monotonic()
    s = settings()
    shapes = [shape for shape in SHAPES if shape.key in ONLY]
    print(f"generating data (deterministic, cached in bench-data/) ... rows {ROWS:,}, rounds {ROUNDS}"
          f"{' (quick)' if QUICK else ''}", flush=True)
    for shape in shapes:
        files(shape)
    prepare(s)
    publisher = Publisher(s)
    print("IMPORTD_RATE_LIMIT=none: the 10/min import limit is lifted for the benchmark.", flush=True)
    results: list[Row] = []
    e2e = EndToEnd(s, publisher) if CASES != "dirty" and shapes else None
    try:
        for shape in shapes:
            results.extend(bench_shape(s, shape, e2e))
    finally:
        if e2e is not None:
            e2e.close()
    if os.environ.get("IMPORTD_BENCH_S3", "1") != "0" and CASES != "dirty":
        print("  (a) from S3 against local disk", flush=True)
        results.extend(s3_against_local(s, SHAPES[0]))
    jobs_per_s, per_job, small_lines = None, "", []
    if SMALL and CASES != "dirty":
        jobs_per_s, per_job, small_lines = small_rounds(s, publisher)
    publisher.close()
    print(f"\nmachine: {machine()}")
    print("| shape | case | rows | s | rows/s | vs psql | backend CPU s | client CPU s | peak RSS MB | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(r.line())
    if jobs_per_s is not None:
        print(f"| small files | {SMALL} files x 100 rows, 4 worker children | {SMALL * 100:,} | | | "
              f"**{jobs_per_s:.0f} jobs/s** | | | | {per_job} |")
    if len(small_lines) > 1:
        print("\nsmall-file runs, in the order they ran:\n" + "\n".join(small_lines))
    print(f"\n(clean cases: median of {ROUNDS} interleaved run(s), each after a checkpoint, seconds in brackets;"
          " ratio = psql time / importd time on the same shape (1 % bad rows: against psql on the clean file;"
          " 2x file: psql time doubled); backend CPU = the PostgreSQL backend(s) of the load, from /proc;"
          " client CPU = psql, the engine's process or the worker child; RSS = the importing process's peak)")
    print("\ngoals:\n" + "\n".join(goals(results, jobs_per_s)))
    print(f"\nbench took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
