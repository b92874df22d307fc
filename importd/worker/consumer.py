"""The consumer loop of one worker child.

One thread (the one that calls :meth:`Consumer.run`) owns the AMQP connection: it drains
events, answers heartbeats, publishes retries and dead letters, and acks. Each job runs in a
job thread that never touches the connection; it hands its outcome back through a queue that
the owner drains between ``drain_events`` calls. So a 55-minute COPY never stops heartbeats.

Per delivery (see :mod:`importd.worker.retry` for the delays):

- undecodable / invalid / unknown task -> ``failed_tasks`` with the reason, ack (also when the
  handler raises :class:`~importd.errors.InvalidMessage`: arguments it cannot use and no job
  record to mark FAILURE);
- redelivered by the broker (its worker died, or its channel closed) -> counted as a failed
  attempt: republished with the next attempt number (or dead-lettered past max_retries), ack;
- rate limited or deferred by the handler -> back through the first delay queue, same attempt;
- success or :class:`~importd.errors.PermanentError` (an outcome the handler recorded) -> ack;
- any other exception -> the next delay queue, or ``failed_tasks`` after max_retries.

Every move is "publish with confirm, then ack": a crash between the two leaves a duplicate
message, never a lost one; the import's exactly-once rule makes the duplicate harmless.
"""

from __future__ import annotations

import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Message, Producer
from kombu import Consumer as KombuConsumer
from kombu.exceptions import OperationalError

from importd import logs
from importd.config import Settings
from importd.errors import InvalidMessage, SoftTimeLimitExceeded
from importd.worker import jobrun, messages, reconnect, tasks, topology
from importd.worker.asyncraise import AsyncRaise
from importd.worker.bus import Bus
from importd.worker.context import JobContext
from importd.worker.outcomes import Kind, Outcome, publish_for
from importd.worker.publisher import broker_connection, send
from importd.worker.ratelimit import RateLimiter

#: Longest wait of one ``drain_events`` call before the loop checks heartbeats and outcomes.
#: It is also kept under a quarter of the heartbeat: py-amqp restarts the wait on every
#: heartbeat frame the broker sends (each heartbeat/2 s), so a longer wait would never end
#: and the client would miss its own heartbeats.
DRAIN_TIMEOUT_S = 1.0
#: Longest header text of a hostile delivery copied into a job event.
MAX_HEADER_TEXT = 100
#: Seconds after the soft limit (the cooperative stop) before the exception is raised
#: asynchronously in a job thread that did not stop by itself.
ASYNC_RAISE_AFTER_S = 10.0


@dataclass
class Slot:
    """Shared with the supervisor: the hard deadline of the running job (0: idle)."""

    set_deadline: Callable[[float], None] = field(default=lambda _: None)


