"""API fixtures: the app in-process (httpx ASGITransport, lifespan run) or as a real uvicorn
subprocess (for streaming, disconnects, RSS and the browser), both on the run's isolated
vhost, database and Redis prefix."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from importd.config import Settings
from importd.imports import store
from tests.support import infra

#: Tables the API tests import into (no primary key: uploads may repeat rows).
TABLES = "public.api_people"
PEOPLE_DDL = "CREATE TABLE IF NOT EXISTS api_people (id bigint, name text NOT NULL, age integer CHECK (age >= 0))"
HEADER = b"id,name,age\n"


@pytest.fixture(scope="session")
def api_settings(settings: Settings) -> Settings:
    """The run's settings, migrated, with the API's test table allowlisted and a 1 s keepalive."""
    store.migrate(settings)
    with store.connect(settings) as conn:
        conn.execute(PEOPLE_DDL)
    return replace(settings, tables=TABLES, rate_limit="none", sse_keepalive_s=1.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def _client(settings: Settings, client_addr: str = "127.0.0.1", headers: dict[str, str] | None = None,
                  **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(replace(settings, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(client_addr, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://importd.test",
                                     headers=headers or {}, timeout=30) as client:
            yield client


@pytest.fixture
def api_client(api_settings: Settings) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """Factory: ``async with api_client(max_upload_bytes=10) as c:`` (overrides settings)."""
    def make(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return _client(api_settings, **overrides)
    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiProcess:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@contextmanager
def api_process(settings: Settings, tmp: Path, access_log: bool = False, **env: str) -> Iterator[ApiProcess]:
    """``uvicorn api.app:app`` as a real subprocess on a free loopback port."""
    port = free_port()
    log_path = tmp / f"api-{port}.log"
    log = log_path.open("ab")
    environ = infra.env_for(settings, IMPORTD_MAX_UPLOAD_BYTES=str(settings.max_upload_bytes),
                            IMPORTD_SSE_KEEPALIVE_S=str(settings.sse_keepalive_s),
                            IMPORTD_API_TOKENS=settings.api_tokens, **env)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
                             "--port", str(port), *([] if access_log else ["--no-access-log"])],
                            env=environ, stdout=log, stderr=subprocess.STDOUT, cwd=infra.ROOT)
    api = ApiProcess(proc, f"http://127.0.0.1:{port}", log_path)
    try:
        infra.wait_for(lambda: proc.poll() is not None or httpx.get(f"{api.url}/healthz", timeout=1).status_code == 200,
                       timeout=30, what="api answering /healthz")
        assert proc.poll() is None, api.output()
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def start_api(api_settings: Settings, tmp_path: Path) -> Callable[..., Any]:
    """Factory: ``with start_api(max_upload_bytes=...) as api:`` runs uvicorn on the run's services."""
    def start(env: dict[str, str] | None = None, access_log: bool = False, **overrides: Any) -> Any:
        return api_process(replace(api_settings, **overrides), tmp_path, access_log, **(env or {}))
    return start
