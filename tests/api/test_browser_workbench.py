"""The workbench path in headless Chromium against a real API and a real worker, with a messy
file: choose it -> preview grid with a flagged cell -> fix a mapping -> dry run -> grouped
errors -> import with max_errors -> live progress -> download the rejects -> upload the fixed
rejects -> the table holds every row once. A screenshot of each step lands in artifacts/."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import httpx

from importd.config import Settings
from importd.imports import store
from tests.api.conftest import TABLES
from tests.api.test_browser import ARTIFACTS, driver, pytestmark  # noqa: F401 - fixture and skip mark

FIRST = 700_000
GOOD = 40


def _messy() -> bytes:
    """A spreadsheet export: CRLF, a header that does not say 'name', bad ages, a missing name."""
    lines = ["Id,Full Name,Age"]
    for i in range(FIRST, FIRST + GOOD):
        lines.append(f'{i},"Person, {i}",{i % 90}')
    lines += [f"{FIRST + GOOD},Bad Age,forty", f"{FIRST + GOOD + 1},,33", f"{FIRST + GOOD + 2},Neg,-5",
              f"{FIRST + GOOD + 3},Also Bad,1.5"]
    return ("\r\n".join(lines) + "\r\n").encode()


def _fix(data: bytes) -> bytes:
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(rows[0])
    for ident, name, age in rows[1:]:
        writer.writerow([ident, name or "Named Later", age if age.isdigit() else "30"])
    return out.getvalue().encode()


def test_the_workbench_walks_a_messy_file_from_preview_to_every_row_loaded_once(
        driver: Any, start_api: Any, start_worker: Any, api_settings: Settings, broker: Any,  # noqa: F811
        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ARTIFACTS.mkdir(exist_ok=True)
    messy = tmp_path / "messy.csv"
    messy.write_bytes(_messy())
    total = GOOD + 4

    def shot(name: str, element: str = "preview-box") -> None:
        driver.execute_script("document.getElementById(arguments[0]).scrollIntoView()", element)
        driver.save_screenshot(str(ARTIFACTS / f"workbench-{name}.png"))

    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_TABLES=TABLES, IMPORTD_RATE_LIMIT="none") as worker, \
            start_api() as api:
        worker.wait_consuming()
        driver.set_window_size(1100, 1400)
        driver.get(api.url + "/")
        wait = WebDriverWait(driver, 60)
        find = driver.find_element
        find(By.ID, "file").send_keys(str(messy))
        find(By.ID, "table").clear()
        find(By.ID, "table").send_keys("public.api_people")
        find(By.ID, "preview").click()
        wait.until(lambda d: d.find_element(By.ID, "detected").text.startswith("Delimiter"))
        assert "unknown header columns" in find(By.ID, "problems").text
        flagged = driver.find_elements(By.CSS_SELECTOR, "td.cell-bad")
        assert any("integer" in (c.get_attribute("title") or "") for c in flagged)
        shot("1-preview")

        Select(find(By.ID, "map-1")).select_by_value("name")
        find(By.ID, "apply-mapping").click()
        wait.until(lambda d: d.find_element(By.ID, "problems").text == "")
        assert "not-null" in " ".join(c.get_attribute("title") or "" for c in
                                      driver.find_elements(By.CSS_SELECTOR, "td.cell-bad"))
        shot("2-mapping")

        find(By.ID, "dry-run").click()
        wait.until(lambda d: d.find_element(By.ID, "outcome").text.startswith("Dry run"))
        wait.until(lambda d: d.find_element(By.ID, "groups").text != "")
        groups = find(By.ID, "groups").text
        assert "age: invalid input syntax for type integer - 2 rows, e.g. lines" in groups, groups
        shot("3-dry-run", "job")

        find(By.ID, "max_errors").clear()
        find(By.ID, "max_errors").send_keys("10")
        find(By.ID, "upload").click()
        wait.until(lambda d: d.find_element(By.ID, "outcome").text.startswith("Imported"))
        assert find(By.ID, "outcome").text == f"Imported {GOOD:,} rows, 4 rejected."
        assert float(find(By.ID, "bar").get_attribute("value") or 0) == 100.0
        shot("4-imported", "job")
        link = find(By.ID, "rejects-link")
        assert link.is_displayed()
        rejects = httpx.get(link.get_attribute("href") or "", timeout=10)
        assert rejects.status_code == 200
        assert rejects.content.startswith(b"Id,Full Name,Age\r\n") and rejects.content.count(b"\r\n") == 5

        fixed = tmp_path / "fixed.csv"
        fixed.write_bytes(_fix(rejects.content))
        find(By.ID, "file").send_keys(str(fixed))
        find(By.ID, "preview").click()
        wait.until(lambda d: "remembered" in d.find_element(By.ID, "detected").text)
        assert not driver.find_elements(By.CSS_SELECTOR, "td.cell-bad")
        shot("5-fixed-preview")
        find(By.ID, "max_errors").clear()
        find(By.ID, "max_errors").send_keys("0")
        find(By.ID, "upload").click()
        wait.until(lambda d: d.find_element(By.ID, "outcome").text.startswith("Imported"))
        assert find(By.ID, "outcome").text == "Imported 4 rows.", find(By.ID, "outcome").text
        shot("6-fixed-imported", "job")
        driver.set_window_size(360, 800)
        shot("7-narrow")
    with store.connect(api_settings) as conn:
        count, distinct = conn.execute("SELECT count(*), count(DISTINCT id) FROM api_people WHERE id BETWEEN %s AND %s",
                                       (FIRST, FIRST + total - 1)).fetchone()  # type: ignore[misc]
    assert count == distinct == total
