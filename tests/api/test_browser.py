"""The upload page in headless Chromium (Debian's, driven by selenium) against a real API
process and a real worker: choose a file and a table, upload, watch the bar reach 100 %.

The API runs with a token, so the page's auth path (token box, bearer fetches, session cookie
for EventSource) is what the test goes through. The screenshot lands in ``artifacts/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from importd.config import Settings
from importd.imports import store
from tests.api.conftest import HEADER, TABLES
from tests.support.infra import ROOT

#: Flags for a quiet, sandbox-free headless Chromium in a container.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1100,900")
ARTIFACTS = ROOT / "artifacts"
ROWS = 5000
TOKEN = "browser-test-token"

pytestmark = pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                                reason="chromium/chromedriver missing: run scripts/browser.sh (make test does)")


@pytest.fixture
def driver() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    d = webdriver.Chrome(service=service, options=options)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


def test_the_page_uploads_a_csv_and_its_progress_bar_reaches_100_percent_with_the_row_count(
        driver: Any, start_api: Any, start_worker: Any, api_settings: Settings, broker: Any,
        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    csv_path = tmp_path / "people.csv"
    csv_path.write_bytes(HEADER + b"".join(b"%d,Person %d,%d\n" % (i, i, i % 90) for i in range(ROWS)))
    with store.connect(api_settings) as conn:
        before = conn.execute("SELECT count(*) FROM api_people").fetchone()[0]  # type: ignore[index]
    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none") as worker, \
            start_api(api_tokens=TOKEN, access_log=True) as api:
        worker.wait_consuming()
        driver.get(api.url + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "auth").is_displayed())
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "save-token").click()
        wait.until(lambda d: not d.find_element(By.ID, "auth").is_displayed())
        driver.find_element(By.ID, "file").send_keys(str(csv_path))
        table = driver.find_element(By.ID, "table")
        table.clear()
        table.send_keys("public.api_people")
        driver.find_element(By.ID, "upload").click()
        wait.until(lambda d: d.find_element(By.ID, "outcome").text != "")
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "browser-upload.png"))
        outcome = driver.find_element(By.ID, "outcome").text
        bar = driver.find_element(By.ID, "bar").get_attribute("value")
        rows = driver.find_element(By.ID, "rows").text
        recent = driver.find_element(By.ID, "jobs").text
        rate = driver.find_element(By.ID, "rate").text
        jar = driver.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]  # path /api: not the page's
        cookies = [c["value"] for c in jar]
        log = api.output()
    assert "/api/jobs/" in log and "/events" in log  # the access log is on ...
    assert TOKEN not in log and not any(value in log for value in cookies)  # ... and holds no secret
    assert cookies and all(c["httpOnly"] and c["path"] == "/api" for c in jar)
    assert outcome == f"Imported {ROWS:,} rows.", outcome
    assert float(bar or 0) == 100.0
    assert rows == f"{ROWS:,}"
    assert rate.endswith("rows/s")
    assert "SUCCESS" in recent
    assert (ARTIFACTS / "browser-upload.png").stat().st_size > 0
    with store.connect(api_settings) as conn:
        after = conn.execute("SELECT count(*) FROM api_people").fetchone()[0]  # type: ignore[index]
    assert after - before == ROWS


def test_the_page_shows_rejected_rows_and_links_the_error_report_without_auth(
        driver: Any, start_api: Any, start_worker: Any, api_settings: Settings, broker: Any,
        tmp_path: Path) -> None:
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    csv_path = tmp_path / "some-bad.csv"
    csv_path.write_bytes(HEADER + b"1,Ann,30\n2,Bob,-5\n3,Cid,notanumber\n4,Dee,40\n")
    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none") as worker, \
            start_api() as api:
        worker.wait_consuming()
        driver.get(api.url + "/")
        wait = WebDriverWait(driver, 60)
        assert not driver.find_element(By.ID, "auth").is_displayed()
        driver.find_element(By.ID, "file").send_keys(str(csv_path))
        table = driver.find_element(By.ID, "table")
        table.clear()
        table.send_keys("public.api_people")
        errors = driver.find_element(By.ID, "max_errors")
        errors.clear()
        errors.send_keys("5")
        driver.find_element(By.ID, "upload").click()
        wait.until(lambda d: d.find_element(By.ID, "outcome").text != "")
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "browser-rejected.png"))
        outcome = driver.find_element(By.ID, "outcome").text
        link = driver.find_element(By.ID, "errors-link")
        assert link.is_displayed()
        report = httpx.get(link.get_attribute("href") or "", timeout=10)
    assert outcome == "Imported 2 rows, 2 rejected.", outcome
    assert report.status_code == 200
    lines = report.text.splitlines()
    assert lines[0] == "line_number,column,value,reason" and len(lines) == 3
    assert lines[1].startswith("3,") and lines[2].startswith("4,")
