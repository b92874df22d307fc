"""The dead-letter queue for operators: list, replay and purge what ``failed_tasks`` holds.

Reads importd's own death headers and RabbitMQ's ``x-death``; a replay publishes with confirm
then acks, message by message, and marks each copy with a replay id so the worker reopens its
job exactly once. What each command does and why it is safe to kill: docs/operations.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kombu import Producer

from importd import jsontext
from importd.config import Settings
from importd.errors import PublishError
from importd.subcommand import Subcommand
from importd.worker import messages, topology
from importd.worker.publisher import broker_connection, send

#: Headers importd writes on its own dead letters (removed again on replay): defined once,
#: where the consumer writes them.
IMPORTD_DEAD_HEADERS = messages.DEAD_HEADERS
#: Header prefixes RabbitMQ writes when it dead-letters (removed on replay: a replayed
#: message starts a new life, and importd never counts attempts from them anyway).
RABBIT_DEAD_PREFIXES = messages.RABBIT_DEAD_PREFIXES
#: Header counting how often a message was replayed (kept across replays, for the record).
REPLAYS_HEADER = "x-importd-replays"
#: Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: Longest error text shown in the listing.
ERROR_WIDTH = 60

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class DeadLetter:
    """One message of the DLQ, described from whichever headers it carries."""

    job_id: str
    task: str
    reason: str
    attempts: int
    died_at: datetime | None
    error: str
    exchange: str | None
    routing_key: str | None
    queue: str
    raw: Any = field(repr=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "task": self.task, "reason": self.reason,
                "attempts": self.attempts, "died_at": self.died_at.isoformat() if self.died_at else None,
                "error": self.error, "exchange": self.exchange, "routing_key": self.routing_key,
                "queue": self.queue}


def describe(raw: Any) -> DeadLetter:
    """Describe a message fetched from the DLQ (an ``amqp`` message from ``basic_get``).

    Never raises: a dead letter is often a hostile delivery (a body nested past the recursion
    limit, headers of any type), and one that could not be described would stop ``dlq list``
    and ``replay-dlq`` for every message behind it. What cannot be read is described as
    ``unreadable`` (no original route: a replay skips it, a purge takes it).
    """
    try:
        return _describe(raw)
    except Exception as exc:  # noqa: BLE001 - see above
        props = getattr(raw, "properties", None)
        message_id = _text(props.get("message_id")) if isinstance(props, dict) else ""
        return DeadLetter(message_id or "?", "?", "unreadable", 1, None,
                          _text(f"dead letter not readable: {type(exc).__name__}: {exc}"[:500]), None, None, "", raw)


def _describe(raw: Any) -> DeadLetter:
    headers: dict[str, Any] = dict(raw.headers or {})
    props = raw.properties
    deaths = headers.get("x-death") or []
    death: dict[str, Any] = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    job_id = _text(props.get("message_id")) or _job_id_from_body(raw.body) or "?"
    task = _text(headers.get(messages.TASK_HEADER)) or "?"
    if messages.REASON_HEADER in headers:
        exchange = _text(headers.get(messages.ORIGINAL_EXCHANGE_HEADER))
        routing_key = _text(headers.get(messages.ORIGINAL_ROUTING_KEY_HEADER))
        return DeadLetter(
            job_id, task, _text(headers[messages.REASON_HEADER]),
            _int(headers.get(messages.ATTEMPTS_HEADER), _int(headers.get(messages.ATTEMPT_HEADER), 1)),
            _parse_time(headers.get(messages.DIED_AT_HEADER)), _text(headers.get(messages.ERROR_HEADER)),
            exchange, routing_key, _text(headers.get(messages.ORIGINAL_QUEUE_HEADER)), raw)
    if death:
        keys = death.get("routing-keys") or []
        return DeadLetter(
            job_id, task, _text(death.get("reason")) or "dead-lettered",
            _int(headers.get(messages.ATTEMPT_HEADER), 1), _parse_time(death.get("time")),
            f"dead-lettered by RabbitMQ from {_text(death.get('queue'))!r}",
            _text(death.get("exchange")), _text(keys[0]) if keys else None, _text(death.get("queue")), raw)
    return DeadLetter(job_id, task, "unknown", _int(headers.get(messages.ATTEMPT_HEADER), 1), None,
                      "no dead-letter headers", None, None, "", raw)


def replay_id(dead: DeadLetter) -> str:
    """The id of replaying this death of this message: the same for every replay of one dead
    letter (a replay killed between publish and ack, then run again, makes the same id), new
    for the next death of the job (issue 12 item 3)."""
    death = [dead.job_id, dead.task, dead.reason, dead.attempts,
             dead.died_at.isoformat() if dead.died_at else "", dead.error, dead.queue]
    return hashlib.sha256(json.dumps(death).encode()).hexdigest()[:32]


def replay_headers(headers: dict[str, Any] | None, keep_attempts: bool, replay: str = "") -> dict[str, Any]:
    """Headers of the replayed copy: death records dropped, attempt reset unless kept, the
    replay id (``replay``) set in place of an earlier replay's."""
    out = {k: v for k, v in (headers or {}).items()
           if k not in IMPORTD_DEAD_HEADERS and not k.startswith(RABBIT_DEAD_PREFIXES)}
    if not keep_attempts:
        out[messages.ATTEMPT_HEADER] = 1
    out[REPLAYS_HEADER] = _int(out.get(REPLAYS_HEADER), 0) + 1
    if replay:
        out[messages.REPLAY_HEADER] = replay
    return out


