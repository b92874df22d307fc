"""``GET /``: the page learns from the API whether big files may go straight to the store (the
threshold written into it) and its Content-Security-Policy lets it PUT there, and only there."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.s3 import S3Server, s3_server  # noqa: F401 - fixture

pytestmark = pytest.mark.anyio


def _threshold(html: str) -> int:
    found = re.search(r'<meta name="importd-presigned-min-bytes" content="(\d+)">', html)
    assert found, "the page carries no threshold"
    return int(found.group(1))


async def test_on_a_file_store_every_file_goes_through_the_api_and_the_page_may_only_call_it(
        api_client: Any) -> None:
    async with api_client(page_presigned_min_bytes=1024) as c:
        r = await c.get("/")
    assert r.status_code == 200 and _threshold(r.text) == 0
    assert "connect-src" not in r.headers["content-security-policy"]  # default-src 'self' holds


@pytest.mark.parametrize("min_bytes", [1024, 0])
async def test_on_an_s3_store_big_files_go_straight_to_it_and_the_policy_allows_its_origin(
        api_client: Any, s3_server: S3Server, tmp_path: Path, min_bytes: int) -> None:  # noqa: F811
    overrides = {"upload_dir": tmp_path, "storage_url": s3_server.url(f"page-{uuid.uuid4().hex[:8]}"),
                 "s3_endpoint_url": s3_server.endpoint, "page_presigned_min_bytes": min_bytes}
    async with api_client(**overrides) as c:
        r = await c.get("/")
    policy = r.headers["content-security-policy"]
    assert _threshold(r.text) == min_bytes
    if min_bytes:
        assert policy.endswith(f"; connect-src 'self' {s3_server.endpoint}")
    else:
        assert "connect-src" not in policy
