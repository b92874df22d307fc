"""The JSON shape of a job, built from the Redis hash (live) or the PostgreSQL row (durable).

Both sources give the same keys; ``source`` says which one answered. Values Redis does not
hold are null there.
"""

from __future__ import annotations

from typing import Any

#: Keys of every job object the API returns.
JOB_KEYS = ("id", "state", "table", "mode", "priority", "attempts", "rows_imported", "rows_rejected",
            "bytes", "total_bytes", "percent", "error", "cancel_requested", "created_at", "started_at",
            "finished_at", "updated_at")


def links(job_id: str) -> dict[str, str]:
    base = f"/api/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "errors": f"{base}/errors", "cancel": f"{base}/cancel"}


def _int(value: str | None) -> int | None:
    try:
        return None if value in (None, "") else int(float(value))  # type: ignore[arg-type]
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return None if value in (None, "") else float(value)  # type: ignore[arg-type]
    except ValueError:
        return None


def from_redis(job_id: str, h: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(JOB_KEYS)
    out.update({
        "id": job_id,
        "state": h.get("state"),
        "table": h.get("table"),
        "attempts": _int(h.get("attempt")),
        "rows_imported": _int(h.get("rows")) or 0,
        "rows_rejected": _int(h.get("rejected")) or 0,
        "bytes": _int(h.get("bytes")),
        "total_bytes": _int(h.get("total_bytes")),
        "percent": _float(h.get("percent")),
        "error": h.get("error") or None,
        "started_at": h.get("started_at"),
        "finished_at": h.get("finished_at"),
        "updated_at": h.get("updated_at"),
        "source": "redis",
        "links": links(job_id),
    })
    return out


def from_record(rec: Any) -> dict[str, Any]:
    """From an ``importd.imports.store.JobRecord``."""
    d = rec.to_dict()
    out: dict[str, Any] = {key: d.get(key) for key in JOB_KEYS}
    out.update({
        "table": d.get("target_table"),
        "total_bytes": d.get("file_size"),
        "bytes": d.get("file_size") if d.get("state") == "SUCCESS" else None,
        "percent": 100.0 if d.get("state") == "SUCCESS" else None,
        "source": "database",
        "links": links(d["id"]),
    })
    return out
