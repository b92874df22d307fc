"""The task registry: task name -> settings (data) and handler.

Settings mirror the ``task_annotations`` of the Celery design importd replaces; handlers are
named by dotted path and loaded on first use, so the registry can be read (by the API, by
``importd status``) without importing the import engine. Tests and users register their own task types with
:func:`register`, or list modules in ``IMPORTD_TASK_MODULES`` for the worker to import.

The table is declared data, like Celery's or Dramatiq's task registry: it is written only by
:func:`register` when a task module is imported (before a worker child takes its first job),
and a worker's settings are applied where it is read (:func:`rate_limit_of`), never by
rewriting it.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: A handler takes a :class:`~importd.worker.context.JobContext` (typed ``Any`` here: the
#: context names this module's TaskSpec, and the registry must not import it back).
Handler = Callable[[Any], object]
Hook = Callable[[Any, BaseException], None]


@dataclass(frozen=True)
class TaskSpec:
    """Settings of one task type.

    Parameters: ``name`` (the message header value, e.g. ``import.csv``); ``queue`` it is
    published to; ``handler``, a ``"module:function"`` path or a callable taking a
    :class:`~importd.worker.context.JobContext`; ``rate_limit`` like ``"10/m"`` (None: unlimited,
    shared by all workers through Redis); ``soft_time_limit_s`` (the job gets
    :class:`~importd.errors.SoftTimeLimitExceeded`, default 3300); ``hard_time_limit_s``
    (the child is killed, default 3600); ``max_retries`` (default 3); ``default_priority``;
    ``on_retry`` / ``on_give_up`` hooks called in the job thread before the message moves.
    """

    name: str
    queue: str
    handler: str | Handler
    rate_limit: str | None = None
    soft_time_limit_s: float = 3300.0
    hard_time_limit_s: float = 3600.0
    max_retries: int = 3
    default_priority: int = 0
    on_retry: str | Hook | None = None
    on_give_up: str | Hook | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def resolve(self, attr: str = "handler") -> Callable[..., object] | None:
        target = getattr(self, attr)
        if target is None or callable(target):
            return target
        module, _, name = str(target).partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


#: The built-in task types, as in the Celery design importd replaces.
BUILTIN: tuple[TaskSpec, ...] = (
    TaskSpec(
        name="import.csv",
        queue="import_queue",
        handler="importd.imports.handlers:run_import_task",
        rate_limit="10/m",
        soft_time_limit_s=3300,
        hard_time_limit_s=3600,
        max_retries=3,
        default_priority=5,
        on_retry="importd.imports.handlers:on_import_retry",
        on_give_up="importd.imports.handlers:on_import_give_up",
    ),
    TaskSpec(
        name="bulk.operations",
        queue="bulk_ops_queue",
        handler="importd.imports.handlers:run_bulk_task",
        soft_time_limit_s=3300,
        hard_time_limit_s=3600,
        max_retries=3,
    ),
)

_lock = threading.Lock()
_registry: dict[str, TaskSpec] = {spec.name: spec for spec in BUILTIN}


def register(spec: TaskSpec) -> TaskSpec:
    """Add or replace a task type."""
    with _lock:
        _registry[spec.name] = spec
    return spec


def get(name: str) -> TaskSpec | None:
    return _registry.get(name)


def all_tasks() -> list[TaskSpec]:
    return list(_registry.values())


def rate_limit_of(spec: TaskSpec, override: str) -> str | None:
    """The rate limit a worker applies to ``spec``: its own, unless ``override``
    (``IMPORTD_RATE_LIMIT``) names one for every task ("none", "0" or "off" lift every limit).
    Read from the worker's settings at each job, so the table itself is never rewritten."""
    if not override:
        return spec.rate_limit
    return None if override.lower() in ("none", "0", "off") else override


def load_modules(modules: list[str]) -> None:
    """Import modules that register task types (``IMPORTD_TASK_MODULES``)."""
    for module in modules:
        importlib.import_module(module)
