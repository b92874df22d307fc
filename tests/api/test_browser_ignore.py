"""Ignoring columns on the page, in headless Chromium against a real API and worker: a
spreadsheet export with a Notes column the table lacks and a trailing delimiter. The preview
suggests "(no column)" for the empty trailing name and greys that column; Notes is left to the
user (flagged, not dropped silently); choosing "(no column)" for it greys it at once, sends
null, and the import loads the other fields. A screenshot lands in artifacts/."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx

from importd.config import Settings
from importd.imports import store
from tests.api.test_browser import ARTIFACTS, driver, pytestmark  # noqa: F401 - fixture and skip mark


def test_the_page_ignores_a_column_set_to_no_column_greys_it_and_imports_the_rest(
        driver: Any, start_api: Any, start_worker: Any, api_settings: Settings, broker: Any,  # noqa: F811
        tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    ARTIFACTS.mkdir(exist_ok=True)
    base = uuid.uuid4().int % 10**12 * 10
    notes = f"Notes {uuid.uuid4().hex[:6]}"  # a header no earlier run saved a mapping for
    path = tmp_path / "export.csv"
    path.write_bytes(f'id,name,{notes},age,\r\n{base + 1},Ann,"call back, maybe",30,\r\n'
                     f"{base + 2},Bob,x,40,\r\n".encode())
    with start_worker("-Q", "import_queue", "-c", "1", IMPORTD_TABLES="public.api_people",
                      IMPORTD_RATE_LIMIT="none") as worker, start_api() as api:
        worker.wait_consuming()
        driver.set_window_size(1000, 1000)
        driver.get(api.url + "/")
        wait = WebDriverWait(driver, 60)
        find = driver.find_element
        find(By.ID, "file").send_keys(str(path))
        find(By.ID, "table").clear()
        find(By.ID, "table").send_keys("public.api_people")
        find(By.ID, "preview").click()
        wait.until(lambda d: d.find_element(By.ID, "detected").text.startswith("Delimiter"))
        assert Select(find(By.ID, "map-4")).first_selected_option.text == "(no column)"  # suggested
        assert Select(find(By.ID, "map-2")).first_selected_option.get_attribute("value") == "?"  # left to the user
        assert notes in find(By.ID, "problems").text and "empty name" not in find(By.ID, "problems").text

        def greyed() -> set[int]:
            heads = driver.find_elements(By.CSS_SELECTOR, "#grid thead th")
            return {i - 1 for i, e in enumerate(heads) if "ignored" in (e.get_attribute("class") or "")}

        assert greyed() == {4}
        Select(find(By.ID, "map-2")).select_by_visible_text("(no column)")
        assert greyed() == {2, 4}
        cells = driver.find_elements(By.CSS_SELECTOR, "#grid tbody tr:first-child td")
        assert "ignored" in (cells[2].get_attribute("class") or "")
        find(By.ID, "apply-mapping").click()
        wait.until(lambda d: d.find_element(By.ID, "problems").text == "")
        assert greyed() == {2, 4} and not driver.find_elements(By.CSS_SELECTOR, "td.cell-bad")
        driver.save_screenshot(str(ARTIFACTS / "ignore-columns-preview.png"))
        saved = httpx.get(api.url + "/api/mappings", params={"table": "public.api_people"}, timeout=10).json()
        assert [m["columns"] for m in saved["mappings"] if notes in m["header"]] == [
            {"id": "id", "name": "name", notes: None, "age": "age", "": None}]

        find(By.ID, "upload").click()
        wait.until(lambda d: d.find_element(By.ID, "outcome").text.startswith("Imported"))
        assert find(By.ID, "outcome").text == "Imported 2 rows."
    with store.connect(api_settings) as conn:
        got = conn.execute("SELECT id, name, age FROM api_people WHERE id IN (%s, %s) ORDER BY id",
                           (base + 1, base + 2)).fetchall()
    assert got == [(base + 1, "Ann", 30), (base + 2, "Bob", 40)]
