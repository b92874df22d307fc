"""The page's big-file path in headless Chromium: a real API and worker on an S3 store (moto's
server), with :class:`tests.support.s3proxy.StoreProxy` as the store's endpoint so that what
the browser PUTs is seen outside the browser and the API, and a part can be made to fail.

A file above the page's threshold (1 MiB here, ``IMPORTD_PAGE_PRESIGNED_MIN_BYTES``) goes in
8 MiB parts straight to the store (the API's access log shows no ``POST /api/upload``), the
upload line reaches 100 %, and the job reaches SUCCESS with every row. A part whose connection
drops once is sent again, and only that part; so is a part the store acknowledged but lacks at
complete. A store that refuses every part (an expired URL) is shown as such, and nothing is
queued or left in the store.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from importd.config import Settings
from importd.imports import storage, store
from tests.api.conftest import HEADER, TABLES
from tests.api.test_browser import ARTIFACTS, driver, pytestmark  # noqa: F401 - fixture and skip mark
from tests.support.s3 import S3Server, aws_env, s3_server  # noqa: F401 - fixture
from tests.support.s3proxy import StoreProxy

#: The page's threshold in these tests (the default is 64 MiB).
MIN_BYTES = 1024 * 1024
#: The CORS rule docs/operations.md tells users to set (any origin here: the API's port is free).
CORS_RULE = {"AllowedOrigins": ["*"], "AllowedMethods": ["PUT"], "AllowedHeaders": ["*"],
             "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 3000}


def big_csv(path: Path) -> int:
    """A valid api_people CSV of two full parts and a short third one; its row count."""
    row = b"%d,Person %d " + b"x" * 80 + b",%d\n"
    rows, size, i = [HEADER], len(HEADER), 0
    while size < 2 * storage.PART_BYTES + 300_000:
        line = row % (i, i, i % 90)
        rows.append(line)
        size += len(line)
        i += 1
    path.write_bytes(b"".join(rows))
    return i


@pytest.fixture
def s3_page(s3_server: S3Server, tmp_path: Path) -> Iterator[tuple[StoreProxy, dict[str, str]]]:  # noqa: F811
    """The proxy in front of the test S3 server, and the environment of an API and a worker
    that keep uploads under a prefix of their own there."""
    server = s3_server
    server.store().client.put_bucket_cors(Bucket=server.bucket, CORSConfiguration={"CORSRules": [CORS_RULE]})
    target = urlparse(server.endpoint)
    proxy = StoreProxy(target.hostname or "127.0.0.1", server.port)
    env = {"IMPORTD_STORAGE_URL": server.url(f"page-{uuid.uuid4().hex[:8]}"), "IMPORTD_S3_ENDPOINT_URL": proxy.endpoint,
           "IMPORTD_PAGE_PRESIGNED_MIN_BYTES": str(MIN_BYTES), **aws_env()}
    try:
        yield proxy, env
    finally:
        proxy.close()


def _jobs(settings: Settings) -> int:
    with store.connect(settings) as conn:
        return int(conn.execute("SELECT count(*) FROM importd.jobs").fetchone()[0])  # type: ignore[index]


def _people(settings: Settings) -> int:
    with store.connect(settings) as conn:
        return int(conn.execute("SELECT count(*) FROM api_people").fetchone()[0])  # type: ignore[index]


def _upload(driver: Any, url: str, csv_path: Path) -> dict[str, str]:  # noqa: F811
    """Open the page, choose the file and the table, import; what the page shows at the end."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    driver.find_element(By.ID, "file").send_keys(str(csv_path))
    table = driver.find_element(By.ID, "table")
    table.clear()
    table.send_keys("public.api_people")
    driver.find_element(By.ID, "upload").click()
    WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "outcome").text != "")
    return {name: driver.find_element(By.ID, name).text for name in ("outcome", "sent", "job-id", "rows")}


@pytest.mark.parametrize("fault", [None, ("dropped", 2), ("lost", 3)],
                         ids=["clean", "part-2-dropped-once", "part-3-lost-once"])
