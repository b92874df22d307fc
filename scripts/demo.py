"""`make demo`: the main job end to end on this machine's services.

Creates a demo database and table, starts a worker (1 child) and the API, submits a sample
CSV with `importd submit --follow` (a live progress bar), prints the job and the table count,
then stops everything it started.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
DB = "importd_demo"
ROWS = 200_000


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="importd-demo-"))
    env = dict(os.environ)
    env.setdefault("IMPORTD_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/{DB}")
    env.setdefault("IMPORTD_UPLOAD_DIR", str(work / "uploads"))
    env.setdefault("IMPORTD_TABLES", "public.demo_people")
    env.setdefault("IMPORTD_REDIS_PREFIX", "importd-demo")
    env["PYTHONPATH"] = str(ROOT)
    _create_database(env["IMPORTD_DATABASE_URL"])
    sample = work / "people.csv"
    _write_sample(sample)
    importd = [sys.executable, "-m", "importd"]
    subprocess.run([*importd, "declare"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*importd, "migrate"], env=env, check=True)
    worker = subprocess.Popen([*importd, "worker", "-c", "1"], env=env, stderr=open(work / "worker.log", "wb"))
    try:
        time.sleep(2)
        print(f"submitting {sample} ({ROWS} rows) ...", flush=True)
        done = subprocess.run([*importd, "submit", str(sample), "--table", "public.demo_people", "--follow"],
                              env=env)
        with psycopg.connect(env["IMPORTD_DATABASE_URL"]) as conn:
            count = conn.execute("SELECT count(*) FROM public.demo_people").fetchone()
        print(f"public.demo_people now holds {count[0] if count else 0} rows; worker log: {work / 'worker.log'}")
        return done.returncode
    finally:
        worker.terminate()
        worker.wait(60)


def _create_database(url: str) -> None:
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DB}"')
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS public.demo_people")
        conn.execute("""CREATE TABLE public.demo_people (
            id bigint PRIMARY KEY, name text NOT NULL, email text, age integer,
            balance numeric(12,2), signed_up timestamptz, active boolean, note text)""")


def _write_sample(path: Path) -> None:
    rng = random.Random(42)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "email", "age", "balance", "signed_up", "active", "note"])
        for i in range(1, ROWS + 1):
            w.writerow([i, f"Person {i}", f"p{i}@example.com", rng.randint(18, 90), f"{rng.uniform(0, 1e4):.2f}",
                        f"2024-01-{rng.randint(1, 28):02d}T12:00:00Z", rng.random() < 0.5,
                        "likes, commas" if i % 7 == 0 else ""])


if __name__ == "__main__":
    sys.exit(main())