@dataclass(frozen=True)
class Filter:
    """Which dead letters an operation takes; empty fields match everything."""

    jobs: frozenset[str] = frozenset()
    task: str | None = None
    reason: str | None = None
    older_than: timedelta | None = None

    def matches(self, dead: DeadLetter, now: datetime) -> bool:
        if self.jobs and dead.job_id not in self.jobs:
            return False
        if self.task and dead.task != self.task:
            return False
        if self.reason and dead.reason != self.reason:
            return False
        if self.older_than is not None:
            return dead.died_at is not None and now - dead.died_at >= self.older_than
        return True


def scan(settings: Settings, flt: Filter, act: Callable[[DeadLetter], bool] | None,
         limit: int | None = None, rate_per_s: float | None = None) -> Iterator[DeadLetter]:
    """Yield the matching dead letters, oldest first; ``act`` moves one (True: ack it).

    Every message is fetched unacked on one channel; only those ``act`` took are acked, and
    closing the channel returns the rest to the queue in their old order.
    """
    with broker_connection(settings, heartbeat=0) as conn:
        channel = conn.channel()
        try:
            depth = int(channel.queue_declare(topology.DLQ, passive=True).message_count)
            now, taken = datetime.now(UTC), 0
            for _ in range(depth):
                if limit is not None and taken >= limit:
                    break
                raw = channel.basic_get(topology.DLQ, no_ack=False)
                if raw is None:
                    break
                dead = describe(raw)
                if not flt.matches(dead, now):
                    continue
                if act is not None and act(dead):
                    channel.basic_ack(raw.delivery_tag)
                    if rate_per_s:
                        time.sleep(1.0 / rate_per_s)
                taken += 1
                yield dead
        finally:
            channel.close()  # everything fetched and not acked goes back, in order


def replay(settings: Settings, flt: Filter, *, limit: int | None = None, keep_attempts: bool = False,
           dry_run: bool = False, rate_per_s: float | None = None) -> Iterator[tuple[DeadLetter, str]]:
    """Move matching dead letters back where they came from; yield each with what happened.

    The outcome is ``"moved"``, ``"listed"`` (dry run) or ``"skipped: why"`` (left in place).
    """
    with broker_connection(settings, heartbeat=0) as pub_conn:
        producer = Producer(pub_conn.channel())
        outcome = ""

        def move(dead: DeadLetter) -> bool:
            nonlocal outcome, producer
            if dry_run:
                outcome = "listed"
                return False
            if not dead.exchange and not dead.routing_key:
                outcome = "skipped: no original exchange/routing key"
                return False
            raw = dead.raw
            try:
                send(producer, raw.body, exchange=dead.exchange or "", routing_key=dead.routing_key or "",
                     headers=replay_headers(raw.headers, keep_attempts, replay_id(dead)), message_id=dead.job_id,
                     priority=_int(raw.properties.get("priority"), 0))
            except PublishError as exc:  # e.g. its exchange is gone: leave it where it is
                outcome = f"skipped: {exc}"
                producer = Producer(pub_conn.channel())  # a refused publish may have closed the channel
                return False
            outcome = "moved"
            return True  # confirmed: now the DLQ copy may be acked

        for dead in scan(settings, flt, move, limit=limit, rate_per_s=rate_per_s):
            yield dead, outcome


def purge(settings: Settings, flt: Filter, *, limit: int | None = None) -> list[DeadLetter]:
    """Delete matching dead letters for good; return them."""
    return list(scan(settings, flt, lambda _: True, limit=limit))


