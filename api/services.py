"""The long-lived clients the API shares between requests, opened and closed by the lifespan.

PostgreSQL: a psycopg_pool of autocommit connections (store functions are synchronous and run
in the threadpool). Redis: one ``redis.asyncio`` pool for short reads; every SSE stream opens
its own connection (see :mod:`api.sse`). RabbitMQ: :class:`importd.worker.publisher.Publisher`,
blocking, called from the threadpool. None of them connects at start-up, so the API starts
while a service is down and ``/readyz`` says which one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from psycopg_pool import ConnectionPool
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from importd import logs
from importd.config import Settings
from importd.imports.progress import Progress
from importd.worker.publisher import Publisher

#: Seconds a Redis call from the API may take before Redis counts as down.
REDIS_TIMEOUT_S = 0.5
#: Seconds one publish attempt may spend connecting to RabbitMQ from a request.
PUBLISH_CONNECT_S = 2.0
#: Connections in the shared Redis pool (SSE streams have their own).
REDIS_POOL_SIZE = 10
#: Seconds a request waits for a free PostgreSQL connection.
DB_ACQUIRE_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    db: ConnectionPool
    redis: aioredis.Redis
    publisher: Publisher
    progress: Progress  # synchronous and best effort: used from the threadpool

    async def with_db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args)`` on a pooled connection in the threadpool."""
        def call() -> T:
            with self.db.connection(timeout=DB_ACQUIRE_TIMEOUT_S) as conn:
                return fn(conn, *args, **kwargs)
        return await run_in_threadpool(call)


def redis_client(settings: Settings, **kwargs: Any) -> aioredis.Redis:
    kwargs.setdefault("socket_timeout", REDIS_TIMEOUT_S)
    kwargs.setdefault("socket_connect_timeout", REDIS_TIMEOUT_S)
    return aioredis.Redis.from_url(settings.redis_url, decode_responses=True, **kwargs)


def shared_redis(settings: Settings) -> aioredis.Redis:
    """The bounded pool for short reads (a burst of requests does not grow it past the bound)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=REDIS_POOL_SIZE, timeout=REDIS_TIMEOUT_S, decode_responses=True,
        socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    return aioredis.Redis(connection_pool=pool)


async def open_services(settings: Settings) -> Services:
    db = ConnectionPool(settings.database_url, min_size=1, max_size=settings.api_db_pool_size, open=False,
                        kwargs={"autocommit": True, "application_name": "importd-api", "connect_timeout": 5},
                        name="importd-api")
    db.open(wait=False)
    # A request should fail fast when RabbitMQ is down (503, the client retries) rather than
    # sit through kombu's reconnect loop (connect_timeout per try, ~1 min with the publisher's
    # own retries).
    publisher = await run_in_threadpool(Publisher, settings, PUBLISH_CONNECT_S)
    progress = Progress(settings)
    return Services(settings, db, shared_redis(settings), publisher, progress)


async def close_services(services: Services) -> None:
    await services.redis.aclose(close_connection_pool=True)
    await run_in_threadpool(services.publisher.close)
    await run_in_threadpool(services.db.close, 5.0)
    services.progress.close()


def lifespan_for(settings: Settings, configure_logging: bool = False) -> Callable[[Starlette], Any]:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if configure_logging:
            logs.configure(settings.log_level)
        app.state.services = await open_services(settings)
        try:
            yield
        finally:
            await close_services(app.state.services)
    return lifespan


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
