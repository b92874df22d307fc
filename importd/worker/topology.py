"""The broker topology as data, and the one function that declares it.

Everything importd uses on RabbitMQ is listed in :data:`QUEUES` and derived from it: the
dead-letter exchange and queue, the delay (retry) queues, the keys. Declaring is idempotent;
a queue that already exists with other arguments raises :class:`TopologyMismatch` naming the
queue and the argument, instead of a crash loop on 406 PRECONDITION_FAILED.

``failed_tasks`` is bound to the direct exchange ``dlx`` once per ``<source>.failed`` key:
the Celery design's ``*.failed`` would be a literal key on a direct exchange, not a wildcard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kombu import Connection, Exchange, Queue, binding
from kombu.exceptions import OperationalError

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

    def arguments(self) -> dict[str, object]:
        args: dict[str, object] = {
            "x-dead-letter-exchange": DLX,
            "x-dead-letter-routing-key": self.failed_key,
        }
        if self.ttl_ms is not None:
            args["x-message-ttl"] = self.ttl_ms
        if self.max_priority is not None:
            args["x-max-priority"] = self.max_priority
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


def dlq_entity() -> Queue:
    return Queue(
        DLQ,
        bindings=[binding(_exchange(DLX), routing_key=q.failed_key) for q in QUEUES],
        durable=True,
        auto_delete=False,
        queue_arguments={"x-message-ttl": DLQ_TTL_MS},
    )


def work_queue_entity(spec: QueueSpec) -> Queue:
    return Queue(
        spec.name,
        _exchange(spec.exchange),
        routing_key=spec.routing_key,
        durable=True,
        auto_delete=False,
        queue_arguments=spec.arguments(),
    )


def retry_queue_entity(spec: QueueSpec, step: int) -> Queue:
    """A delay queue: no consumers; expired messages go back to the work exchange and key."""
    name = retry_queue_name(spec.name, step)
    return Queue(
        name,
        _exchange(RETRY_EXCHANGE),
        routing_key=name,
        durable=True,
        auto_delete=False,
        queue_arguments={
            "x-message-ttl": retry.step_ttl_ms(step),
            "x-dead-letter-exchange": spec.exchange,
            "x-dead-letter-routing-key": spec.routing_key,
        },
    )


def all_entities() -> list[Queue]:
    """Every queue in declaration order: dead-letter targets before what points at them."""
    entities = [dlq_entity()]
    entities += [work_queue_entity(spec) for spec in QUEUES]
    entities += [retry_queue_entity(spec, s) for spec in QUEUES for s in range(1, retry.STEPS + 1)]
    return entities


def all_queue_names() -> list[str]:
    return [str(q.name) for q in all_entities()]


_MISMATCH = re.compile(r"inequivalent arg '([^']+)' for queue '([^']+)'.*?received (.*?) but current is (.*)$")


def declare(connection: Connection) -> list[str]:
    """Declare exchanges, queues and bindings; return the queue names. Safe to repeat."""
    names = []
    channel = connection.channel()
    try:
        for exchange_name, kind in ((DLX, "direct"), (RETRY_EXCHANGE, "direct")):
            _exchange(exchange_name, kind).declare(channel=channel)
        for spec in QUEUES:
            _exchange(spec.exchange).declare(channel=channel)
        for entity in all_entities():
            try:
                entity.bind(channel).declare()
            except (OperationalError, *connection.channel_errors) as exc:
                raise _translate(exc, str(entity.name)) from exc
            names.append(str(entity.name))
    finally:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - the channel may already be closed by a 406
            pass
    return names


def _translate(exc: Exception, queue: str) -> Exception:
    text = str(exc)
    match = _MISMATCH.search(text)
    if match:
        arg, name, received, current = match.groups()
        return TopologyMismatch(
            f"queue {name!r} exists with {arg}={current.strip()} but importd declares "
            f"{arg}={received.strip()}; delete the queue (or fix its policy) and declare again"
        )
    if "PRECONDITION_FAILED" in text or getattr(exc, "code", None) == 406:
        return TopologyMismatch(f"queue {queue!r} exists with other settings: {text}")
    return exc
