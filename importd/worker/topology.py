"""The broker topology as data, and the one function that declares it.

Everything importd uses on RabbitMQ is listed in :data:`QUEUES` and derived from it: the
dead-letter exchange and queue, the delay (retry) queues, the keys. Declaring is idempotent;
a queue that already exists with other arguments raises :class:`TopologyMismatch` naming the
queue and the argument, instead of a crash loop on 406 PRECONDITION_FAILED.

``failed_tasks`` is bound to the direct exchange ``dlx`` once per ``<source>.failed`` key:
the Celery design's ``*.failed`` would be a literal key on a direct exchange, not a wildcard.

Every queue has a type, ``classic`` (the default, one node) or ``quorum`` (replicated on a
cluster, ``IMPORTD_QUEUE_TYPE=quorum``). Quorum queues get :func:`quorum_arguments`: a broker
delivery limit behind importd's own attempt header, and at-least-once dead-lettering so a
message moving to ``failed_tasks`` (or back from a delay queue) is never dropped on the way.
They have no ``x-max-priority`` (RabbitMQ refuses it); what a job's priority still means on
the connected broker's version is :func:`priority_support`, logged once at declare.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Exchange, Queue, binding
from kombu.exceptions import OperationalError

from importd import logs
from importd.errors import TopologyMismatch
from importd.worker import retry

#: Direct exchange that receives everything dead-lettered.
DLX = "dlx"
#: The dead-letter queue, kept for inspection and ``importd replay-dlq``.
DLQ = "failed_tasks"
#: Seven days, the dead-letter retention of the Celery design importd replaces.
DLQ_TTL_MS = 7 * 24 * 3600 * 1000
#: Direct exchange that feeds the delay queues.
RETRY_EXCHANGE = "importd.retry"
#: Queue types (``IMPORTD_QUEUE_TYPE``).
CLASSIC, QUORUM = "classic", "quorum"
#: Quorum queues: deliveries of one message that may end unacked (a worker killed, a connection
#: lost) before the broker dead-letters it to failed_tasks itself. importd counts attempts in its
#: own header and republishes a retry as a new message (count back to 0), so only a message that
#: kills its worker again and again before importd can act reaches this: the second poison guard.
DELIVERY_LIMIT = 10
#: Where importd's docs explain a classic <-> quorum migration (named in the mismatch error).
MIGRATION_DOC = "docs/operations.md, 'A RabbitMQ cluster with quorum queues'"


@dataclass(frozen=True)
class QueueSpec:
    """One work queue: where it is bound and what its messages may do.

    Parameters: ``name``; ``exchange`` (direct, durable) and ``routing_key`` it is bound with;
    ``ttl_ms`` message TTL in milliseconds (None: none); ``max_priority`` (None: no
    priorities); ``failed_key``, the routing key its dead letters carry to :data:`DLX`.
    """

    name: str
    exchange: str
    routing_key: str
    ttl_ms: int | None
    max_priority: int | None
    failed_key: str

    def arguments(self, queue_type: str = CLASSIC) -> dict[str, object]:
        args: dict[str, object] = {
            "x-dead-letter-exchange": DLX,
            "x-dead-letter-routing-key": self.failed_key,
        }
        if self.ttl_ms is not None:
            args["x-message-ttl"] = self.ttl_ms
        if queue_type == QUORUM:
            return {**args, **quorum_arguments()}
        if self.max_priority is not None:
            args["x-max-priority"] = self.max_priority
        return args


def quorum_arguments(delivery_limit: bool = True) -> dict[str, object]:
    """What makes a queue quorum, and its dead letters at-least-once.

    ``x-dead-letter-strategy: at-least-once`` has the queue keep a dead letter until the target
    queue confirmed it (at-most-once, the default, can drop it when the target is unavailable);
    RabbitMQ honours it only with ``x-overflow: reject-publish``. ``delivery_limit`` False for
    failed_tasks: it has nowhere to dead-letter to, and ``importd dlq`` returns what it lists
    unacked (a delivery each time), so a limit there would silently drop dead letters.
    """
    args: dict[str, object] = {
        "x-queue-type": QUORUM,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if delivery_limit:
        args["x-delivery-limit"] = DELIVERY_LIMIT
    return args


#: The work queues, as in the Celery design importd replaces.
QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("import_queue", "import_tasks", "import.csv", 2 * 3600 * 1000, 10, "import.failed"),
    QueueSpec("bulk_ops_queue", "import_tasks", "bulk.operations", 3600 * 1000, 5, "bulk.failed"),
    QueueSpec("default", "default", "default", None, None, "default.failed"),
)


def queue_spec(name: str) -> QueueSpec:
    for spec in QUEUES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown queue {name!r}; known: {', '.join(q.name for q in QUEUES)}")


def retry_queue_name(queue: str, step: int) -> str:
    """Name (and routing key on :data:`RETRY_EXCHANGE`) of a work queue's delay queue."""
    return f"{queue}.retry.{step}"


