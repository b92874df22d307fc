"""The control channel: ``importd ping`` and ``importd inspect active`` over the broker.

Each worker child consumes an exclusive queue bound to the fanout :data:`CONTROL_EXCHANGE` on
its own connection, so it answers from the thread that owns the connection even while a long
import runs. Replies are unconfirmed and transient. Usage: docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

import amqp
from kombu import Connection, Exchange, Message, Producer, Queue
from kombu import Consumer as KombuConsumer

from importd import logs
from importd.config import Settings
from importd.subcommand import Subcommand
from importd.worker.publisher import broker_connection

if TYPE_CHECKING:
    from importd.worker.consumer import Consumer

#: Fanout exchange every worker child listens on.
CONTROL_EXCHANGE = "importd.control"
#: Seconds a request may wait in a child's queue before it is stale (the client is gone).
REQUEST_TTL_MS = 10_000
#: Default seconds ``ping``/``inspect`` wait for answers.
DEFAULT_TIMEOUT_S = 1.0
#: Exit codes.
EXIT_OK, EXIT_NO_ANSWER = 0, 1


def exchange() -> Exchange:
    return Exchange(CONTROL_EXCHANGE, "fanout", durable=True, auto_delete=False)


def node_name() -> str:
    """``importd@HOST/PID`` of the worker: the supervisor's pid in a child, else our own."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None and parent.pid else os.getpid()
    return f"importd@{socket.gethostname()}/{pid}"


def publish_unconfirmed(channel: Any, body: bytes, *, exchange: str, routing_key: str,
                        mandatory: bool = False, **properties: Any) -> None:
    """Publish without waiting for the broker's confirm (replies, events: worth nothing late).

    Every importd connection has ``confirm_publish``, and py-amqp then swaps each channel's
    ``basic_publish`` for ``basic_publish_confirm``; the class's own public
    ``amqp.Channel.basic_publish`` is the plain publish, called here unbound (checked with
    py-amqp 5.2-5.4). No private attribute is touched.
    """
    message = amqp.Message(body, content_encoding="binary", **properties)
    amqp.Channel.basic_publish(channel, message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)


# -- worker side ----------------------------------------------------------------------------


def attach(consumer: Consumer, connection: Connection) -> None:
    """Consumer extension: answer control requests on ``connection`` (run after each connect)."""
    channel = connection.channel()
    name = node_name()
    queue = Queue(f"{CONTROL_EXCHANGE}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}",
                  exchange(), exclusive=True, auto_delete=True, durable=False,
                  queue_arguments={"x-message-ttl": REQUEST_TTL_MS})
    log = logs.get("importd.ops.control")

    def on_message(message: Message) -> None:
        props = message.properties
        try:
            request = json.loads(message.body)
            reply = answer(consumer, request, name)
        except Exception as exc:  # noqa: BLE001 - a bad request must never hurt the loop
            log.warning("bad control request", error=str(exc))
            return
        reply_to = props.get("reply_to")
        if reply is None or not reply_to:
            return
        publish_unconfirmed(channel, json.dumps(reply).encode(), exchange="", routing_key=reply_to,
                            correlation_id=props.get("correlation_id"), delivery_mode=1,
                            content_type="application/json")

    kombu_consumer = KombuConsumer(channel, queues=[queue], on_message=on_message, no_ack=True)
    kombu_consumer.consume()


def answer(consumer: Consumer, request: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The reply to one request (None: a command this worker does not know)."""
    base = {"worker": name, "pid": os.getpid(), "hostname": socket.gethostname()}
    command = request.get("command")
    if command == "ping":
        return {**base, "ok": "pong"}
    if command == "inspect-active":
        return {**base, "active": active_jobs(consumer)}
    return None


def active_jobs(consumer: Consumer) -> list[dict[str, Any]]:
    """What the child runs now (read in the owner thread, which is the one that sets it)."""
    ctx = consumer.current
    if ctx is None:
        return []
    return [{"job_id": ctx.job.job_id, "task": ctx.spec.name, "queue": ctx.queue,
             "attempt": ctx.job.attempt, "elapsed_s": round(time.monotonic() - ctx.started, 3),
             "pid": os.getpid()}]


# -- client side ----------------------------------------------------------------------------


def broadcast(settings: Settings, command: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict[str, Any]]:
    """Send ``command`` to every worker child; return every reply received within the timeout."""
    replies: list[dict[str, Any]] = []
    correlation_id = uuid.uuid4().hex
    with broker_connection(settings, heartbeat=0) as conn:
        channel = conn.channel()
        exchange()(channel).declare()
        reply_queue = Queue(f"importd.reply.{correlation_id}", exclusive=True, auto_delete=True, durable=False)

        def on_reply(message: Message) -> None:
            if message.properties.get("correlation_id") == correlation_id:
                replies.append(json.loads(message.body))

        with KombuConsumer(channel, queues=[reply_queue], on_message=on_reply, no_ack=True):
            Producer(channel).publish(json.dumps({"command": command}).encode(), exchange=CONTROL_EXCHANGE,
                                      routing_key="", reply_to=reply_queue.name, correlation_id=correlation_id,
                                      delivery_mode=1, content_type="application/json",
                                      content_encoding="binary", serializer=None, retry=False)
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    conn.drain_events(timeout=left)
                except TimeoutError:
                    pass
    return replies


def by_worker(replies: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Group the children's replies by worker name, sorted."""
    out: dict[str, list[dict[str, Any]]] = {}
    for reply in replies:
        out.setdefault(str(reply.get("worker")), []).append(reply)
    return dict(sorted(out.items()))


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help=f"seconds to wait for answers (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--json", action="store_true", help="print the answers as JSON")


def _ping_run(args: argparse.Namespace, settings: Settings) -> int:
    workers = by_worker(broadcast(settings, "ping", args.timeout))
    if args.json:
        print(json.dumps({name: {"ok": "pong", "children": sorted(r["pid"] for r in rs)}
                          for name, rs in workers.items()}))
    else:
        for name in workers:
            print(f"-> {name}: OK pong")
    if not workers:
        print("Error: no worker answered", file=sys.stderr)
        return EXIT_NO_ANSWER
    return EXIT_OK


def _inspect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=["active"], help="active: the jobs running now")
    _common_arguments(parser)


def _inspect_run(args: argparse.Namespace, settings: Settings) -> int:
    workers = by_worker(broadcast(settings, "inspect-active", args.timeout))
    active = {name: [job for r in rs for job in r.get("active", [])] for name, rs in workers.items()}
    if args.json:
        print(json.dumps(active))
    for name, jobs in active.items() if not args.json else ():
        print(f"-> {name}: {len(jobs)} active" if jobs else f"-> {name}: empty")
        for job in jobs:
            print(f"    * {job['job_id']} task={job['task']} queue={job['queue']} attempt={job['attempt']} "
                  f"elapsed={job['elapsed_s']:.1f}s child={job['pid']}")
    if not workers:
        print("Error: no worker answered", file=sys.stderr)
        return EXIT_NO_ANSWER
    return EXIT_OK


#: ``importd ping``.
PING = Subcommand(_common_arguments, _ping_run)
#: ``importd inspect active``.
INSPECT = Subcommand(_inspect_arguments, _inspect_run)
