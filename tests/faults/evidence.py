"""Evidence that a fault met work in flight, and of the recovery path that followed.

A fault that lands between jobs proves nothing, so each scenario reads state at the moment it
injects a fault (the job rows in STARTED, their attempt, checkpoint and worker pid; an active
COPY backend; a refused connection) and records a :class:`Hit` or a miss. After the audit it
reads what the recovery left behind: the job events the workers published on
``importd.events`` (retried with reason ``worker-lost`` is a redelivery counted as an attempt,
deferred ``locked`` is the advisory lock refusing a second run, a second ``succeeded`` is the
finished-job no-op) and the job rows (attempts, checkpoints). Events are state, not log lines:
they are the messages the worker publishes for ``importd events``.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from kombu import Queue

from importd.config import Settings
from importd.ops import events as job_events
from tests.support import report
from tests.support.infra import Broker, wait_for

#: Recovery paths, named as the summary prints them.
REDELIVERY = "redelivery counted as an attempt"
LOCKED = "deferred: lock held by a running delivery"
FINISHED = "no-op: job already finished"
RETRY = "transient error retried"
SOFT_LIMIT = "soft time limit retried"
RESUMED = "resumed from a checkpoint"


@dataclass(frozen=True)
class JobRow:
    """A job's row as read at one moment."""

    id: str
    state: str
    attempts: int
    checkpoint: int
    worker: str | None

    @property
    def pid(self) -> int | None:
        return int(self.worker.rsplit(":", 1)[1]) if self.worker else None


def job_rows(settings: Settings, ids: Iterable[str], state: str | None = None) -> list[JobRow]:
    """The rows of ``ids`` (only those in ``state`` if given), read now."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('importd.jobs')").fetchone() == (None,):
            return []  # a run without the job store (test tasks only)
        rows = conn.execute(
            "SELECT id, state, attempts, checkpoint_offset, worker FROM importd.jobs"
            " WHERE id = ANY(%s) AND (%s::text IS NULL OR state = %s) ORDER BY id",
            (list(ids), state, state)).fetchall()
    return [JobRow(*r) for r in rows]


def running(settings: Settings, ids: Iterable[str]) -> list[JobRow]:
    return job_rows(settings, ids, "STARTED")


@dataclass
class Hit:
    """One fault that met work: what it hit, read at the moment of injection."""

    fault: str
    jobs: list[JobRow]
    detail: str = ""


class EventLog:
    """Every job event of the run's vhost, kept in a queue of this test's own and read on demand.

    The queue is durable, so a broker restart keeps its binding (events are transient messages:
    the ones published just before a restart are lost, those after it are kept).
    """

    def __init__(self, broker: Broker, queue_arguments: dict[str, Any] | None = None) -> None:
        """``queue_arguments``: a quorum queue on a cluster, so events keep arriving while the
        node it was declared on is stopped."""
        self.broker = broker
        self.name = f"test-events-{uuid.uuid4().hex[:8]}"
        self.events: list[dict[str, Any]] = []
        channel = broker.channel()
        job_events.exchange()(channel).declare()
        queue = Queue(self.name, durable=True, auto_delete=False, queue_arguments=queue_arguments)(channel)
        queue.declare()
        queue.bind_to(job_events.EVENTS_EXCHANGE, routing_key="#")

    def drain(self) -> list[dict[str, Any]]:
        """Take what arrived since the last call; return every event seen so far."""
        while (msg := self.broker.channel().basic_get(self.name, no_ack=True)) is not None:
            self.events.append(json.loads(msg.body))
        return self.events

    def of(self, job_id: str, kind: str | None = None, reason: str | None = None,
           attempt: int | None = None) -> list[dict[str, Any]]:
        return [e for e in self.drain() if e.get("job_id") == job_id and kind in (None, e.get("type"))
                and reason in (None, e.get("reason")) and attempt in (None, e.get("attempt"))]

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        return wait_for(lambda: next((e for e in self.drain() if pred(e)), None), timeout, what=what)

    def paths(self, job_id: str, attempts: int) -> Counter[str]:
        """The recovery paths this job's events show; ``attempts`` is the job row's final count
        (set by the last delivery that really ran it, so a success at a later attempt is a no-op
        on a finished job; the outcome of a delivery lost with its channel is never published)."""
        found: Counter[str] = Counter()
        for e in self.of(job_id):
            kind, reason = e.get("type"), e.get("reason")
            if kind == "retried":
                found[{"worker-lost": REDELIVERY, "soft-time-limit": SOFT_LIMIT}.get(str(reason), RETRY)] += 1
            elif kind == "deferred" and reason == "locked":
                found[LOCKED] += 1
            elif kind == "succeeded" and int(e.get("attempt", 0)) > attempts:
                found[FINISHED] += 1
        return found

    def close(self) -> None:
        try:
            self.broker.channel().queue_delete(self.name)
        except Exception:  # noqa: BLE001 - the vhost goes at the end of the run anyway
            pass


@dataclass
class Evidence:
    """The faults of one scenario: injected, hit (with what they met) and missed."""

    scenario: str
    settings: Settings
    injected: int = 0
    hits: list[Hit] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)

    def hit(self, fault: str, jobs: list[JobRow], detail: str = "") -> Hit:
        self.injected += 1
        h = Hit(fault, jobs, detail)
        self.hits.append(h)
        return h

    def miss(self, fault: str, why: str) -> None:
        self.injected += 1
        self.missed.append(f"{fault}: {why}")

    def demote(self, h: Hit, why: str) -> None:
        """A fault first thought a hit that, read afterwards, met nothing (e.g. the job had ended)."""
        self.hits.remove(h)
        self.missed.append(f"{h.fault}: {why}")

    def hit_jobs(self) -> set[str]:
        return {j.id for h in self.hits for j in h.jobs}

    def observe(self, log: EventLog, jobs: Iterable[str] | None = None) -> Counter[str]:
        """Collect the recovery paths the events show for ``jobs`` (default: the jobs hit)."""
        ids = self.hit_jobs() if jobs is None else set(jobs)
        rows = {r.id: r.attempts for r in job_rows(self.settings, ids)}
        for job in sorted(ids):  # a job without a row (a test task) shows no no-op success
            self.paths.update(log.paths(job, rows.get(job, 10**9)))
        return self.paths

    def resumed(self) -> int:
        """Hit resumable jobs that had committed a checkpoint and then finished on a later attempt
        (with the audit's no-duplicate check, the later attempt started at the checkpoint)."""
        now = {r.id: r for r in job_rows(self.settings, self.hit_jobs())}
        count = sum(1 for h in self.hits for j in h.jobs
                    if j.checkpoint > 0 and now[j.id].state == "SUCCESS" and now[j.id].attempts > j.attempts
                    and now[j.id].checkpoint > j.checkpoint)
        self.paths[RESUMED] += count
        return count

    def record(self) -> None:
        """Add to the run's summary, then fail if every fault missed."""
        report.add(faults_injected=self.injected, faults_hit=len(self.hits), faults_missed=len(self.missed))
        report.add_paths(self.paths)
        assert self.hits, f"{self.scenario}: every fault missed running work: {self.missed}"

    def require(self, *any_of: str) -> None:
        """The scenario's docstring names these recovery paths: at least one must show."""
        assert any(self.paths[p] for p in any_of), (self.scenario, dict(self.paths), any_of)
