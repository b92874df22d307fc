"""``GET /``: the upload page, one static HTML file with inline JS and CSS (no build, no CDN)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

#: The page's source.
PAGE = Path(__file__).resolve().parents[1] / "static" / "index.html"


@lru_cache(maxsize=1)
def _html() -> str:
    return PAGE.read_text()


async def index(request: Request) -> Response:
    return HTMLResponse(_html(), headers={"Cache-Control": "no-cache",
                                          "Content-Security-Policy": "default-src 'self'; "
                                          "script-src 'unsafe-inline'; style-src 'unsafe-inline'"})
