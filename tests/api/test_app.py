"""The app's frame: health, readiness, JSON errors, auth and the ``importd api`` command."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.requests import Request
from starlette.routing import Route

from api import auth
from api.app import create_app
from importd import subcommand

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"


async def test_healthz_answers_while_the_process_runs(api_client: Any) -> None:
    async with api_client() as c:
        r = await c.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_readyz_is_ready_when_rabbitmq_postgresql_and_redis_answer(api_client: Any) -> None:
    async with api_client() as c:
        r = await c.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"rabbitmq": "ok", "postgresql": "ok", "redis": "ok"}


async def test_readyz_is_503_naming_each_service_that_cannot_be_reached(api_client: Any) -> None:
    async with api_client(broker_url="amqp://guest:guest@127.0.0.1:1//",
                          database_url="postgresql://postgres@127.0.0.1:1/x",
                          redis_url="redis://127.0.0.1:1/0") as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["code"] == "not_ready"
    assert "postgresql" in error["message"] and "rabbitmq" in error["message"] and "redis" in error["message"]


async def test_readyz_names_only_the_service_that_is_down(api_client: Any) -> None:
    async with api_client(redis_url="redis://127.0.0.1:1/0") as c:
        r = await c.get("/readyz")
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "cannot reach redis"


async def test_unknown_route_and_wrong_method_answer_json_errors(api_client: Any) -> None:
    async with api_client() as c:
        missing = await c.get("/nope")
        wrong = await c.delete("/healthz")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


async def test_a_crash_answers_500_json_without_a_traceback(settings: Any) -> None:
    import httpx

    async def boom(request: Request) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    app = create_app(settings)
    app.router.routes.append(Route("/boom", boom))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "internal_error", "message": "internal server error"}}


async def test_api_routes_need_a_bearer_token_when_tokens_are_configured(api_client: Any) -> None:
    async with api_client(api_tokens=f"other,{TOKEN}") as c:
        none = await c.get("/api/jobs")
        wrong = await c.get("/api/jobs", headers={"Authorization": "Bearer nope"})
        ok = await c.post("/api/session", headers={"Authorization": f"Bearer {TOKEN}"})
        page = await c.get("/healthz")
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert ok.status_code == 200 and ok.json()["auth"] is True
    assert page.status_code == 200


async def test_session_cookie_is_httponly_and_authorises_reads_but_not_writes(api_client: Any) -> None:
    async with api_client(api_tokens=TOKEN) as c:
        r = await c.post("/api/session", headers={"Authorization": f"Bearer {TOKEN}"})
        set_cookie = r.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie and "Path=/api" in set_cookie
        assert TOKEN not in set_cookie
        read = await c.get("/api/jobs/nosuchjob")  # cookie sent by the client jar
        write = await c.post("/api/jobs/nosuchjob/cancel")
    assert read.status_code == 404  # got past auth
    assert write.status_code == 401


def test_session_values_expire_and_die_with_their_token() -> None:
    value = auth.issue_session(TOKEN, ttl_s=60, now=1000.0)
    assert auth.check_session(value, [TOKEN], now=1030.0)
    assert not auth.check_session(value, [TOKEN], now=1061.0)
    assert not auth.check_session(value, ["another"], now=1030.0)
    assert not auth.check_session(value.replace(".", ".0", 1), [TOKEN], now=1030.0)
    assert not auth.check_session("garbage", [TOKEN])


async def test_a_tokenless_api_serves_loopback_clients_only(api_client: Any) -> None:
    async with api_client(client_addr="10.1.2.3") as c:
        remote = await c.get("/healthz")
    async with api_client(client_addr="10.1.2.3", api_allow_remote_without_auth=True) as c:
        allowed = await c.get("/healthz")
    assert remote.status_code == 403 and remote.json()["error"]["code"] == "forbidden"
    assert allowed.status_code == 200


def test_importd_api_refuses_a_public_address_without_tokens(api_settings: Any) -> None:
    # a subprocess: importd.cli.main configures logging for the whole process
    import subprocess
    import sys

    from tests.support import infra

    env = infra.env_for(api_settings)
    env.pop("IMPORTD_API_TOKENS", None)
    out = subprocess.run([sys.executable, "-m", "importd", "api", "--host", "0.0.0.0", "--port", "1"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=infra.ROOT)
    assert out.returncode == subcommand.EXIT_CONFIG
    assert "--insecure-no-auth" in out.stderr


def test_importd_api_serves_on_loopback_and_stops_promptly_with_an_sse_client_connected(
        api_settings: Any, tmp_path: Any) -> None:
    import subprocess
    import sys
    import time
    import uuid

    import httpx

    from importd.imports import store
    from tests.api.conftest import free_port
    from tests.support import infra

    with store.connect(api_settings) as conn:
        job_id = store.create_job(conn, store.JobRecord(id=uuid.uuid4().hex, state="STARTED")).id
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "importd", "api", "--port", str(port)],
                            env=infra.env_for(api_settings), stdout=log, stderr=subprocess.STDOUT, cwd=infra.ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        infra.wait_for(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=30,
                       what="importd api answering")
        with httpx.stream("GET", f"{url}/api/jobs/{job_id}/events", timeout=30) as r:
            assert r.status_code == 200
            next(r.iter_lines())
            started = time.monotonic()
            proc.terminate()
            proc.wait(30)
        assert proc.returncode in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
        assert time.monotonic() - started < 25  # bounded by SHUTDOWN_GRACE_S, not by the client
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/upload"), ("GET", "/api/jobs"), ("GET", "/api/tables"), ("GET", "/api/jobs/x"),
    ("GET", "/api/jobs/x/errors"), ("POST", "/api/jobs/x/cancel"), ("GET", "/api/jobs/x/events"),
    ("POST", "/api/session"), ("DELETE", "/api/session"),
])
async def test_every_api_route_is_401_without_a_token(api_client: Any, method: str, path: str) -> None:
    async with api_client(api_tokens=TOKEN) as c:
        r = await c.request(method, path)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


async def test_the_table_list_is_the_allowlist(api_client: Any) -> None:
    async with api_client(tables="public.a, b") as c:
        r = await c.get("/api/tables")
    assert r.json() == {"tables": ["public.a", "b"]}


async def test_openapi_json_is_served_without_auth(api_client: Any) -> None:
    async with api_client(api_tokens=TOKEN) as c:
        r = await c.get("/openapi.json")
        page = await c.get("/")
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")
    assert page.status_code == 200 and "<progress" in page.text
    assert re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//|@import|url\(", page.text) is None  # nothing external


async def test_metrics_are_served_in_prometheus_format(api_client: Any) -> None:
    async with api_client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "importd_database_up 1.0" in r.text


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.0.0.2", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
])
def test_importd_api_knows_which_hosts_are_loopback(host: str, loopback: bool) -> None:
    from api.cli import is_loopback_host

    assert is_loopback_host(host) is loopback
