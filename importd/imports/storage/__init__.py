"""Where uploads live: one interface (:class:`Store`), two backends, chosen by ``IMPORTD_STORAGE_URL``.

- ``base``: the interface, what it returns (:class:`StoredObject`, :class:`Part`), its errors;
- ``file``: ``file:///var/lib/importd/uploads`` (:class:`FileStore`, the default, one host);
- ``s3``: ``s3://BUCKET/PREFIX`` (:class:`S3Store`, any S3-compatible store, boto3);
- ``choose``: the store of a process's settings;
- ``source``: the stored file of one job (:class:`Source`);
- ``retention``: what a final job's upload and reject files become.

Writes stream, hash as they go and leave nothing behind when they fail; reads are seekable
binary streams from any offset. docs/storage.md describes the whole. Callers import this
package and use the names below.
"""

from importd.imports.storage.base import (
    CHUNK_BYTES,
    PART_BYTES,
    PRESIGN_EXPIRES_S,
    BadKey,
    ObjectNotFound,
    Part,
    StorageError,
    Store,
    StoredObject,
    composite_sha256,
)
from importd.imports.storage.choose import from_settings, open_url, storage_url
from importd.imports.storage.file import FileStore
from importd.imports.storage.retention import (
    REJECTS_FOLDER,
    REJECTS_RETENTION,
    RETENTION,
    clear_rejects,
    rejects_folder,
    retire,
)
from importd.imports.storage.s3 import HEAD_BYTES, READ_ATTEMPTS, S3Store
from importd.imports.storage.source import Source, job_source

__all__ = [
    "CHUNK_BYTES", "HEAD_BYTES", "PART_BYTES", "PRESIGN_EXPIRES_S", "READ_ATTEMPTS", "REJECTS_FOLDER",
    "REJECTS_RETENTION", "RETENTION", "BadKey", "FileStore", "ObjectNotFound", "Part", "S3Store", "Source",
    "StorageError", "Store", "StoredObject", "clear_rejects", "composite_sha256", "from_settings", "job_source",
    "open_url", "rejects_folder", "retire", "storage_url",
]
