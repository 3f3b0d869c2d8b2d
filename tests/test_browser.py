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


ROWS = """return Array.from(document.querySelectorAll("#agents tr[data-agent]"),
    (row) => [row.dataset.agent, row.querySelector(".badge").textContent, row.cells[3].textContent]);"""


def rows(driver):
    """``{agent: (liveness, status)}`` as the overview shows them, once its script has drawn them.

    Read by one script, at one moment: the page redraws rows as events arrive.
    """
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(ROWS))
    return {name: (liveness, status) for name, liveness, status in driver.execute_script(ROWS)}


def text(driver, selector):
    """The text of the element ``selector`` finds, read by one script ("" when there is none yet)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                                 selector)


def test_the_overview_shows_the_four_agents_and_their_liveness(site, browser, tmp_path):
    base, token = site
    browser.get(base + "/")
    assert rows(browser) == {
        "Application Monitor": ("alive", "error"), "Cost Optimizer": ("alive", "active"),
        "Performance Tuner": ("offline", "offline"), "Resource Allocator": ("alive", "active")}
    allocator = text(browser, 'tr[data-agent="Resource Allocator"]')
    assert "gpu_scaling" in allocator and "TimeoutError: Transient network timeout" in allocator
    assert f"gpu_pool #{token} until " in allocator
    WebDriverWait(browser, WAIT).until(lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class"))
    browser.save_screenshot(str(tmp_path / "overview.png"))  # docs/dashboard-overview.png is one of these
    Select(browser.find_element(By.ID, "filter-liveness")).select_by_value("offline")
    browser.find_element(By.CSS_SELECTOR, ".filters button").click()
    WebDriverWait(browser, WAIT).until(lambda d: "liveness=offline" in d.current_url)
    assert rows(browser) == {"Performance Tuner": ("offline", "offline")}
    assert SECRET not in browser.page_source


def test_the_cost_optimizer_page_draws_a_chart_with_data(site, browser, tmp_path):
    base, _ = site
    browser.get(base + "/")
    rows(browser)
    link = 'tr[data-agent="Cost Optimizer"] a'  # the row is drawn anew as events arrive: its link read at once
    browser.get(browser.execute_script("return document.querySelector(arguments[0]).href", link))
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.CSS_SELECTOR, '#configs tr[data-key]'))
    chart = browser.find_element(By.CSS_SELECTOR, 'figure[data-metric="average_savings_percent"] svg')
    buckets = int(chart.get_attribute("data-buckets"))
    assert buckets >= 59 and len(chart.find_elements(By.TAG_NAME, "circle")) == buckets
    line = chart.find_element(By.TAG_NAME, "polyline")
    assert line.size["width"] > 100 and line.size["height"] > 10  # drawn across the chart, not a dot
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 3
    assert text(browser, '#configs tr[data-key="provider_api_key"] .value') == "***"
    assert SECRET not in browser.page_source
    latest = text(browser, "#latest")
    assert "average_savings_percent\t42.5\tpercent" in latest
    browser.save_screenshot(str(tmp_path / "cost-optimizer.png"))
    browser.execute_script("arguments[0].scrollIntoView()", chart)
    browser.save_screenshot(str(tmp_path / "cost-optimizer-charts.png"))


def test_a_config_changed_by_another_process_shows_live_without_reloading(site, browser, database_url, tmp_path):
    base, _ = site
    browser.get(base + "/agents/Cost%20Optimizer?type=cost")
    WebDriverWait(browser, WAIT).until(lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class"))

    def shown(driver):
        return text(driver, '#configs tr[data-key="cost_threshold_usd"] .value')

    WebDriverWait(browser, WAIT).until(lambda d: shown(d) == "1000")
    browser.execute_script("window.sameDocument = true")  # gone if the page were loaded again
    with optistate.connect(database_url, watch=False, actor="operator in another process") as store:
        store.agent("Cost Optimizer").config.set("cost_threshold_usd", 2750)
    WebDriverWait(browser, WAIT).until(lambda d: shown(d) == "2750")
    assert browser.execute_script("return window.sameDocument") is True
    newest = text(browser, "#history li")
    assert "config cost_threshold_usd: config_value 1000 → 2750 by operator in another process" in newest
    browser.save_screenshot(str(tmp_path / "cost-optimizer-live.png"))


def test_the_overview_follows_status_changes_live(site, browser, database_url):
    base, _ = site
    browser.get(base + "/")
    assert rows(browser)["Cost Optimizer"] == ("alive", "active")
    WebDriverWait(browser, WAIT).until(lambda d: "on" in d.find_element(By.ID, "live").get_attribute("class"))
    browser.execute_script("window.sameDocument = true")
    with optistate.connect(database_url, watch=False) as store:
        store.agent("Cost Optimizer").set_status("waiting")
    WebDriverWait(browser, WAIT).until(lambda d: rows(d)["Cost Optimizer"] == ("alive", "waiting"))
    assert browser.execute_script("return window.sameDocument") is True
