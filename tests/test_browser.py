"""The web page in a real browser (headless Chromium through Selenium) on the real server with the
tiny models: translate with the keyboard, the heatmap and its hover, an error shown, classify, a
phone-width layout, a screenshot.

Without chromium and chromedriver on PATH these tests are skipped here and fail in CI
(`.ci/run` installs both and sets SEQ2SEQ_REQUIRE_BROWSER=1)."""

import os

import pytest
from browser import (
    INSTALL,
    all_of,
    by_id,
    executables,
    full_page_screenshot,
    hover,
    open_browser,
    submit_with_keyboard,
    type_into,
    wait,
)
from servers import Server, free_port

if executables() is None:
    if os.environ.get("SEQ2SEQ_REQUIRE_BROWSER"):
        pytest.fail(f"the browser tests need chromium and chromedriver: {INSTALL}", pytrace=False)
    pytest.skip(f"no chromium/chromedriver ({INSTALL})", allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page_url(models):
    port = free_port()
    srv = Server(models, "--http-port", str(port))
    yield f"http://127.0.0.1:{port}/"
    srv.stop()


@pytest.fixture
def driver():
    d = open_browser(1280, 900)
    yield d
    d.quit()


def ready(driver, url):
    driver.get(url)
    wait(driver, lambda d: "ready" in by_id(d, "status").text, 60, "status never said ready")


def test_translate_heatmap_error_classify_and_a_screenshot(driver, page_url, tmp_path):
    ready(driver, page_url)
    assert by_id(driver, "status").text == "ready: translate v1, classify v1"
    assert by_id(driver, "model-translate").text.startswith("translate v1")

    # translate, sent from the keyboard
    type_into(driver, "source", "Veo el gato.")
    by_id(driver, "beam").clear()
    by_id(driver, "beam").send_keys("4")
    by_id(driver, "nbest").clear()
    by_id(driver, "nbest").send_keys("2")
    submit_with_keyboard(driver, "source")
    wait(driver, lambda d: len(all_of(d, "#hypotheses li")) == 2, 60, "no hypotheses")
    first = all_of(driver, "#hypotheses li")[0]
    assert first.find_element("css selector", ".text").text == "I see the cat."
    assert first.find_element("css selector", ".score").text.startswith("score -")

    # the heatmap: a row per output piece, a cell per source piece
    wait(driver, lambda d: by_id(d, "alignment").is_displayed(), 30, "no heatmap")
    rows = all_of(driver, "#heatmap tbody tr")
    columns = all_of(driver, "#heatmap thead th")[1:]
    assert len(rows) >= 4 and len(columns) >= 3
    assert all(len(r.find_elements("css selector", "td")) == len(columns) for r in rows)
    targets = all_of(driver, "#target-words .word")
    assert [w.text for w in targets] == ["I", "see", "the", "cat."]
    sources = all_of(driver, "#source-words .word")
    assert [w.text for w in sources] == ["Veo", "el", "gato."]

    # hover an output word: it is marked, and each source word shows its share of the attention
    hover(driver, targets[3])
    wait(driver, lambda d: "active" in targets[3].get_attribute("class"), 10, "no hover")
    shares = [float(s.get_attribute("title").split("%")[0]) for s in sources]
    assert abs(sum(shares) - 100) <= 2, shares
    assert all(s.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)" for s in sources)
    # the same from the keyboard: focus moves the highlight
    driver.execute_script("arguments[0].focus()", targets[1])
    wait(driver, lambda d: "active" in targets[1].get_attribute("class"), 10, "no focus")
    assert "active" not in targets[3].get_attribute("class")

    # an error from the API is shown in the page, and the last answer is not kept under it
    type_into(driver, "source", "   ")
    submit_with_keyboard(driver, "source")
    error = by_id(driver, "translate-error")
    wait(driver, lambda d: error.is_displayed(), 30, "the error was not shown")
    assert error.text == "400 INVALID_ARGUMENT: texts[0] is empty or only whitespace"
    assert not by_id(driver, "translate-result").is_displayed()

    # classify: the label and one bar per class, summing to 100 %
    type_into(driver, "review", "a good film 7")
    by_id(driver, "classify-button").click()
    wait(driver, lambda d: by_id(d, "label").text, 30, "no label")
    assert by_id(driver, "label").text == "pos"
    values = [float(v.text.rstrip("%")) for v in all_of(driver, "#bars .value")]
    assert len(values) == 2 and abs(sum(values) - 100) < 0.2 and values[0] >= values[1]

    shot = tmp_path / "page.png"
    full_page_screenshot(driver, shot, 1280)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_page_fits_a_phone_and_shows_an_unreachable_server(driver, page_url):
    driver.set_window_size(390, 844)
    ready(driver, page_url)
    type_into(driver, "source", "Veo el perro.")
    submit_with_keyboard(driver, "source")
    wait(driver, lambda d: all_of(d, "#target-words .word"), 60, "no translation")
    # nothing sticks out sideways: the heatmap scrolls inside its own box
    overflow = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    # the page reports a server it cannot reach instead of failing silently
    driver.execute_script("window.fetch = () => Promise.reject(new TypeError('offline'))")
    by_id(driver, "classify-button").click()
    error = by_id(driver, "classify-error")
    wait(driver, lambda d: error.is_displayed(), 30, "no error shown")
    assert "the server cannot be reached" in error.text


def test_a_server_with_a_token_asks_for_it_and_then_answers(models, driver):
    port = free_port()
    with Server(models, "--http-port", str(port), env={"SEQ2SEQ_TOKEN": "page-token"}):
        driver.get(f"http://127.0.0.1:{port}/")
        form = by_id(driver, "token-form")
        wait(driver, lambda d: form.is_displayed(), 60, "no token field")
        assert by_id(driver, "status").text == "a token is needed"
        by_id(driver, "translate-button").click()
        error = by_id(driver, "translate-error")
        wait(driver, lambda d: error.is_displayed(), 30, "the 401 was not shown")
        assert error.text.startswith("401 UNAUTHENTICATED: missing bearer token")
        type_into(driver, "token", "page-token")
        by_id(driver, "token").submit()
        wait(driver, lambda d: "ready" in by_id(d, "status").text, 30, "the token was not used")
        assert not form.is_displayed()
        type_into(driver, "source", "Comen pan.")
        submit_with_keyboard(driver, "source")
        wait(driver, lambda d: all_of(d, "#hypotheses li"), 60, "no translation")
        assert all_of(driver, "#hypotheses .text")[0].text == "They eat bread."
        assert not error.is_displayed()
