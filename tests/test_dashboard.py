"""The dashboard at /ui/ in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium):
what the admin and a token holder each see and do not see, charts drawn, no console errors, no secret in the page.

Screenshots of every view are saved under the test's tmp folder (or $ONEAPI_TEST_ARTIFACTS when set) as artifacts."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from conftest import CLIENT_KEY, UPSTREAM_KEY, GatewayProcess, base_config
from fakevendor import FakeVendor

ADMIN_KEY = "admin-secret-key-for-tests"
OTHER_KEY = "sk-test-other-client-99887766554433"
EXPIRED_KEY = "sk-test-expired-client-1122334455"
SECRETS = (ADMIN_KEY, CLIENT_KEY, OTHER_KEY, EXPIRED_KEY, UPSTREAM_KEY)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver_path is None:
        message = "chromium and chromium-driver are not installed (.ci/run installs Debian's)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("ONEAPI_TEST_ARTIFACTS") or tmp_path) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def traffic(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    vendor.reply_fixture("/v1/embeddings", "openai/embeddings_float.json")
    hi = [{"role": "user", "content": "hi"}]
    mine = openai.OpenAI(base_url=gateway.url("/v1"), api_key=CLIENT_KEY, max_retries=0, timeout=20)
    other = openai.OpenAI(base_url=gateway.url("/v1"), api_key=OTHER_KEY, max_retries=0, timeout=20)
    for _ in range(3):
        mine.chat.completions.create(model="gpt-4o-mini", messages=hi)
    mine.embeddings.create(model="text-embedding-3-small", input="hi")
    other.chat.completions.create(model="gpt-4o", messages=hi)
    vendor.reply_json("/v1/chat/completions", {"error": {"message": "overloaded"}}, status=503)
    with pytest.raises(openai.APIStatusError):
        other.chat.completions.create(model="gpt-4o", messages=hi)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if len(httpx.get(gateway.url("/admin/logs"), headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10).json()["data"]) == 6:
            return
        time.sleep(0.1)
    raise AssertionError("the traffic did not reach the log")


def wait(driver: Any, condition: Any, timeout: float = 15) -> Any:
    # a view redraws its tables whole: an element read mid-redraw is gone, and is read again
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def text_of(driver: Any, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def rows(driver: Any, table: str) -> list[list[str]]:
    found = driver.find_elements(By.CSS_SELECTOR, f"#{table} tr")
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in found[1:]]


def sign_in(driver: Any, key: str) -> None:
    box = driver.find_element(By.ID, "key")
    box.clear()
    box.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()


def show(driver: Any, view: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f'#tabs a[data-view="{view}"]').click()
    wait(driver, lambda d: d.find_element(By.ID, f"view-{view}").is_displayed())


def no_secrets(driver: Any) -> None:
    source = driver.page_source
    stored = driver.execute_script("return document.documentElement.outerHTML + document.title")
    for secret in SECRETS:
        assert secret not in source and secret not in stored


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_admin_and_token_holder_see_what_they_may(vendor: FakeVendor, start_gateway, browser: Any, shots: Path) -> None:
    config = base_config(vendor, pricing={"models": {"gpt-4o-mini": {"input": 1.0, "output": 2.0}, "gpt-4o": {"input": 3.0, "output": 5.0}}})
    config["tokens"] = [{"name": "tester", "key": CLIENT_KEY, "budget": 5.0, "budget_period": "monthly", "rpm": 60},
                        {"name": "other", "key": OTHER_KEY}, {"name": "gone", "key": EXPIRED_KEY, "expires": "2020-01-01T00:00:00Z"}]
    gateway = start_gateway(config)
    traffic(gateway, vendor)
    driver = browser

    # / leads to /ui/, which shows nothing but the sign-in until a key is given
    driver.get(gateway.url("/"))
    wait(driver, lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert driver.current_url.endswith("/ui/")
    assert not driver.find_element(By.ID, "tabs").is_displayed()
    assert "tester" not in driver.page_source
    page = httpx.get(gateway.url("/ui/"), timeout=10)
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert httpx.get(gateway.url("/ui/api/overview"), timeout=10).status_code == 401
    driver.save_screenshot(str(shots / "0-signin.png"))

    # the admin: every token, every channel
    sign_in(driver, ADMIN_KEY)
    wait(driver, lambda d: d.find_element(By.ID, "who").text == "admin")
    assert driver.find_element(By.ID, "key").get_attribute("value") == ""  # the key does not stay in the field
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart-requests svg rect")) > 0)
    for chart in ("requests", "tokens", "cost", "by_model", "by_token", "by_channel"):
        assert driver.find_elements(By.CSS_SELECTOR, f"#chart-{chart} svg"), chart
    cards = [c.text.split("\n") for c in driver.find_elements(By.CSS_SELECTOR, "#totals .card")]
    assert ["Requests", "5"] in cards and ["Errors", "1"] in cards
    labels = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#chart-by_token svg text")]
    assert "tester" in labels and "other" in labels
    no_secrets(driver)
    driver.save_screenshot(str(shots / "1-admin-overview.png"))

    show(driver, "tokens")
    wait(driver, lambda d: len(rows(d, "tokens-table")) == 3)
    tokens = {r[0]: r for r in rows(driver, "tokens-table")}
    assert tokens["gone"][11].startswith("2020-01-01") and "bad" in driver.find_elements(
        By.CSS_SELECTOR, "#tokens-table tr")[3].find_elements(By.TAG_NAME, "td")[11].get_attribute("class")  # expired, marked so
    assert tokens["tester"][3] == "$5.0000" and tokens["tester"][7] == "monthly" and tokens["other"][3] == "unlimited"
    assert tokens["tester"][4] == "$0.0000"  # credits: none given
    driver.save_screenshot(str(shots / "2-admin-tokens.png"))

    show(driver, "channels")
    wait(driver, lambda d: len(rows(d, "channels-table")) == 1)
    channel = rows(driver, "channels-table")[0]
    assert channel[0] == "main" and "...6789" in channel[6] and "sk-" not in channel[6] and channel[5] == "closed"
    driver.find_element(By.CSS_SELECTOR, "#channels-table button").click()  # the vendor still answers 503
    wait(driver, lambda d: rows(d, "channels-table")[0][12].startswith("failed 502"))
    vendor.reply_fixture("/v1/chat/completions", "openai/chat_completion_text.json")
    driver.find_element(By.CSS_SELECTOR, "#channels-table button").click()
    wait(driver, lambda d: rows(d, "channels-table")[0][12].startswith("ok"))
    no_secrets(driver)
    driver.save_screenshot(str(shots / "3-admin-channels.png"))

    show(driver, "log")
    wait(driver, lambda d: len(rows(d, "log-table")) == 6)
    Select(driver.find_element(By.CSS_SELECTOR, "#log-filters select[name=status]")).select_by_value("error")
    driver.find_element(By.CSS_SELECTOR, "#log-filters button").click()
    wait(driver, lambda d: len(rows(d, "log-table")) == 1)
    failed = rows(driver, "log-table")[0]
    assert failed[2] == "other" and failed[7] == "502" and failed[-1] == "upstream_error"
    driver.save_screenshot(str(shots / "4-admin-log-errors.png"))
    driver.execute_script("document.querySelector('#log-filters input[name=since]').value = '2100-01-01T00:00'")
    driver.find_element(By.CSS_SELECTOR, "#log-filters button").click()
    wait(driver, lambda d: rows(d, "log-table") == [["no requests match"]])

    show(driver, "config")
    wait(driver, lambda d: "last reload error" in d.find_element(By.ID, "config-list").text)
    driver.save_screenshot(str(shots / "5-admin-config.png"))
    assert console_errors(driver) == []

    # signing out forgets the key and everything shown
    driver.find_element(By.ID, "signout").click()
    wait(driver, lambda d: d.find_element(By.ID, "signin").is_displayed())
    assert driver.execute_script("return sessionStorage.length") == 0
    assert "tester" not in driver.page_source and "other" not in driver.find_element(By.TAG_NAME, "main").text

    # a token holder: its own token, usage and requests; no channels, no other token
    sign_in(driver, CLIENT_KEY)
    wait(driver, lambda d: d.find_element(By.ID, "who").text == "token: tester")
    wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chart-requests svg rect")) > 0)
    assert not driver.find_element(By.CSS_SELECTOR, '#tabs a[data-view="channels"]').is_displayed()
    assert not driver.find_elements(By.CSS_SELECTOR, "#chart-by_token svg")
    assert ["Requests", "4"] in [c.text.split("\n") for c in driver.find_elements(By.CSS_SELECTOR, "#totals .card")]
    driver.save_screenshot(str(shots / "6-token-overview.png"))
    show(driver, "tokens")
    wait(driver, lambda d: len(rows(d, "token-recent")) == 4)
    assert [r[0] for r in rows(driver, "tokens-table")] == ["tester"]
    mine = rows(driver, "tokens-table")[0]
    assert mine[3] == "$5.0000" and mine[9] == "60" and mine[8] != "—"  # budget, rpm, and when the month resets
    driver.save_screenshot(str(shots / "7-token-detail.png"))
    show(driver, "log")
    wait(driver, lambda d: len(rows(d, "log-table")) == 4)
    show(driver, "config")
    wait(driver, lambda d: "config version" in d.find_element(By.ID, "config-list").text)
    assert "last reload error" not in driver.find_element(By.ID, "config-list").text
    assert "other" not in driver.page_source
    no_secrets(driver)
    assert console_errors(driver) == []
    # the channel view is the admin's, even when asked for by its address
    driver.get(gateway.url("/ui/#channels"))
    wait(driver, lambda d: d.find_element(By.ID, "view-overview").is_displayed())
    assert httpx.get(gateway.url("/ui/api/channels"), headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=10).status_code == 401

    # a wrong key is refused on the sign-in page
    driver.find_element(By.ID, "signout").click()
    sign_in(driver, "sk-not-a-key")
    wait(driver, lambda d: d.find_element(By.ID, "signin-error").is_displayed())
    assert "not accepted" in text_of(driver, "#signin-error") and "sk-not-a-key" not in driver.page_source
    sign_in(driver, EXPIRED_KEY)  # a token past its expiry is told so, and nothing is kept
    wait(driver, lambda d: "expired" in d.find_element(By.ID, "signin-error").text)
    assert driver.execute_script("return sessionStorage.length") == 0 and not driver.find_element(By.ID, "tabs").is_displayed()


def test_a_token_holder_redeems_a_code_in_the_token_view(vendor: FakeVendor, start_gateway, browser: Any, shots: Path) -> None:
    from oneapi.credits import code_digest

    code = "TESTCODE23456789ABCDEFGH"
    config = base_config(vendor, redemptions=[{"sha256": code_digest(code), "value": 2.5}])
    config["tokens"][0]["budget"] = 1.0
    gateway = start_gateway(config)
    driver = browser
    driver.get(gateway.url("/ui/"))
    sign_in(driver, CLIENT_KEY)
    show(driver, "tokens")
    wait(driver, lambda d: len(rows(d, "tokens-table")) == 1 and d.find_element(By.ID, "redeem-form").is_displayed())

    def submit() -> None:
        driver.find_element(By.ID, "redeem-code").send_keys(code)
        driver.find_element(By.CSS_SELECTOR, "#redeem-form button").click()

    submit()
    wait(driver, lambda d: d.find_element(By.ID, "redeem-result").text != "")
    assert text_of(driver, "#redeem-result") == "$2.5000 credited; $3.5000 remains."
    wait(driver, lambda d: rows(d, "tokens-table")[0][4] == "$2.5000")
    assert rows(driver, "tokens-table")[0][5] == "$0.0000" and rows(driver, "tokens-table")[0][6] == "$3.5000"
    assert code not in driver.page_source and console_errors(driver) == []  # the box is emptied once it is credited
    driver.save_screenshot(str(shots / "8-token-redeemed.png"))
    submit()
    wait(driver, lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "already redeemed" in text_of(driver, "#error")  # the 409 names why; the code stays in the box to be checked
