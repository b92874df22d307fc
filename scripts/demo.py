"""`make demo`: the main job end to end on this machine's services.

Creates a demo database and table, starts a worker (1 child) and the API, uploads a sample
CSV over HTTP (`POST /api/upload`), follows its progress over Server-Sent Events
(`GET /api/jobs/{id}/events`) as a live bar, then submits a second file with
`importd submit --follow`, prints the table count and stops everything it started. The page
at the printed URL shows the same while the demo runs.
"""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
DB = "importd_demo"
ROWS = 200_000
PORT = 8765


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
    sample2 = work / "people-again.csv"
    _write_sample(sample2, first_id=ROWS + 1)
    importd = [sys.executable, "-m", "importd"]
    subprocess.run([*importd, "declare"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*importd, "migrate"], env=env, check=True)
    worker = subprocess.Popen([*importd, "worker", "-c", "1"], env=env, stderr=open(work / "worker.log", "wb"))
    api_log = open(work / "api.log", "wb")
    api = subprocess.Popen([*importd, "api", "--port", str(PORT)], env=env, stdout=api_log, stderr=api_log)
    try:
        base = f"http://127.0.0.1:{PORT}"
        _wait_http(f"{base}/healthz")
        print(f"API and upload page: {base}/", flush=True)
        ok = _upload_and_follow(base, sample)
        print(f"\nsubmitting {ROWS} more rows with the CLI: importd submit {sample2.name} --follow")
        done = subprocess.run([*importd, "submit", str(sample2), "--table", "public.demo_people", "--follow"],
                              env=env)
        with psycopg.connect(env["IMPORTD_DATABASE_URL"]) as conn:
            count = conn.execute("SELECT count(*) FROM public.demo_people").fetchone()
        print(f"public.demo_people now holds {count[0] if count else 0} rows; logs: {work}")
        return 0 if ok and done.returncode == 0 else 1
    finally:
        for proc in (api, worker):
            proc.terminate()
        for proc in (api, worker):
            proc.wait(60)


def _wait_http(url: str) -> None:
    for _ in range(100):
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def _upload_and_follow(base: str, sample: Path) -> bool:
    """POST the file as text/csv, then draw the SSE progress until the final event."""
    print(f"uploading {sample} ({ROWS} rows) to {base}/api/upload ...", flush=True)
    with sample.open("rb") as f:
        r = httpx.post(f"{base}/api/upload?table=public.demo_people", content=f,
                       headers={"Content-Type": "text/csv"}, timeout=120)
    r.raise_for_status()
    job = r.json()
    print(f"job {job['job_id']} accepted; following {job['events_url']}", flush=True)
    final: dict[str, object] = {}
    with httpx.stream("GET", base + job["events_url"], timeout=None) as events:
        kind = ""
        for line in events.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
                pct = float(data.get("percent") or 0)
                bar = "#" * int(pct / 100 * 30)
                print(f"\r[{bar:<30}] {pct:5.1f}%  {int(data.get('rows') or 0):>9,} rows  {data.get('state', '')}",
                      end="", flush=True)
                if kind == "final":
                    final = data
    print()
    status = httpx.get(f"{base}/api/jobs/{job['job_id']}", timeout=10).json()
    print(f"{status.get('state')}: {status.get('rows_imported')} rows imported, {status.get('rows_rejected')} rejected")
    return status.get("state") == "SUCCESS" or final.get("state") == "SUCCESS"


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


def _write_sample(path: Path, first_id: int = 1) -> None:
    rng = random.Random(42)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "name", "email", "age", "balance", "signed_up", "active", "note"])
        for i in range(first_id, first_id + ROWS):
            w.writerow([i, f"Person {i}", f"p{i}@example.com", rng.randint(18, 90), f"{rng.uniform(0, 1e4):.2f}",
                        f"2024-01-{rng.randint(1, 28):02d}T12:00:00Z", rng.random() < 0.5,
                        "likes, commas" if i % 7 == 0 else ""])


if __name__ == "__main__":
    sys.exit(main())
