"""Memory stays flat: a 1 GB upload to a real uvicorn process keeps its RSS within 50 MB of idle."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from importd.config import Settings
from importd.imports import store
from tests.api.conftest import HEADER
from tests.support.infra import wait_for

#: Size of the upload.
UPLOAD_BYTES = 1024**3
#: Allowed RSS growth over idle while the upload streams through.
MAX_GROWTH_KB = 50 * 1024
ROW = b"123456,Someone Else,42\n"
BLOCK = ROW * (1024 * 1024 // len(ROW))


def body(total: int) -> Iterator[bytes]:
    """``total`` bytes of CSV made on the fly (nothing of this size is ever held by the test)."""
    yield HEADER
    sent = len(HEADER)
    while sent < total:
        chunk = BLOCK[: total - sent]
        sent += len(chunk)
        yield chunk


class GeneratedFile:
    """A read-only file object over :func:`body` (httpx streams a multipart file part from read())."""

    def __init__(self, total: int) -> None:
        self.chunks = body(total)
        self.pending = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.pending) < size:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.pending += chunk
        out, self.pending = (self.pending, b"") if size < 0 else (self.pending[:size], self.pending[size:])
        return out


class RssSampler(threading.Thread):
    """Samples the API's RSS until told to stop; ``failed`` says why it stopped early, if it did."""

    def __init__(self, api: Any) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.peak_kb = 0
        self.samples = 0
        self.running = True
        self.failed: BaseException | None = None

    def run(self) -> None:
        while self.running:
            try:
                self.peak_kb = max(self.peak_kb, self.api.rss_kb())
            except (OSError, AssertionError) as exc:
                self.failed = exc
                return
            self.samples += 1
            time.sleep(0.02)


def settled_rss_kb(api: Any) -> int:
    """The API's RSS once two reads in a row agree (a condition, not a fixed sleep)."""
    last = [api.rss_kb()]

    def settled() -> int | None:
        now = api.rss_kb()
        same, last[0] = now == last[0], now
        return now if same else None

    return int(wait_for(settled, 30, interval=0.1, what="the API's RSS settled after the warm-up upload"))


def send_raw(c: httpx.Client) -> httpx.Response:
    return c.post("/api/upload?table=public.api_people&validate_only=true", content=body(UPLOAD_BYTES),
                  headers={"Content-Type": "text/csv"})


def send_multipart(c: httpx.Client) -> httpx.Response:
    return c.post("/api/upload", data={"table": "public.api_people", "validate_only": "true"},
                  files={"file": ("big.csv", GeneratedFile(UPLOAD_BYTES), "text/csv")})


@pytest.mark.slow
@pytest.mark.parametrize("send", [send_raw, send_multipart], ids=["raw", "multipart"])
def test_a_1gb_upload_keeps_the_api_rss_within_50mb_of_idle(start_api: Any, api_settings: Settings,
                                                             broker: Any, send: Any) -> None:
    with start_api(max_upload_bytes=2 * UPLOAD_BYTES) as api:
        with httpx.Client(base_url=api.url, timeout=300) as c:
            warm = c.post("/api/upload?table=public.api_people", content=b"".join(body(2 * 1024 * 1024)),
                          headers={"Content-Type": "text/csv"})  # first use imports and connects
            assert warm.status_code == 202, warm.text
            idle_kb = settled_rss_kb(api)
            sampler = RssSampler(api)
            sampler.start()
            r = send(c)
            sampled_during, alive_at_response = sampler.samples, sampler.is_alive()
            sampler.running = False
            sampler.join()
        # The peak covers the whole upload: the sampler was still sampling when the response came.
        assert alive_at_response and sampler.failed is None and sampled_during >= 2, (
            alive_at_response, sampler.failed, sampled_during)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        with store.connect(api_settings) as conn:
            rec = store.get_job(conn, job_id)
        assert rec is not None and rec.file_size == UPLOAD_BYTES
        for done in (warm.json()["job_id"], job_id):
            (Path(api_settings.upload_dir) / f"{done}.csv").unlink(missing_ok=True)
    broker.purge_all()
    growth_kb = sampler.peak_kb - idle_kb
    assert growth_kb < MAX_GROWTH_KB, f"RSS grew {growth_kb} kB over idle {idle_kb} kB"
