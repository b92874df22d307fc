"""The stored file of one job (:class:`Source`), found from what its job row names."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from importd.config import Settings
from importd.imports.storage.base import BadKey, ObjectNotFound, Store
from importd.imports.storage.choose import from_settings
from importd.imports.storage.file import FileStore


@dataclass(frozen=True)
class Source:
    """The stored file of one job: where it is and how big it is now."""

    store: Store
    key: str
    size: int

    @contextmanager
    def open(self, offset: int = 0) -> Iterator[BinaryIO]:
        f = self.store.open(self.key, offset, self.size)
        try:
            yield f
        finally:
            f.close()

    def read_range(self, offset: int, length: int) -> bytes:
        return self.store.read_range(self.key, offset, length)


def job_source(settings: Settings, locator: str | None) -> Source:
    """The object a job row names: a key in the store, or (jobs queued before keys) an absolute
    path that must resolve inside the file store's directory. BadKey / ObjectNotFound carry the
    job's error text."""
    store = from_settings(settings)
    if not locator:
        raise BadKey(f"file path {locator!r} is outside the upload directory")
    key = locator
    if os.path.isabs(locator):
        if not isinstance(store, FileStore):
            raise BadKey(f"file path {locator!r} is outside the upload directory")
        try:
            key = store.key_of(locator)
        except BadKey:
            raise BadKey(f"file path {locator!r} is outside the upload directory") from None
    try:
        return Source(store, key, store.size(key))
    except BadKey:
        raise BadKey(f"file path {locator!r} is outside the upload directory") from None
    except ObjectNotFound:
        raise ObjectNotFound(f"file not found: {locator}") from None
