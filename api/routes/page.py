"""``GET /``: the upload page, one static HTML file with inline JS and CSS (no build, no CDN).

The page sends a file of at least ``IMPORTD_PAGE_PRESIGNED_MIN_BYTES`` straight to an S3 store
in presigned parts (``POST /api/uploads``). This route writes that threshold into the page (0
when the store is a directory, so the page never asks) and adds the store's origin to the
page's Content-Security-Policy ``connect-src``, which otherwise keeps every request the page
makes on the API's own origin: a browser would refuse the PUT before it left.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from api.services import services
from importd import logs
from importd.config import Settings
from importd.imports import storage

log = logs.get("api.page")

#: The page's source.
PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"
#: Where the page's source takes the presigned threshold.
MIN_BYTES_MARK = "__PRESIGNED_MIN_BYTES__"
#: The page's policy: its own inline script and style, requests to its own origin only.
CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"
#: What an origin may look like to be written into the policy (scheme, host, port; nothing else).
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


@lru_cache(maxsize=1)
def _html() -> str:
    return PAGE.read_text()


def direct_to_store(settings: Settings) -> tuple[int, str | None]:
    """(threshold, store origin) for the page: (0, None) when big files cannot go straight to
    the store (off, a directory, or no URL can be signed: credentials missing)."""
    if settings.page_presigned_min_bytes <= 0:
        return 0, None
    try:
        origin = storage.from_settings(settings).presign_origin()
    except Exception as exc:  # noqa: BLE001 - the page still works through the API
        log.warning("presigned uploads unavailable to the page", error=str(exc))
        return 0, None
    if origin is None or not ORIGIN.match(origin):
        return 0, None
    return settings.page_presigned_min_bytes, origin


async def index(request: Request) -> Response:
    min_bytes, origin = await run_in_threadpool(direct_to_store, services(request).settings)
    csp = f"{CSP}; connect-src 'self' {origin}" if origin else CSP
    return HTMLResponse(_html().replace(MIN_BYTES_MARK, str(min_bytes)),
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": csp})
