"""What is deleted from the store once a job is final: its upload, and its reject files."""

from __future__ import annotations

from typing import Any

from importd.config import Settings
from importd.imports.storage.base import BadKey, ObjectNotFound, Store
from importd.imports.storage.choose import from_settings
from importd.imports.storage.source import job_source

#: ``IMPORTD_UPLOAD_RETENTION`` values and the final job states whose object each deletes.
RETENTION: dict[str, frozenset[str]] = {
    "keep": frozenset(),
    "delete-on-success": frozenset({"SUCCESS"}),
    "delete-when-final": frozenset({"SUCCESS", "FAILURE", "CANCELLED"}),
}
#: ``IMPORTD_REJECTS_RETENTION`` values: a job's reject file is kept (``keep``: it is what the
#: user downloads to fix the rows; a lifecycle rule on ``rejects/`` collects it) or deleted
#: whenever the upload retention deletes the job's upload (``with-upload``).
REJECTS_RETENTION = ("keep", "with-upload")
#: The folder of every job's reject files, beside the uploads in the same store.
REJECTS_FOLDER = "rejects/"


def rejects_folder(job_id: str) -> str:
    """Where a job's reject files live in the store: ``rejects/<job id>/`` (one per run that
    published one; all but the one the job row names are removed by the run that superseded
    them, or by retention)."""
    return f"{REJECTS_FOLDER}{job_id}/"


def clear_rejects(store: Store, job_id: str, keep: str = "") -> int:
    """Delete the job's reject files but ``keep``; how many went. Raises what the store raises."""
    gone = 0
    for key in store.keys(rejects_folder(job_id)):
        if key != keep:
            store.delete(key)
            gone += 1
    return gone


def retire(settings: Settings, state: str | None, locator: str | None, log: Any, job_id: str | None = None) -> bool:
    """After a job's own outcome ``state`` is durable, delete its object (and, with
    ``IMPORTD_REJECTS_RETENTION=with-upload``, the reject files of ``job_id``) if the retention
    setting says so; True if the upload was deleted. Called only for outcomes the job reached
    itself (never for one given up on, whose message sits in failed_tasks for a replay). Best
    effort: a store that fails is logged, and the objects stay for a lifecycle rule to collect."""
    states = RETENTION.get(settings.upload_retention)
    if states is None:
        log.warning("unknown IMPORTD_UPLOAD_RETENTION; keeping uploads", value=settings.upload_retention)
        return False
    if state not in states:
        return False
    if job_id and settings.rejects_retention == "with-upload":
        try:
            if clear_rejects(from_settings(settings), job_id):
                log.info("reject files deleted", job_id=job_id, state=state)
        except Exception as exc:  # noqa: BLE001 - as for the upload below
            log.warning("could not delete the job's reject files", job_id=job_id, error=str(exc))
    elif settings.rejects_retention not in REJECTS_RETENTION:
        log.warning("unknown IMPORTD_REJECTS_RETENTION; keeping reject files", value=settings.rejects_retention)
    if not locator:
        return False
    try:
        source = job_source(settings, locator)
        source.store.delete(source.key)
    except (BadKey, ObjectNotFound):
        return False
    except Exception as exc:  # noqa: BLE001 - the job's outcome is recorded; cleanup can wait
        log.warning("could not delete the job's upload", key=locator, error=str(exc))
        return False
    log.info("upload deleted", key=locator, state=state, retention=settings.upload_retention)
    return True