def _exchange(name: str, kind: str = "direct") -> Exchange:
    return Exchange(name, kind, durable=True, auto_delete=False, delivery_mode=2)


def dlq_entity(queue_type: str = CLASSIC) -> Queue:
    args: dict[str, object] = {"x-message-ttl": DLQ_TTL_MS}
    if queue_type == QUORUM:
        args.update(quorum_arguments(delivery_limit=False))
    return Queue(
        DLQ,
        bindings=[binding(_exchange(DLX), routing_key=q.failed_key) for q in QUEUES],
        durable=True,
        auto_delete=False,
        queue_arguments=args,
    )


def work_queue_entity(spec: QueueSpec, queue_type: str = CLASSIC) -> Queue:
    return Queue(
        spec.name,
        _exchange(spec.exchange),
        routing_key=spec.routing_key,
        durable=True,
        auto_delete=False,
        queue_arguments=spec.arguments(queue_type),
    )


def retry_queue_entity(spec: QueueSpec, step: int, queue_type: str = CLASSIC) -> Queue:
    """A delay queue: no consumers; expired messages go back to the work exchange and key.

    On a quorum queue (RabbitMQ 3.10+) the fixed queue TTL and each message's own shorter
    ``expiration`` both apply, as on a classic one, and expiry dead-letters at-least-once.
    """
    name = retry_queue_name(spec.name, step)
    args: dict[str, object] = {
        "x-message-ttl": retry.step_ttl_ms(step),
        "x-dead-letter-exchange": spec.exchange,
        "x-dead-letter-routing-key": spec.routing_key,
    }
    if queue_type == QUORUM:
        args.update(quorum_arguments())
    return Queue(
        name,
        _exchange(RETRY_EXCHANGE),
        routing_key=name,
        durable=True,
        auto_delete=False,
        queue_arguments=args,
    )


def all_entities(queue_type: str = CLASSIC) -> list[Queue]:
    """Every queue in declaration order: dead-letter targets before what points at them."""
    entities = [dlq_entity(queue_type)]
    entities += [work_queue_entity(spec, queue_type) for spec in QUEUES]
    entities += [retry_queue_entity(spec, s, queue_type) for spec in QUEUES for s in range(1, retry.STEPS + 1)]
    return entities


def all_queue_names() -> list[str]:
    return [str(q.name) for q in all_entities()]


_MISMATCH = re.compile(r"inequivalent arg '([^']+)' for queue '([^']+)'.*?received (.*?) but current is (.*)$")


def server_version(connection: Connection) -> tuple[int, ...]:
    """The connected broker's version from its connection properties, e.g. (3, 10, 8)."""
    props: dict[str, Any] = getattr(connection.connection, "server_properties", None) or {}
    raw = props.get("version", b"")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def priority_support(version: tuple[int, ...]) -> str:
    """What a job's priority 0-10 does on a quorum queue of this RabbitMQ version.

    ``none`` before 4.0 (FIFO: the priority is kept on the message, unused); ``two-levels``
    on 4.0-4.2 (5-10 before 0-4); ``levels`` from 4.3 (the broker orders by it). importd
    publishes the same priority everywhere; only its meaning differs, logged at declare.
    """
    if version < (4, 0):
        return "none"
    if version < (4, 3):
        return "two-levels"
    return "levels"


_PRIORITY_NOTES = {
    "none": "quorum queues on this RabbitMQ have no priorities: jobs run in arrival order, "
            "their priority is kept on the message for a later broker",
    "two-levels": "quorum queues on this RabbitMQ have two priorities: 5-10 run before 0-4, "
                  "in arrival order within each",
    "levels": "quorum queues on this RabbitMQ order jobs by priority",
}


def dlq_delivery_limit_advice(version: tuple[int, ...]) -> str | None:
    """What an operator must do so ``failed_tasks`` keeps every dead letter on this broker.

    RabbitMQ 4.0 gives every quorum queue a delivery limit of 20 by default, and ``importd
    dlq``/``replay-dlq`` look at dead letters by fetching and returning them (a delivery each
    time): the 21st look would drop them. importd cannot declare ``x-delivery-limit: -1``
    itself (3.x refuses it, and a declare differing by version would make hosts on mixed
    versions refuse each other's queue), so it names the policy that lifts the limit; a
    policy never makes a declare inequivalent.
    """
    if version < (4, 0):
        return None
    return (f"rabbitmqctl set_policy -p <vhost> importd-failed-tasks '^{DLQ}$' "
            """'{"delivery-limit": -1}' --apply-to quorum_queues""")


