"""Choosing the upload store of a process from ``IMPORTD_STORAGE_URL``."""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urlparse

from importd.config import Settings
from importd.imports.storage.base import Store
from importd.imports.storage.file import FileStore
from importd.imports.storage.s3 import S3Store, make_client


def storage_url(settings: Settings) -> str:
    """``IMPORTD_STORAGE_URL``, or ``file://`` + ``IMPORTD_UPLOAD_DIR`` when it is empty."""
    return settings.storage_url or f"file://{settings.upload_dir}"


def from_settings(settings: Settings) -> Store:
    """The store of these settings: the same object for every call with the same URL and
    endpoint in one process (:func:`_opened`)."""
    return _opened(storage_url(settings), settings.s3_endpoint_url)


@functools.cache
def _opened(url: str, endpoint_url: str) -> Store:
    """A cache, not wiring: the store is a function of its URL and endpoint alone, nothing is
    registered into it, and keeping it keeps a boto3 client's connection pool (thread-safe)
    from one job or request to the next."""
    return open_url(url, endpoint_url)


def open_url(url: str, endpoint_url: str = "") -> Store:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return FileStore(Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"IMPORTD_STORAGE_URL={url!r} names no bucket")
        return S3Store(parsed.netloc, parsed.path, make_client(endpoint_url))
    raise ValueError(f"IMPORTD_STORAGE_URL={url!r}: use file:///DIR or s3://BUCKET/PREFIX")
