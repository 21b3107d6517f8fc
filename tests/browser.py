"""Drives the web page in headless Chromium (Debian's `chromium` and `chromium-driver`) through
Selenium: used by tests/test_browser.py, and by `make screenshot` to picture a running server:

    python tests/browser.py http://127.0.0.1:8080/ docs/images/web-page.png
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install chromium chromium-driver"


def executables() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is missing."""
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def open_browser(width: int = 1280, height: int = 900):
    """A headless Chromium WebDriver using the system's browser and driver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = executables()
    if found is None:
        raise RuntimeError(f"no chromium and chromedriver on PATH: {INSTALL}")
    browser, driver = found
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait(driver, condition, timeout: float = 60, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message)


def by_id(driver, element_id: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def all_of(driver, css: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def type_into(driver, element_id: str, text: str) -> None:
    box = by_id(driver, element_id)
    box.clear()
    box.send_keys(text)


def submit_with_keyboard(driver, element_id: str) -> None:
    """Ctrl+Enter in the text box, as a keyboard user sends the form."""
    from selenium.webdriver.common.keys import Keys

    by_id(driver, element_id).send_keys(Keys.CONTROL, Keys.ENTER)


def hover(driver, element) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(element).perform()


def full_page_screenshot(driver, path: Path, width: int) -> None:
    """The whole page (not only the window) as a PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, height + 140)  # + the window's frame
    driver.save_screenshot(str(path))


def picture(url: str, out: Path, source: str, review: str, width: int = 1280) -> None:
    """Opens the page at `url`, translates `source` (hovering one word), classifies `review`,
    and saves a full-page screenshot to `out`."""
    driver = open_browser(width)
    try:
        driver.get(url)
        wait(driver, lambda d: "ready" in by_id(d, "status").text, 120, "the page never got ready")
        type_into(driver, "review", review)
        submit_with_keyboard(driver, "review")
        wait(driver, lambda d: by_id(d, "label").text, 60, "no classification")
        type_into(driver, "source", source)
        submit_with_keyboard(driver, "source")
        wait(driver, lambda d: all_of(d, "#target-words .word"), 60, "no alignment")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, height + 140)
        driver.execute_script("document.activeElement.blur()")  # no focus ring in the picture
        words = all_of(driver, "#target-words .word")
        hover(driver, words[min(3, len(words) - 1)])
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python tests/browser.py URL OUT.png")
    picture(
        sys.argv[1],
        Path(sys.argv[2]),
        source="¿Dónde está la estación de tren?",
        review="A gorgeous, witty and moving film.",
    )
    print(f"wrote {sys.argv[2]}")
