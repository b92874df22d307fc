"""``POST /api/session``: trade the bearer token for the page's session cookie (see api.auth)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import auth
from api.services import services


async def create_session(request: Request) -> Response:
    """The middleware already checked the bearer token (a cookie cannot reach here: POST)."""
    settings = services(request).settings
    if not settings.token_list:
        return JSONResponse({"auth": False})
    token = auth.bearer_token(request.scope["headers"])
    assert token is not None
    ttl = settings.api_session_ttl_s
    response = JSONResponse({"auth": True, "expires_in": ttl})
    response.set_cookie(auth.COOKIE, auth.issue_session(token, ttl), max_age=ttl, path="/api", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


async def delete_session(request: Request) -> Response:
    response = Response(status_code=204)
    response.delete_cookie(auth.COOKIE, path="/api")
    return response
