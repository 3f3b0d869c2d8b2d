"""The dashboard in a real browser: ``optistate serve`` on the demo's database, driven in headless Chromium.

Debian's ``chromium`` and ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``);
Selenium is given both, so its Selenium Manager downloads nothing. Without them these tests skip with the
reason, unless ``OPTISTATE_REQUIRE_BROWSER=1`` (CI sets it) makes that a failure. Screenshots go to the
test's temporary folder.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta

import psycopg2
import pytest
from conftest import BACKENDS
from test_serve import serving
from test_web import SECRET, seeded

import optistate
from optistate import demo

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WAIT = 30  # seconds a page may take to show what is awaited (a loaded CI machine)


@pytest.fixture(scope="module", params=BACKENDS)
def database_url(request, tmp_path_factory):
    """A new database on the cell's backend (py311-sqlite or py311-postgres), for the module's one server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('site') / 'demo.db'}"
        return
    server = request.getfixturevalue("pg_server")
    admin = psycopg2.connect(server)
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE browser_site")
    try:
        yield f"{server.rsplit('/', 1)[0]}/browser_site"
    finally:
        admin.cursor().execute("DROP DATABASE browser_site WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def site(database_url, tmp_path_factory):
    """``optistate serve`` on the demo's database: Performance Tuner stopped, Resource Allocator holding a lease on
    gpu_pool, and an hour of Cost Optimizer's points. Yields the base URL and that lease's token."""
    with optistate.connect(database_url) as store:
        seeded(store)
        for kind, name in demo.AGENTS:
            store.start_agent(kind, name, version="1.0.0", ttl=3600)  # alive for the whole module
        store.agent("Performance Tuner").stop()
        lease = store.agent("Resource Allocator").lock("gpu_pool", ttl=3600)  # held after this process is gone
        cost = store.agent("Cost Optimizer")
        now = cost.metrics()[-1].collection_timestamp
        cost.record_metrics(
            {"name": name, "value": value * (1 + 0.2 * math.sin(i / 6)), "unit": unit, "timestamp": now - timedelta(
                minutes=i)} for name, value, unit, _ in demo.METRICS["cost"] for i in range(1, 60))
        cost.flush()
    with open(tmp_path_factory.mktemp("log") / "serve.log", "w") as log, serving(database_url, log=log) as base:
        yield base, lease.token


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        reason = f"no {CHROMIUM} or {CHROMEDRIVER}: apt-get install chromium chromium-driver"
        if os.environ.get("OPTISTATE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"a browser is required (OPTISTATE_REQUIRE_BROWSER=1): {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def rows(driver):
    """``{agent: (liveness, status)}`` as the overview shows them, once its script has drawn them."""
    WebDriverWait(driver, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#agents tr[data-agent]"))
    return {row.get_attribute("data-agent"): (row.find_element(By.CSS_SELECTOR, ".badge").text,
                                              row.find_elements(By.TAG_NAME, "td")[3].text)
            for row in driver.find_elements(By.CSS_SELECTOR, "#agents tr[data-agent]")}


def test_the_overview_shows_the_four_agents_and_their_liveness(site, browser, tmp_path):
    base, token = site
    browser.get(base + "/")
    assert rows(browser) == {
        "Application Monitor": ("alive", "error"), "Cost Optimizer": ("alive", "active"),
        "Performance Tuner": ("offline", "offline"), "Resource Allocator": ("alive", "active")}
    allocator = browser.find_element(By.CSS_SELECTOR, 'tr[data-agent="Resource Allocator"]').text
    assert "gpu_scaling" in allocator and "TimeoutError: Transient network timeout" in allocator
    assert f"gpu_pool #{token} until " in allocator
    browser.save_screenshot(str(tmp_path / "overview.png"))
    Select(browser.find_element(By.ID, "filter-liveness")).select_by_value("offline")
    browser.find_element(By.CSS_SELECTOR, ".filters button").click()
    WebDriverWait(browser, WAIT).until(lambda d: "liveness=offline" in d.current_url)
    assert rows(browser) == {"Performance Tuner": ("offline", "offline")}
    assert SECRET not in browser.page_source


def test_the_cost_optimizer_page_draws_a_chart_with_data(site, browser, tmp_path):
    base, _ = site
    browser.get(base + "/")
    rows(browser)
    browser.find_element(By.LINK_TEXT, "Cost Optimizer").click()
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#configs tr[data-key]'))
    chart = browser.find_element(By.CSS_SELECTOR, 'figure[data-metric="average_savings_percent"] svg')
    buckets = int(chart.get_attribute("data-buckets"))
    assert buckets >= 59 and len(chart.find_elements(By.TAG_NAME, "circle")) == buckets
    line = chart.find_element(By.TAG_NAME, "polyline")
    assert line.size["width"] > 100 and line.size["height"] > 10  # drawn across the chart, not a dot
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 3
    key = browser.find_element(By.CSS_SELECTOR, '#configs tr[data-key="provider_api_key"] .value')
    assert key.text == "***" and SECRET not in browser.page_source
    latest = browser.find_element(By.ID, "latest").text
    assert "average_savings_percent 42.5 percent" in latest
    browser.save_screenshot(str(tmp_path / "cost-optimizer.png"))
    browser.execute_script("arguments[0].scrollIntoView()", chart)
    browser.save_screenshot(str(tmp_path / "cost-optimizer-charts.png"))
