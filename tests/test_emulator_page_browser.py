"""The emulator's read-only page, loaded in a real headless Chromium after a real pipeline run.

Drives Debian's `/usr/bin/chromium` through its matching `/usr/bin/chromedriver` with
Selenium (no browser download). Outside CI the test skips when either is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from target_databox.emulator import Emulator
from tests.support import record, run_target, schema, state

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
)


def require(problem: str | None) -> None:
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem} (CI installs chromium and chromium-driver; see .ci/run)")
    pytest.skip(problem)


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require("selenium is not installed (pip install -e '.[test]')")
    for path in (CHROMIUM, CHROMEDRIVER):
        require(
            None
            if shutil.which(path)
            else f"{path} not found (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_page_shows_the_rows_a_pipeline_just_sent(
    browser: Any, emulator: Emulator, config: dict[str, Any], tmp_path: Any
) -> None:
    from selenium.webdriver.common.by import By

    properties = {
        "order_id": {"type": "integer"},
        "customer": {"type": "string"},
        "total": {"type": "number"},
        "paid": {"type": "boolean"},
        "shipping": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    orders = [
        {
            "order_id": 1,
            "customer": "Ana <script>",
            "total": 12.5,
            "paid": True,
            "shipping": {"city": "Zagreb"},
        },
        {"order_id": 2, "customer": "Bo", "total": 7, "paid": False, "shipping": {"city": "Wien"}},
        {
            "order_id": 3,
            "customer": "Čedo",
            "total": 99.99,
            "paid": True,
            "shipping": {"city": "München"},
        },
    ]
    run = run_target(
        {**config, "data_source_name": "Browser check"},
        [
            schema("orders", properties, ["order_id"]),
            *(record("orders", **o) for o in orders),
            state({"bookmarks": {"orders": {"order_id": 3}}}),
        ],
    )
    assert run.returncode == 0, run.stderr
    assert run.states == [{"bookmarks": {"orders": {"order_id": 3}}}]

    browser.get(emulator.url + "/")
    assert browser.title == "Databox emulator"
    source = browser.find_element(
        By.CSS_SELECTOR, 'section.data-source[data-title="Browser check"]'
    )
    dataset = source.find_element(By.CSS_SELECTOR, 'section.dataset[data-title="orders"]')
    assert dataset.find_element(By.CSS_SELECTOR, ".row-count").text == "3"

    table = dataset.find_element(By.CSS_SELECTOR, "table.rows")
    headers = [
        th.get_attribute("data-column") for th in table.find_elements(By.CSS_SELECTOR, "thead th")
    ]
    assert set(headers) == {"order_id", "customer", "total", "paid", "shipping__city"}
    types = [
        th.find_element(By.CSS_SELECTOR, ".muted").text
        for th in table.find_elements(By.CSS_SELECTOR, "thead th")
    ]
    assert dict(zip(headers, types, strict=True)) == {
        "order_id": "number",
        "customer": "string",
        "total": "number",
        "paid": "boolean",
        "shipping__city": "string",
    }
    shown = [
        dict(zip(headers, (td.text for td in tr.find_elements(By.TAG_NAME, "td")), strict=True))
        for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    by_id = {row["order_id"]: row for row in shown}
    assert sorted(by_id) == ["1", "2", "3"]
    assert by_id["1"]["customer"] == "Ana <script>"  # escaped, shown as text
    assert by_id["3"]["customer"] == "Čedo"
    assert by_id["3"]["shipping__city"] == "München"
    assert by_id["3"]["total"] == "99.99"
    assert by_id["2"]["paid"] == "false"

    # The ingestions that carried them are listed as processed, with their counts.
    statuses = browser.find_elements(By.CSS_SELECTOR, "table.ingestions tbody tr")
    assert statuses
    received = 0
    for row in statuses:
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[3] == "success"
        received += int(cells[4])
    assert received == 3
    browser.save_screenshot(str(tmp_path / "emulator-page.png"))