# -- command line ----------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``2h``, ``7d`` -> timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 2h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", action="append", default=[], metavar="ID",
                        help="only this job id (repeatable)")
    parser.add_argument("--task", help="only this task type, e.g. import.csv")
    parser.add_argument("--reason", help="only this reason, e.g. max-retries, expired, rejected, not-json")
    parser.add_argument("--older-than", type=parse_duration, metavar="AGE",
                        help="only what died at least AGE ago (90s, 30m, 2h, 7d)")
    parser.add_argument("--limit", type=int, help="at most N messages")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _filter(args: argparse.Namespace) -> Filter:
    return Filter(frozenset(args.job), args.task, args.reason, args.older_than)


def _print(dead: DeadLetter, outcome: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**dead.as_dict(), "outcome": outcome}), flush=True)
        return
    died = dead.died_at.strftime("%Y-%m-%dT%H:%M:%SZ") if dead.died_at else "-"
    error = dead.error.replace("\n", " ")
    error = error if len(error) <= ERROR_WIDTH else error[:ERROR_WIDTH - 1] + "…"
    print(f"{outcome:<7} {dead.job_id}  task={dead.task} reason={dead.reason} attempts={dead.attempts} "
          f"died={died} from={dead.exchange or '?'}/{dead.routing_key or '?'}  error={error}", flush=True)


def _replay_add_arguments(parser: argparse.ArgumentParser) -> None:
    _add_filters(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would move, move nothing")
    parser.add_argument("--keep-attempts", action="store_true",
                        help="keep the attempt count (default: reset to 1)")
    parser.add_argument("--rate", type=float, metavar="N", help="move at most N messages per second")


def _replay_run(args: argparse.Namespace, settings: Settings) -> int:
    moved = skipped = 0
    for dead, outcome in replay(settings, _filter(args), limit=args.limit, keep_attempts=args.keep_attempts,
                                dry_run=args.dry_run, rate_per_s=args.rate):
        _print(dead, outcome.split(":")[0], args.json)
        moved += outcome == "moved"
        skipped += outcome.startswith("skipped")
    verb = "would move" if args.dry_run else "moved"
    count = moved if not args.dry_run else moved + skipped
    print(f"{verb} {count} message(s); {skipped} skipped", file=sys.stderr)
    return EXIT_FAILED if skipped else EXIT_OK


def _dlq_add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dlq_command", required=True)
    _add_filters(sub.add_parser("list", help="list dead letters (like replay-dlq --dry-run)"))
    p = sub.add_parser("purge", help="delete dead letters for good")
    _add_filters(p)
    p.add_argument("--yes", action="store_true", help="do it without asking")


def _dlq_run(args: argparse.Namespace, settings: Settings) -> int:
    flt = _filter(args)
    if args.dlq_command == "list":
        count = 0
        for dead, _ in replay(settings, flt, limit=args.limit, dry_run=True):
            _print(dead, "dead", args.json)
            count += 1
        print(f"{count} message(s)", file=sys.stderr)
        return EXIT_OK
    if not args.yes:
        count = sum(1 for _ in replay(settings, flt, limit=args.limit, dry_run=True))
        if not sys.stdin.isatty():
            print(f"importd dlq purge: would delete {count} message(s); pass --yes to do it", file=sys.stderr)
            return EXIT_USAGE
        answer = input(f"delete {count} message(s) from {topology.DLQ} for good? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return EXIT_FAILED
    gone = purge(settings, flt, limit=args.limit)
    for dead in gone:
        _print(dead, "purged", args.json)
    print(f"purged {len(gone)} message(s)", file=sys.stderr)
    return EXIT_OK


#: ``importd replay-dlq``.
REPLAY = Subcommand(_replay_add_arguments, _replay_run)
#: ``importd dlq list|purge``.
DLQ = Subcommand(_dlq_add_arguments, _dlq_run)


# -- header helpers ------------------------------------------------------------------------


def _text(value: Any) -> str:
    """A header value as text any UTF-8 writer takes (py-amqp hands a lone surrogate through)."""
    if value is None:
        return ""
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _int(value: Any, default: int) -> int:
    try:
        return int(_text(value)) if value is not None else default
    except ValueError:
        return default


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if value:
        try:
            parsed = datetime.fromisoformat(_text(value))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _job_id_from_body(body: bytes) -> str | None:
    """The body's ``job_id`` when it is a job id (a hostile body may be anything)."""
    try:
        data = jsontext.loads(body)
    except jsontext.JsonError:
        return None
    job_id = data.get("job_id") if isinstance(data, dict) else None
    return job_id if isinstance(job_id, str) and messages.JOB_ID.match(job_id) else None