def test_a_big_file_goes_straight_to_the_store_in_parts_and_its_job_loads_every_row(
        driver: Any, start_api: Any, start_worker: Any, api_settings: Settings, broker: Any,  # noqa: F811
        s3_page: tuple[StoreProxy, dict[str, str]], tmp_path: Path, fault: tuple[str, int] | None) -> None:
    """dropped: the part's connection is reset halfway, the page sends that part again; lost:
    the store acknowledges the part but lacks it, complete says so (upload_incomplete) and the
    page sends the parts the store lists as missing, i.e. that one."""
    proxy, env = s3_page
    csv_path = tmp_path / "big.csv"
    rows = big_csv(csv_path)
    size = csv_path.stat().st_size
    if fault:
        (proxy.drop_once if fault[0] == "dropped" else proxy.lose_once).add(fault[1])
    before = _people(api_settings)
    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none",
                      **env) as worker, start_api(env=env, access_log=True) as api:
        worker.wait_consuming()
        shown = _upload(driver, api.url, csv_path)
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / f"browser-presigned-{fault[0] if fault else 'clean'}.png"))
        bar = driver.find_element("id", "bar").get_attribute("value")
        log = api.output()
    assert shown["outcome"] == f"Imported {rows:,} rows.", shown
    assert float(bar or 0) == 100.0
    # The bytes went to the store, part by part, and not through the API.
    part = storage.PART_BYTES
    assert proxy.stored() == {1: part, 2: part, 3: size - 2 * part}
    assert not re.search(r'"POST /api/upload(\?| )', log), log
    assert f"POST /api/uploads/{shown['job-id']}/complete" in log
    # Progress reached 100 %; a part that failed was sent again, and no other part.
    assert re.fullmatch(r"Sent (\S+) MB of \1 MB \(100%\) straight to the store in 3 parts" +
                        (", 1 resent" if fault else ""), shown["sent"]), shown["sent"]
    assert [(p.outcome, p.number) for p in proxy.puts if p.outcome != "stored"] == ([fault] if fault else [])
    assert proxy.attempts() == {1: 1, 2: 1, 3: 1} | ({fault[1]: 2} if fault else {})
    if fault and fault[0] == "lost":
        assert f"POST /api/uploads/{shown['job-id']}/complete HTTP/1.1\" 400" in log  # upload_incomplete
    # The job is the upload's, loaded every row, and nothing is left open in the store.
    with store.connect(api_settings) as conn:
        rec = store.get_job(conn, shown["job-id"])
    assert rec is not None and (rec.state, rec.file_size, rec.rows_imported) == ("SUCCESS", size, rows)
    assert _people(api_settings) - before == rows
    assert storage.open_url(env["IMPORTD_STORAGE_URL"], proxy.endpoint).open_multiparts() == []


def test_a_store_that_refuses_the_parts_is_shown_and_nothing_is_queued_or_left_in_the_store(
        driver: Any, start_api: Any, api_settings: Settings, broker: Any,  # noqa: F811
        s3_page: tuple[StoreProxy, dict[str, str]], tmp_path: Path) -> None:
    proxy, env = s3_page
    proxy.refuse = True
    csv_path = tmp_path / "big.csv"
    big_csv(csv_path)
    jobs = _jobs(api_settings)
    with start_api(env=env, access_log=True) as api:
        shown = _upload(driver, api.url, csv_path)
        log = api.output()
    assert re.fullmatch(r"The upload store refused part [123] \(HTTP 403: Request has expired\)\. "
                        r"Nothing was queued\.", shown["outcome"]), shown["outcome"]
    assert shown["job-id"] == ""
    assert {p.outcome for p in proxy.puts} == {"refused"}
    assert "/complete" not in log and re.search(r'"DELETE /api/uploads/[0-9a-f]{32} HTTP/1.1" 204', log), log
    upload = storage.open_url(env["IMPORTD_STORAGE_URL"], proxy.endpoint)
    assert (upload.keys(), upload.open_multiparts()) == ([], [])
    assert _jobs(api_settings) == jobs
    assert broker.depth("import_queue") == 0