@functools.cache
def _log_priority(version: tuple[int, ...]) -> None:
    """Once per broker version and process (the cache is the "once"): say what priorities mean
    on this broker's quorum queues, and what keeps failed_tasks from dropping dead letters on a
    broker that limits deliveries."""
    support = priority_support(version)
    log = logs.get("importd.worker.topology")
    rabbitmq = ".".join(map(str, version))
    (log.warning if support == "none" else log.info)(
        _PRIORITY_NOTES[support], rabbitmq=rabbitmq, priority_support=support)
    advice = dlq_delivery_limit_advice(version)
    if advice:
        log.warning(f"quorum queues on this RabbitMQ limit deliveries to 20 by default; {DLQ} must "
                    "not (importd dlq returns what it lists): set this policy once", rabbitmq=rabbitmq,
                    command=advice)


def declare(connection: Connection, queue_type: str = CLASSIC) -> list[str]:
    """Declare exchanges, queues and bindings; return the queue names. Safe to repeat."""
    names = []
    channel = connection.channel()
    if queue_type == QUORUM:
        _log_priority(server_version(connection))
    try:
        for exchange_name, kind in ((DLX, "direct"), (RETRY_EXCHANGE, "direct")):
            _exchange(exchange_name, kind).declare(channel=channel)
        for spec in QUEUES:
            _exchange(spec.exchange).declare(channel=channel)
        for entity in all_entities(queue_type):
            try:
                entity.bind(channel).declare()
            except (OperationalError, *connection.channel_errors) as exc:
                raise _translate(exc, str(entity.name), queue_type) from exc
            names.append(str(entity.name))
    finally:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - the channel may already be closed by a 406
            pass
    return names


#: Arguments only importd's quorum queues carry: one of them differing means the type differs.
_QUORUM_ONLY = frozenset(quorum_arguments())
#: Arguments quorum queues refuse but importd's classic queues carry.
_CLASSIC_ONLY = frozenset({"x-max-priority"})
_VALUE = re.compile(r"^the value (.*) of type '[^']+'$")


def _value(text: str) -> str:
    """RabbitMQ's "the value 'quorum' of type 'longstr'" as 'quorum'; "none" stays."""
    match = _VALUE.match(text.strip())
    return match.group(1) if match else text.strip()


def _type_differs(arg: str, received: str, current: str, queue_type: str) -> bool:
    """True when the argument RabbitMQ says differs shows the existing queue is the other type.

    RabbitMQ names the first differing argument, rarely x-queue-type itself: a quorum-only
    argument (or x-max-priority, which quorum queues refuse) present on one side only is the sign.
    """
    if arg in _QUORUM_ONLY:
        return (current == "none") == (queue_type == QUORUM)
    return arg in _CLASSIC_ONLY and queue_type == QUORUM and received == "none"


def _translate(exc: Exception, queue: str, queue_type: str = CLASSIC) -> Exception:
    text = str(exc)
    match = _MISMATCH.search(text)
    if match:
        arg, name, received, current = match.groups()
        received, current = _value(received), _value(current)
        if _type_differs(arg, received, current, queue_type):
            other = CLASSIC if queue_type == QUORUM else QUORUM
            return TopologyMismatch(
                f"queue {name!r} exists as a {other} queue ({arg}={current}) but importd declares it "
                f"{queue_type} (IMPORTD_QUEUE_TYPE={queue_type}); a queue's type cannot change in "
                f"place: migrate it, see {MIGRATION_DOC}"
            )
        return TopologyMismatch(
            f"queue {name!r} exists with {arg}={current} but importd declares "
            f"{arg}={received}; delete the queue (or fix its policy) and declare again"
        )
    if "PRECONDITION_FAILED" in text or getattr(exc, "code", None) == 406:
        return TopologyMismatch(f"queue {queue!r} exists with other settings: {text}")
    return exc


@dataclass(frozen=True)
class QueueStatus:
    """One queue as the broker reports it; ``messages`` and ``consumers`` are None when the
    queue does not exist (``error`` says why)."""

    name: str
    messages: int | None
    consumers: int | None
    error: str = ""


def queue_stats(conn: Connection, names: list[str] | None = None) -> list[QueueStatus]:
    """Depth and consumers of importd's queues (all by default), by passive ``queue_declare``:
    it changes nothing and needs no management plugin. The one reading of queue statistics
    (``importd status`` and the metrics both use it)."""
    out = []
    channel = conn.channel()
    for name in names or all_queue_names():
        try:
            ok = channel.queue_declare(name, passive=True)
        except conn.channel_errors as exc:  # 404: the queue does not exist; the channel is closed
            out.append(QueueStatus(name, None, None, f"missing ({getattr(exc, 'reply_text', exc)})"))
            channel = conn.channel()
            continue
        out.append(QueueStatus(name, int(ok.message_count), int(ok.consumer_count)))
    return out
