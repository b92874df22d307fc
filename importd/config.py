"""Settings, read once from ``IMPORTD_*`` environment variables.

Each setting is documented here and nowhere else; README's table is generated from
:data:`FIELDS`-style docstrings by hand, so keep both in step. Units are in the names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PREFIX = "IMPORTD_"
#: The queue types ``IMPORTD_QUEUE_TYPE`` accepts.
QUEUE_TYPES = ("classic", "quorum")


@dataclass(frozen=True)
class Settings:
    """Every knob importd has, with defaults that work against services on localhost.

    Environment variable names are the upper-cased field names with the ``IMPORTD_`` prefix,
    e.g. ``IMPORTD_BROKER_URL``.
    """

    #: AMQP URL of RabbitMQ (vhost in the path); the nodes of a cluster as several URLs separated by
    #: ``;`` (``amqp://u:p@a//;amqp://u:p@b//``): clients try them in order and fail over to a live one.
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    #: PostgreSQL conninfo or URL.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/importd"
    #: Redis URL for progress, events and the rate limit.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: Prefix of every Redis key importd writes (lets several deployments share one Redis).
    redis_prefix: str = "importd"
    #: Type of every importd queue (work, retry, failed_tasks): ``classic`` (one node) or
    #: ``quorum`` (replicated on a cluster; see docs/operations.md). A queue declared with the
    #: other type stops ``importd declare`` and the worker (exit 78) until it is migrated.
    queue_type: str = "classic"
    #: AMQP heartbeat interval in seconds (0 disables it).
    heartbeat_s: int = 30
    #: Worker child processes.
    concurrency: int = 4
    #: Unacked deliveries per child (the design says 1; more is not supported by the loop).
    prefetch: int = 1
    #: A child is replaced after this many jobs.
    max_tasks_per_child: int = 1000
    #: Queues a worker consumes, comma separated.
    queues: str = "import_queue,bulk_ops_queue,default"
    #: Seconds a SIGTERMed worker waits for running jobs before leaving them to redelivery.
    shutdown_grace_s: float = 3600.0
    #: Where uploads live when ``storage_url`` is empty (keys must resolve inside it); with an
    #: s3:// store, where the API spools a multipart form's file part before sending it on.
    upload_dir: Path = Path("/var/lib/importd/uploads")
    #: Where uploads live: ``file:///DIR`` (one host) or ``s3://BUCKET/PREFIX`` (any S3-compatible
    #: store; credentials and region from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and
    #: boto3's credential chain). Empty: ``file://`` + ``upload_dir``.
    storage_url: str = ""
    #: Endpoint of a non-AWS S3 store (MinIO, Ceph RGW: ``http://127.0.0.1:9000``); empty for AWS.
    s3_endpoint_url: str = ""
    #: What the worker does with a job's uploaded object once the job ends: ``keep`` (never
    #: deleted by importd; clean up with a lifecycle rule or cron), ``delete-on-success`` (deleted
    #: once SUCCESS is durable), ``delete-when-final`` (also after a FAILURE of the file's own fault
    #: or a cancel). An object whose job failed for a reason that can pass (its message retried,
    #: or dead-lettered to failed_tasks, where a replay needs it) is always kept.
    upload_retention: str = "keep"
    #: What happens to a job's reject file (its rejected records, in the upload store under
    #: ``rejects/<job id>/``) once the job ends: ``keep`` (never deleted by importd but when a
    #: later run of the job replaces it; clean up with a lifecycle rule on ``rejects/`` or cron)
    #: or ``with-upload`` (deleted whenever ``upload_retention`` deletes the job's upload).
    rejects_retention: str = "keep"
    #: Upload size limit in bytes for the API (413 past it).
    max_upload_bytes: int = 10 * 1024**3
    #: Bytes of CSV sent to PostgreSQL per COPY batch (one savepoint, one checkpoint each).
    import_batch_bytes: int = 8 * 1024 * 1024
    #: COPY streams (connections) of a resumable import of more than one batch; batches load
    #: at once and commit in file order (atomic imports always use one).
    import_streams: int = 2
    #: Longest CSV line (record) accepted, in bytes; a longer one is a rejected row.
    max_line_bytes: int = 4 * 1024 * 1024
    #: Longest CSV field accepted, in bytes; a longer one is a rejected row.
    max_field_bytes: int = 1024 * 1024
    #: Tables jobs may import into, comma separated (schema-qualified or not).
    tables: str = ""
    #: Comma separated modules imported at worker start, each registering extra task types.
    task_modules: str = ""
    #: Consumer extensions every worker child attaches, comma separated ``module:function``
    #: paths; one that fails to load stops the worker at start (exit 78).
    worker_extensions: str = "importd.ops.control:attach,importd.ops.events:attach,importd.ops.metrics:attach"
    #: Override every task's rate limit ("10/m", "none" to lift it); empty keeps the table's.
    rate_limit: str = ""
    #: Comma separated bearer tokens for the API; empty disables auth.
    api_tokens: str = ""
    #: Log level name.
    log_level: str = "info"
    #: Publisher connection pool size in the API.
    publisher_pool_size: int = 10
    #: Worker: serve Prometheus metrics on this TCP port (0: off; ``--metrics-port`` overrides).
    metrics_port: int = 0
    #: PostgreSQL connections the API keeps (psycopg_pool max size).
    api_db_pool_size: int = 10
    #: Seconds between SSE keepalive comments (also how often a quiet stream re-checks the job).
    sse_keepalive_s: float = 15.0
    #: SSE streams one API process serves at once (each holds a Redis connection); one more
    #: is answered 429 with Retry-After.
    sse_max_clients: int = 500
    #: Bytes of one multipart part's headers (all its header lines together; also the longest
    #: single line); more is answered 431.
    max_part_header_bytes: int = 8192
    #: Lifetime in seconds of the page's session cookie (exchanged for a bearer token; EventSource
    #: and links cannot send headers).
    api_session_ttl_s: int = 900
    #: Files of at least this many bytes go from the page straight to an S3 store (presigned
    #: multipart, parts PUT by the browser; the bucket needs a CORS rule, docs/operations.md);
    #: smaller ones, and every file on a ``file://`` store, through ``POST /api/upload``. 0: never.
    page_presigned_min_bytes: int = 64 * 1024 * 1024
    #: Serve clients that are not on loopback although no API tokens are set (``importd api
    #: --insecure-no-auth``); off, a tokenless API answers 403 to every non-loopback client.
    api_allow_remote_without_auth: bool = False

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from the environment; explicit overrides win (used by the CLI)."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _convert(f.type, raw, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        if self.queue_type not in QUEUE_TYPES:
            raise ValueError(f"{PREFIX}QUEUE_TYPE={self.queue_type!r} is not one of {', '.join(QUEUE_TYPES)}")

    @property
    def queue_list(self) -> list[str]:
        return split_list(self.queues)

    @property
    def table_list(self) -> list[str]:
        return split_list(self.tables)

    @property
    def token_list(self) -> list[str]:
        return split_list(self.api_tokens)

    @property
    def task_module_list(self) -> list[str]:
        return split_list(self.task_modules)

    @property
    def worker_extension_list(self) -> list[str]:
        return split_list(self.worker_extensions)


def split_list(text: str) -> list[str]:
    """The items of a comma separated setting or option (``-Q a,b``), blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _convert(type_name: Any, raw: str, name: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "bool":
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw

