"""Both pages in a real browser: Debian's chromium, headless, driven through Debian's
chromedriver by selenium, against a whole gateway on loopback.

A sender looks up a deferred address and an unknown one and reads the answers; an
administrator logs in with the token, allows a candidate with a click, finds it on the
allow list, and the client's next SMTP session passes. A screenshot of each page is kept
under the test's tmp dir; with ONAJIMI_SCREENSHOTS=DIR the README's two are written
there too (`ONAJIMI_SCREENSHOTS=docs .venv/bin/python -m pytest tests/test_web_browser.py`).

Skipped, with the reason, only when chromium cannot be run at all (`make test` installs
chromium, chromium-driver and a Japanese font from Debian).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from gateway.policy.records import Penalty
from tests.test_smtp_policy import attempt
from tests.test_web import TOKEN, web_env

pytestmark = pytest.mark.timeout(180)

README_SHOTS = {"sender-deferred": "sender-page.png", "admin-rescue-list": "admin-page.png"}


@pytest.fixture(scope="module")
def driver():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("chromium and chromium-driver are not installed (make test installs them)")
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium  # Debian's: selenium must not fetch a browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    try:
        browser = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    except WebDriverException as exc:
        pytest.skip(f"chromium cannot be run here: {exc.msg}")
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


class Screenshots:
    def __init__(self, driver, where: Path) -> None:
        self.driver = driver
        self.where = where
        self.also = os.environ.get("ONAJIMI_SCREENSHOTS")

    def __call__(self, name: str) -> None:
        path = self.where / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if self.also and name in README_SHOTS:
            shutil.copyfile(path, Path(self.also) / README_SHOTS[name])


async def test_a_sender_and_an_administrator_in_a_real_browser(driver, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    env = await web_env({"admin_token_file": str(token_file)})
    try:
        # A suspect (S25R rule 1) deferred, and back two minutes later: a candidate; a
        # second one (rule 5) back after ten seconds: an irregular one, listed after it;
        # and a hammerer in the penalty box.
        assert (await attempt(env, "127.0.0.7")).code == 450
        assert (await attempt(env, "127.0.0.3")).code == 450
        env.clock.advance(10)
        assert (await attempt(env, "127.0.0.7", sender="bob@other.example")).code == 450
        env.clock.advance(110)
        assert (await attempt(env, "127.0.0.3")).code == 450
        now = env.clock.now
        boxed = Penalty(now - 600, now + 3000, 7, "127.0.0.8", "dhcp5.example.com")
        await env.gateway.store.put("penalty:127.0.0.8", boxed)
        base = f"http://127.0.0.1:{env.gateway.web.port}"
        shot = Screenshots(driver, tmp_path)

        def click(button) -> None:
            """Click, and wait for the next page: the old one's elements are still there
            for a moment after a click."""
            page = driver.find_element(By.TAG_NAME, "html")
            button.click()
            WebDriverWait(driver, 10).until(lambda _: gone(page))

        def gone(element) -> bool:
            """selenium's staleness_of, and what chromium says instead in the middle of
            a navigation ("Node with given id does not belong to the document"), which
            staleness_of let through as an error: a flaky failure of a fresh clone."""
            try:
                element.is_enabled()
            except StaleElementReferenceException:
                return True
            except WebDriverException as exc:
                if "does not belong to the document" in (exc.msg or ""):
                    return True
                raise
            return False

        def look_up(address: str) -> tuple[str, str]:
            box = driver.find_element(By.ID, "ip")
            box.clear()
            box.send_keys(address)
            click(driver.find_element(By.ID, "lookup"))  # a plain GET form: no script
            result = driver.find_element(By.ID, "result")
            return result.get_attribute("data-state"), result.text

        def sender() -> tuple[tuple[str, str], tuple[str, str]]:
            driver.get(base + "/")
            shot("sender")
            deferred = look_up("127.0.0.3")
            shot("sender-deferred")
            unknown = look_up("127.0.0.9")  # never seen (and no PTR name)
            shot("sender-unknown")
            return deferred, unknown

        # The browser blocks; the gateway's loop (this one) must keep serving meanwhile.
        deferred, unknown = await asyncio.to_thread(sender)
        assert deferred[0] == "deferred"
        assert "127.0.0.3 was first deferred at" in deferred[1]
        assert "Attempts so far: 2" in deferred[1] and "初めて一時拒否されました" in deferred[1]
        assert unknown[0] == "new" and "Nothing is remembered about 127.0.0.9" in unknown[1]

        def administrator() -> tuple[str, str, list[str]]:
            driver.get(base + "/admin/")
            login_url = driver.current_url  # sent to the login first
            driver.find_element(By.NAME, "name").send_keys("alice")
            driver.find_element(By.ID, "token").send_keys(TOKEN)
            click(driver.find_element(By.ID, "login"))
            shot("admin-rescue-list")
            group = driver.find_element(By.ID, "group-1")
            assert "dyn.example.jp" in group.text and "regular retrier" in group.text
            click(group.find_element(By.CSS_SELECTOR, "button.allow"))
            notice = driver.find_element(By.ID, "notice").text
            click(driver.find_element(By.LINK_TEXT, "Allow and deny entries"))
            shot("admin-entries")
            listed = [
                cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#allow-entries .entry")
            ]
            click(driver.find_element(By.LINK_TEXT, "Penalty box"))
            shot("admin-penalty")
            click(driver.find_element(By.LINK_TEXT, "Recent decisions"))
            shot("admin-decisions")
            return login_url, notice, listed

        login_url, notice, listed = await asyncio.to_thread(administrator)
        assert login_url == base + "/admin/login"
        assert notice == "allow p1234-ip45.dyn.example.jp added"
        assert listed == ["p1234-ip45.dyn.example.jp"]
        (entry,) = await env.gateway.store.entries("allow")
        assert entry.comment == "rescued: dyn.example.jp"
        # The client's next session passes (the allow list, from this very gateway).
        assert (await attempt(env, "127.0.0.3")).code == 250
        for name in ("sender", "sender-deferred", "admin-rescue-list", "admin-entries"):
            assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    finally:
        await env.close()
