"""The Starlette application: ``uvicorn api.app:app`` or ``importd api``.

Thin on purpose: a routes list, a lifespan holding the pools (:mod:`api.services`), auth as
pure ASGI middleware (:mod:`api.auth`), one JSON error shape (:mod:`api.errors`), and
``/metrics`` from :mod:`importd.ops.metrics` (outside ``/api``: public like ``/healthz``, so
loopback-only when no tokens are set).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from api import errors, openapi, sse
from api.auth import AuthMiddleware
from api.routes import dlq, health, jobs, mappings, page, preview, rejects, session, upload, uploads
from api.services import lifespan_for
from importd.config import Settings
from importd.ops import metrics

ROUTES = [
    Route("/", page.index, methods=["GET"]),
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/openapi.json", openapi.schema, methods=["GET"]),
    Route("/api/session", session.create_session, methods=["POST"]),
    Route("/api/session", session.delete_session, methods=["DELETE"]),
    Route("/api/upload", upload.upload_csv, methods=["POST"]),
    Route("/api/preview", preview.preview_csv, methods=["POST"]),
    Route("/api/mappings", mappings.list_mappings, methods=["GET"]),
    Route("/api/mappings", mappings.put_mapping, methods=["PUT"]),
    Route("/api/dlq", dlq.list_dead_letters, methods=["GET"]),
    Route("/api/dlq/replay", dlq.replay_dead_letters, methods=["POST"]),
    Route("/api/uploads", uploads.create_upload, methods=["POST"]),
    Route("/api/uploads/{upload_id}", uploads.upload_status, methods=["GET"]),
    Route("/api/uploads/{upload_id}", uploads.abort_upload, methods=["DELETE"]),
    Route("/api/uploads/{upload_id}/complete", uploads.complete_upload, methods=["POST"]),
    Route("/api/tables", jobs.list_tables, methods=["GET"]),
    Route("/api/jobs", jobs.list_jobs, methods=["GET"]),
    Route("/api/jobs/{job_id}", jobs.get_job, methods=["GET"]),
    Route("/api/jobs/{job_id}/errors", jobs.job_errors, methods=["GET"]),
    Route("/api/jobs/{job_id}/rejects.csv", rejects.job_rejects_csv, methods=["GET"]),
    Route("/api/jobs/{job_id}/cancel", jobs.cancel_job, methods=["POST"]),
    Route("/api/jobs/{job_id}/events", sse.job_events, methods=["GET"]),
]


def create_app(settings: Settings | None = None, configure_logging: bool = False) -> Starlette:
    """The app; ``configure_logging`` sets up structlog when it starts (the ``uvicorn`` entry)."""
    settings = settings or Settings.from_env()
    return Starlette(
        routes=[*ROUTES, metrics.route(settings)],
        middleware=[Middleware(AuthMiddleware, settings=settings)],
        exception_handlers=errors.HANDLERS,
        lifespan=lifespan_for(settings, configure_logging),
    )


def _from_env() -> Starlette:
    """``uvicorn api.app:app``: settings from the environment; logging set up at start, not at
    import, so importing this module (tests, tools) changes nothing global."""
    return create_app(Settings.from_env(), configure_logging=True)


app = _from_env()
