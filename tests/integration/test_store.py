"""importd's PostgreSQL records: migrations (twice, concurrently), jobs, rejected rows."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from importd.config import Settings
from importd.imports import store
from tests.support import infra


def test_migrate_from_two_hosts_at_once_and_again_applies_each_version_once(settings: Settings):
    database = f"importd_mig_{uuid.uuid4().hex[:8]}"
    infra.create_database(database)
    try:
        fresh = Settings(database_url=infra.SERVICES.database_url(database))
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: store.migrate(fresh), range(2)))
        versions = [v for v, _ in store.migration_files()]
        assert sorted(results, key=len) == [[], versions]
        assert store.migrate(fresh) == []
        with store.connect(fresh) as conn:
            assert [r[0] for r in conn.execute("SELECT version FROM importd.schema_migrations")] == versions
    finally:
        infra.drop_database(database)


def test_jobs_are_created_read_listed_newest_first_and_paged(migrated: Settings):
    tag = uuid.uuid4().hex[:6]
    with store.connect(migrated) as conn:
        made = [store.create_job(conn, store.JobRecord(id=f"{tag}-{i}", target_table="people",
                                                       options={"max_errors": i}, idempotency_key=f"{tag}-k{i}"))
                for i in range(5)]
        assert store.get_job(conn, made[2].id) == made[2]
        assert store.get_job_by_idempotency_key(conn, f"{tag}-k3") == made[3]
        assert made[0].to_dict()["created_at"] == made[0].created_at.isoformat()  # type: ignore[union-attr]
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = store.list_jobs(conn, state="PENDING", limit=2, cursor=cursor)
            seen += [j.id for j in page if j.id.startswith(tag)]
            if cursor is None:
                break
        assert seen == [j.id for j in reversed(made)]


def test_cancel_stops_a_pending_job_at_once_flags_a_running_one_and_leaves_a_final_one(migrated: Settings):
    tag = uuid.uuid4().hex[:6]
    with store.connect(migrated) as conn:
        for suffix, state in (("p", "PENDING"), ("s", "STARTED"), ("d", "SUCCESS")):
            store.create_job(conn, store.JobRecord(id=f"{tag}{suffix}", state=state))
        pending, running, done = (store.request_cancel(conn, f"{tag}{s}") for s in "psd")
        assert pending is not None and (pending.state, pending.cancel_requested) == ("CANCELLED", True)
        assert pending.finished_at is not None
        assert running is not None and (running.state, running.cancel_requested) == ("STARTED", True)
        assert done is not None and (done.state, done.cancel_requested) == ("SUCCESS", False)
        assert store.request_cancel(conn, "no-such-job") is None
        counts = store.counts_by_state(conn)
        assert set(counts) == set(store.STATES) and counts["CANCELLED"] >= 1


def test_rejected_rows_are_stored_and_streamed_in_line_order(migrated: Settings):
    job_id = uuid.uuid4().hex
    with store.connect(migrated) as conn:
        store.create_job(conn, store.JobRecord(id=job_id))
        store.add_rejected_rows(conn, job_id, [(9, "age", "x", "bad"), (3, None, "a\x00b", "nul")])
        assert list(store.iter_rejected_rows(conn, job_id)) == [(3, None, "a\\x00b", "nul"), (9, "age", "x", "bad")]
        updated = store.update_job(conn, job_id, state="SUCCESS", finished_at=store.NOW)
        assert updated is not None and updated.finished_at is not None
        assert store.update_job(conn, job_id, only_unfinished=True, state="RETRY") is None


def test_finished_at_is_the_time_of_the_update_not_of_the_transaction_start(migrated: Settings):
    job_id = uuid.uuid4().hex
    with store.connect(migrated) as conn:
        store.create_job(conn, store.JobRecord(id=job_id))
        conn.autocommit = False
        began = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT pg_sleep(0.3)")
        done = store.update_job(conn, job_id, state="SUCCESS", finished_at=store.NOW)
        conn.commit()
        assert done is not None and done.finished_at is not None
        assert (done.finished_at - began).total_seconds() >= 0.3