class Consumer:
    """Consumes ``queues`` until stopped, one job at a time.

    Parameters: ``settings``; ``queues`` (work queue names); ``max_tasks`` jobs before the
    loop returns so the supervisor can replace the child (None: no limit); ``slot`` to report
    hard deadlines to the supervisor; ``extensions``: callables run with the connection after
    every (re)connect, e.g. the control channel that answers ``importd ping``.
    """

    def __init__(self, settings: Settings, queues: list[str], *, max_tasks: int | None = None,
                 slot: Slot | None = None,
                 extensions: list[Callable[[Consumer, Connection], None]] | None = None) -> None:
        self.settings = settings
        self.queues = [topology.queue_spec(q) for q in queues]
        self.max_tasks = max_tasks
        self.slot = slot or Slot()
        self.extensions = extensions or []
        self.log = logs.get("importd.worker.consumer")
        self.events = Bus(self.log)  # job events for listeners (events exchange, metrics)
        self.stopping = threading.Event()
        self.done_tasks = 0
        self.current: JobContext | None = None
        self._thread: threading.Thread | None = None
        self._stopper: AsyncRaise | None = None
        self._inbox: list[tuple[str, Message]] = []
        self._outcomes: queue.Queue[Outcome] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._generation = 0
        self._connection: Connection | None = None
        self._consumers: list[KombuConsumer] = []
        self._consuming = False
        self._producer: Producer | None = None
        self.resources: dict[str, Any] = {}  # JobContext.resources of every job of this process
        self._limiter = RateLimiter(settings.redis_url, settings.redis_prefix)
        beat = settings.heartbeat_s
        self._drain_timeout = min(DRAIN_TIMEOUT_S, beat / 4) if beat else DRAIN_TIMEOUT_S

    # -- lifecycle -------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """SIGTERM: finish the running job, ack, exit. SIGINT is the supervisor's to handle."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> int:
        """Consume until stopped or max_tasks is reached; reconnect on any broker loss."""
        for attempt in reconnect.retrying(self._is_connection_error, self.log,
                                          "broker connection lost, reconnecting"):
            with attempt:
                self._serve()
        self._close()
        self._limiter.close()
        return 0

    def _serve(self) -> None:
        try:
            self._connect()
            while not self._finished():
                self._tick()
        except BaseException:
            self._generation += 1  # deliveries of this connection can no longer be acked
            self._inbox.clear()
            self._drop_connection()
            if self._finished():  # stopping with nothing running: no need to reconnect
                return
            raise

    def _limit_reached(self) -> bool:
        """True once this child must take no more deliveries (stopping, or max_tasks done)."""
        return self.stopping.is_set() or (self.max_tasks is not None and self.done_tasks >= self.max_tasks)

    def _finished(self) -> bool:
        return self._limit_reached() and self._thread is None and not self._inbox

    def _is_connection_error(self, exc: BaseException) -> bool:
        conn = self._connection or broker_connection(self.settings)
        errors = (*conn.connection_errors, *conn.channel_errors, OperationalError, OSError)
        return isinstance(exc, errors) and not self._finished()

    def _connect(self) -> None:
        conn = broker_connection(self.settings)
        conn.ensure_connection(max_retries=1)
        self._connection = conn
        topology.declare(conn, self.settings.queue_type)
        self._producer = Producer(conn.channel())
        channel = conn.channel()
        # global=True: one unacked delivery per channel across all the queues we consume.
        # Quorum queues refuse global QoS (540): there it is per queue consumed (docs/operations.md).
        channel.basic_qos(prefetch_size=0, prefetch_count=self.settings.prefetch,
                          a_global=self.settings.queue_type != topology.QUORUM)
        self._consumers = []
        for spec in self.queues:
            receive = self._receiver(spec.name)
            # on_decode_error: kombu could not build the message (a body it failed to decode);
            # it goes to the inbox like any delivery and is dead-lettered there (issue 12 item 2).
            consumer = KombuConsumer(channel, queues=[topology.work_queue_entity(spec, self.settings.queue_type)],
                                     on_message=receive, on_decode_error=_ignoring_error(receive), no_ack=False)
            self._consumers.append(consumer)
        if self._thread is None and not self.stopping.is_set():
            self._start_consuming()
        for extension in self.extensions:
            extension(self, conn)
        self.log.info("consuming", queues=[q.name for q in self.queues], generation=self._generation)

    def _start_consuming(self) -> None:
        for consumer in self._consumers:
            consumer.consume()
        self._consuming = True

    def _cancel_consuming(self) -> None:
        if not self._consuming:
            return
        self._consuming = False
        for consumer in self._consumers:
            try:
                consumer.cancel()
            except Exception:  # noqa: BLE001 - the channel may be gone already
                pass

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                self._connection.collect()
            except Exception:  # noqa: BLE001
                pass
        self._connection = None
        self._consumers = []
        self._consuming = False

    def _close(self) -> None:
        if self._connection is not None:
            self._cancel_consuming()
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001
                pass
            self._connection = None

    # -- the loop --------------------------------------------------------------------

    def _tick(self) -> None:
        assert self._connection is not None
        if self._limit_reached():
            self._cancel_consuming()
        self._settle_outcomes()
        while self._inbox and self._thread is None:
            queue_name, message = self._inbox.pop(0)
            self._dispatch(queue_name, message)
        self._enforce_soft_limit()
        self.events.flush()
        if self._wait_readable():
            try:
                self._connection.drain_events(timeout=self._drain_timeout)
            except TimeoutError:
                pass
        self._connection.heartbeat_check()

    def _wait_readable(self) -> bool:
        """Sleep until the broker sends something or a job thread posts its outcome.

        Without the wake-up pipe a finished job would wait for the next frame or the drain
        timeout before its ack: up to a second per job, which caps small-file throughput.
        """
        assert self._connection is not None
        if (self._inbox and self._thread is None) or not self._outcomes.empty():
            return False  # a synchronous call (a confirm, a declare) already read a delivery in
        sock = self._connection.connection.sock
        if sock is None or getattr(sock, "pending", lambda: 0)():  # TLS may hold decrypted bytes
            return True
        readable, _, _ = select.select([sock, self._wake_r], [], [], self._drain_timeout)
        if self._wake_r in readable:
            os.read(self._wake_r, 4096)
        return sock in readable

    def _receiver(self, queue_name: str) -> Callable[[Message], None]:
        def receive(message: Message) -> None:
            self._inbox.append((queue_name, message))
        return receive

    def _dispatch(self, queue_name: str, message: Message) -> None:
        """Decide what to do with a fresh delivery; start a job thread if it is to run.

        Issue 12 item 2: no property of a delivery may crash the child (the broker would
        hand the message to the next child, and the next, while the respawn backoff stalls
        the queue). Whatever escapes decoding or dispatch, short of the broker connection
        itself failing, dead-letters that delivery with its reason, and the loop goes on.
        """
        try:
            self._start(queue_name, message)
        except InvalidMessage as exc:
            self.log.warning("invalid message dead-lettered", reason=exc.reason, detail=exc.detail,
                             queue=queue_name, message_id=_message_id(message))
            self._dead_letter_last_resort(queue_name, message, exc.reason, str(exc))
        except Exception as exc:
            if self._is_connection_error(exc):
                raise
            self.log.error("delivery could not be dispatched, dead-lettered", queue=queue_name,
                           error=f"{type(exc).__name__}: {exc}"[:500], message_id=_message_id(message))
            self._dead_letter_last_resort(queue_name, message, messages.UNDECODABLE,
                                          f"{type(exc).__name__}: {exc}"[:2000])

    def _dead_letter_last_resort(self, queue_name: str, message: Message, reason: str, error: str) -> None:
        """Dead-letter with importd's headers; if even that fails, reject it to the queue's DLX.

        The work queues dead-letter to :data:`topology.DLX` themselves, so a rejected delivery
        still lands in ``failed_tasks`` (with RabbitMQ's ``x-death`` instead of our reason).
        """
        try:
            self._carry_out(Outcome(Kind.DEAD_LETTER, message, queue_name, self._generation,
                                    attempt=_attempt_header(message), reason=reason, error=error))
        except Exception as exc:
            if self._is_connection_error(exc):
                raise
            self.log.error("dead-letter publish failed, rejecting the delivery", queue=queue_name,
                           error=f"{type(exc).__name__}: {exc}"[:500], message_id=_message_id(message))
            message.reject(requeue=False)

    def _start(self, queue_name: str, message: Message) -> None:
        if message.errors:  # kombu failed to build it (see on_decode_error)
            _, exc, _ = message.errors[0]
            raise InvalidMessage(messages.UNDECODABLE, f"{type(exc).__name__}: {exc}"[:200])
        props = message.properties
        job = messages.decode(message.body, message.headers, message.content_type, props.get("priority"))
        spec = tasks.get(job.task)
        assert spec is not None
        self.events.emit("received", job_id=job.job_id, task=job.task, attempt=job.attempt, queue=queue_name)
        if not message.delivery_info.get("redelivered") and not self._limiter.try_acquire(
                spec.name, tasks.rate_limit_of(spec, self.settings.rate_limit)):
            self._carry_out(Outcome(Kind.DEFER, message, queue_name, self._generation, job=job,
                                    attempt=job.attempt, reason="rate-limited"))
            return
        log = logs.get("importd.job", job_id=job.job_id, task=job.task, attempt=job.attempt, queue=queue_name)
        ctx = JobContext(job=job, spec=spec, settings=self.settings, queue=queue_name, log=log, events=self.events,
                         resources=self.resources)
        lost = bool(message.delivery_info.get("redelivered"))
        stopper = AsyncRaise(SoftTimeLimitExceeded, armed=False)  # armed by the job thread (jobrun.run)
        thread = threading.Thread(target=self._run_job, args=(ctx, message, self._generation, lost, stopper),
                                  name=f"job-{job.job_id}", daemon=True)
        self.events.emit("started", job_id=job.job_id, task=job.task, attempt=job.attempt, queue=queue_name)
        # Nothing after this point may fail: the job thread owns the delivery from here.
        self.current, self._thread, self._stopper = ctx, thread, stopper
        self.slot.set_deadline(time.time() + spec.hard_time_limit_s)
        thread.start()

    def _run_job(self, ctx: JobContext, message: Message, generation: int, lost: bool,
                 stopper: AsyncRaise) -> None:
        """Job thread: run the job (:func:`jobrun.run`), hand exactly one outcome to the owner."""
        base = Outcome(Kind.ACK, message, ctx.queue, generation, job=ctx.job, attempt=ctx.job.attempt)
        outcome = jobrun.run(ctx, base, lost, stopper)
        self._outcomes.put(outcome)
        try:
            os.write(self._wake_w, b"!")
        except BlockingIOError:  # the pipe is full: the owner is awake anyway
            pass

    def _settle_outcomes(self) -> None:
        while True:
            try:
                outcome = self._outcomes.get_nowait()
            except queue.Empty:
                return
            if self._thread is not None:
                self._thread.join()
            self._thread = None
            self.current, self._stopper = None, None
            self.slot.set_deadline(0.0)
            self.done_tasks += 1
            if self._limit_reached():
                self._cancel_consuming()  # before the ack, or the broker sends one more
            self._carry_out(outcome)
            if not self._consuming and self._consumers and not self._limit_reached():
                self._start_consuming()

    def _carry_out(self, outcome: Outcome) -> None:
        """Publish (with confirm) whatever the outcome needs, then ack the delivery."""
        if outcome.generation != self._generation:
            self.log.warning("outcome of a lost connection dropped; the broker redelivers it",
                             message_id=outcome.message.properties.get("message_id"))
            return
        assert self._producer is not None
        plan = publish_for(outcome, datetime.now(UTC))
        if plan is not None:
            send(self._producer, outcome.message.body, exchange=plan.exchange, routing_key=plan.routing_key,
                 headers=plan.headers, message_id=plan.message_id, priority=plan.priority,
                 expiration_ms=plan.expiration_ms)
        outcome.message.ack()
        self._emit_outcome(outcome)

    def _emit_outcome(self, o: Outcome) -> None:
        """The job event of a settled outcome (``failed``: a PermanentError outcome)."""
        self.events.emit(o.event, job_id=o.job.job_id if o.job else str(o.message.properties.get("message_id") or ""),
                         task=o.job.task if o.job else _header_text(o.message, messages.TASK_HEADER),
                         attempt=o.attempt, queue=o.queue, duration_s=round(o.duration_s, 6), reason=o.reason,
                         error=o.error)

    def _enforce_soft_limit(self) -> None:
        ctx, thread = self.current, self._thread
        if ctx is None or thread is None:
            return
        now = time.monotonic()
        if now >= ctx.deadline and not ctx.stop.is_set():
            ctx.log.warning("soft time limit reached, asking the job to stop",
                            limit_s=ctx.spec.soft_time_limit_s)
            ctx.request_stop(f"soft time limit of {ctx.spec.soft_time_limit_s:g} s exceeded")
        if now >= ctx.deadline + ASYNC_RAISE_AFTER_S and self._stopper is not None:
            self._stopper.fire(thread)


def _ignoring_error(receive: Callable[[Message], None]) -> Callable[[Message, BaseException], None]:
    """kombu's ``on_decode_error(message, exc)`` as a receiver: the error stays in ``message.errors``."""
    def on_decode_error(message: Message, _exc: BaseException) -> None:
        receive(message)
    return on_decode_error


def _attempt_header(message: Message) -> int:
    """The attempt a dead letter records: the header's if it is usable, else 1."""
    try:
        return messages.parse_attempt((message.headers or {}).get(messages.ATTEMPT_HEADER, 1))
    except Exception:  # noqa: BLE001 - InvalidMessage, or headers that are not a dict
        return 1


def _header_text(message: Message, name: str) -> str:
    """A header of a possibly hostile delivery as short text (it ends up in a routing key,
    at most 255 bytes, of the job event)."""
    value = (message.headers or {}).get(name)
    return value[:MAX_HEADER_TEXT] if isinstance(value, str) else ""


def _message_id(message: Message) -> str:
    return str(message.properties.get("message_id") or "")[:200]
