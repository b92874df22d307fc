"""Job events on the ``importd.events`` topic exchange, and ``importd events`` to tail them.

Every worker child publishes received, started, progress, retried, deferred, succeeded,
failed and dead-lettered, with routing key ``job.<event>.<task>`` (``job.failed.#``,
``job.*.import.csv``, ``#``). Publishing is cheap when nobody listens: non-persistent, no
confirm wait, keys nobody is bound to skipped for a while (:class:`EventPublisher`), on a
channel of the child's own connection from the thread that owns it (the consumer's event bus
delivers there). An event that cannot be published is lost, by design: events are for
watching, PostgreSQL and Redis hold the record.

The import engine reports progress from its job thread with :func:`progress`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import amqp.exceptions
from kombu import Connection, Exchange, Message, Queue
from kombu import Consumer as KombuConsumer
from kombu.exceptions import OperationalError
from tenacity import stop_before_delay

from importd.config import Settings
from importd.ops.control import node_name, publish_unconfirmed
from importd.subcommand import Subcommand
from importd.worker import reconnect
from importd.worker.publisher import broker_connection

if TYPE_CHECKING:
    from importd.worker.consumer import Consumer

#: Topic exchange of job events.
EVENTS_EXCHANGE = "importd.events"
#: Every event type, in a job's life order.
EVENT_TYPES = ("received", "started", "progress", "retried", "deferred", "succeeded", "failed", "dead-lettered")
#: Seconds a routing key nobody listens to is not published again (see EventPublisher).
QUIET_S = 2.0
#: What a lost or refusing broker raises (py-amqp's connection and channel errors, kombu's,
#: the socket's): the tail reconnects on these, as the loop before it did on the transport's
#: ``connection_errors`` and ``channel_errors``.
BROKER_ERRORS = (OSError, OperationalError, amqp.exceptions.ConnectionError, amqp.exceptions.ChannelError,
                 amqp.exceptions.RecoverableConnectionError)
#: A tail's queue drops what it cannot show within this many milliseconds.
TAIL_TTL_MS = 60_000


def exchange() -> Exchange:
    return Exchange(EVENTS_EXCHANGE, "topic", durable=True, auto_delete=False)


def routing_key(event: str, task: str) -> str:
    return f"job.{event}.{task or 'unknown'}"


class EventPublisher:
    """Bus listener that publishes each event to the exchange (owner thread only).

    Events go out ``mandatory``: a routing key nobody is bound to comes back as a
    ``basic.return``, and that key is then not published for :data:`QUIET_S` seconds, so a
    worker nobody watches spends almost nothing on events (a tail that starts listening misses
    at most that long of one key). The raw py-amqp publish skips kombu's per-message work.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.base = {"worker": node_name(), "hostname": socket.gethostname(), "pid": os.getpid()}
        self.quiet_until: dict[str, float] = {}
        channel.events["basic_return"].add(self._returned)

    def _returned(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self.quiet_until[routing_key] = time.monotonic() + QUIET_S

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        key = routing_key(event, str(fields.get("task", "")))
        if time.monotonic() < self.quiet_until.get(key, 0.0):
            return
        body = {"type": event, "ts": datetime.now(UTC).isoformat(), **self.base,
                **{k: v for k, v in fields.items() if v not in ("", None)}}
        publish_unconfirmed(self.channel, json.dumps(body, default=str).encode(), exchange=EVENTS_EXCHANGE,
                            routing_key=key, mandatory=True, content_type="application/json", delivery_mode=1)


def attach(consumer: Consumer, connection: Connection) -> None:
    """Consumer extension: publish the child's job events on ``connection`` (after each connect)."""
    channel = connection.channel()
    exchange()(channel).declare()
    listeners = consumer.events.listeners
    listeners[:] = [x for x in listeners if not isinstance(x, EventPublisher)]  # the old channel is gone
    listeners.append(EventPublisher(channel))


# -- importd events ------------------------------------------------------------------------


def format_event(event: dict[str, Any]) -> str:
    """One readable line per event."""
    ts = str(event.get("ts", ""))[:23]
    skip = {"type", "ts", "job_id", "task", "attempt", "queue", "worker", "hostname", "pid"}
    extra = " ".join(f"{k}={_short(v)}" for k, v in event.items() if k not in skip)
    return (f"{ts} {event.get('type', '?'):<13} {event.get('job_id', '?')} task={event.get('task', '?')} "
            f"attempt={event.get('attempt', '?')} queue={event.get('queue', '?')} {extra} "
            f"[{event.get('worker', '?')} pid {event.get('pid', '?')}]").replace("  ", " ")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("\n", " ")
    return repr(text[:80]) if " " in text else text[:80]


def tail(settings: Settings, keys: list[str], on_event: Any, *, job: str | None = None,
         count: int | None = None, timeout_s: float | None = None, ready: Any = None,
         on_reconnect: Any = None) -> int:
    """Consume events matching ``keys`` until ``count`` were seen or ``timeout_s`` passed.

    A lost broker connection is re-established with backoff (what was published meanwhile is
    missed: events are for watching); ``on_reconnect(error, delay_s)`` is told each time.
    """
    seen = 0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s

    def on_message(message: Message) -> None:
        nonlocal seen
        event = json.loads(message.body)
        if job and event.get("job_id") != job:
            return
        seen += 1
        on_event(event)

    def left_s() -> float:
        return 1.0 if deadline is None else deadline - time.monotonic()

    def done() -> bool:
        return (count is not None and seen >= count) or left_s() <= 0

    def listen() -> None:
        """One connection: bind, consume until done; a broker error leaves it to the retry."""
        with broker_connection(settings) as conn:
            channel = conn.channel()
            exchange()(channel).declare()
            queue = Queue(f"importd.events.tail.{socket.gethostname()}.{os.getpid()}",
                          exclusive=True, auto_delete=True, durable=False,
                          queue_arguments={"x-message-ttl": TAIL_TTL_MS, "x-max-length": 100_000})
            bound = queue(channel)
            bound.declare()
            for key in keys:
                bound.bind_to(EVENTS_EXCHANGE, routing_key=key)
            with KombuConsumer(channel, queues=[bound], on_message=on_message, no_ack=True):
                if ready is not None:
                    ready()  # after every (re)connect: events from now on are seen
                while not done():
                    try:
                        conn.drain_events(timeout=min(left_s(), 1.0))
                    except TimeoutError:
                        conn.heartbeat_check()

    def is_broker_error(exc: BaseException) -> bool:
        return isinstance(exc, BROKER_ERRORS)

    stop = None if deadline is None else stop_before_delay(max(0.0, deadline - time.monotonic()))
    try:
        # No log line: the tail's stdout carries the events (JSON lines); on_reconnect tells stderr.
        for attempt in reconnect.retrying(is_broker_error, None, "events tail: broker connection lost, reconnecting",
                                          stop=stop, on_retry=on_reconnect):
            with attempt:
                listen()
    except Exception as exc:
        if not is_broker_error(exc):
            raise  # only a broker that stayed away past the deadline ends the tail quietly
    return seen


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", "--key", action="append", metavar="PATTERN",
                        help="topic pattern, e.g. 'job.failed.#' or 'job.*.import.csv' (repeatable; default '#')")
    parser.add_argument("--job", metavar="ID", help="only the events of this job")
    parser.add_argument("--json", action="store_true", help="print each event as one JSON line")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N events")
    parser.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    keys = args.key or ["#"]

    def show(event: dict[str, Any]) -> None:
        print(json.dumps(event) if args.json else format_event(event), flush=True)

    def ready() -> None:
        print(f"listening on {EVENTS_EXCHANGE} ({', '.join(keys)}); Ctrl-C stops", file=sys.stderr, flush=True)

    def reconnecting(exc: BaseException, delay_s: float) -> None:
        print(f"broker connection lost ({exc}); reconnecting in {delay_s:.1f}s", file=sys.stderr, flush=True)

    tail(settings, keys, show, job=args.job, count=args.count, timeout_s=args.timeout, ready=ready,
         on_reconnect=reconnecting)
    return 0


#: ``importd events``.
EVENTS = Subcommand(_add_arguments, _run)
