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
    # the bare score is kept for the curious, in the title: the page shows the confidence
    assert first.find_element("css selector", "button").get_attribute("title").startswith("score -")

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


def test_the_learning_panel_follows_the_run_and_a_new_version_is_announced(
    models, driver, tmp_path
):
    """A run training behind the server (its status file, as seq2seq.publish writes it): the
    page shows its progress, curves, versions and ‖∂L/∂h_t‖, follows it as it goes on, and says
    so when a new version loads and answers."""
    import shutil

    import numpy as np

    from seq2seq.config import TrainConfig
    from seq2seq.publish import Publisher

    repo = tmp_path / "models"
    shutil.copytree(models, repo)
    cfg = TrainConfig(max_steps=1000, eval_every=200, first_export_step=50)
    exports = iter(["1", "2"])
    pub = Publisher(
        repo / "translate", "translate", tmp_path / "run", cfg, "bleu_greedy",
        lambda training: repo / "translate" / next(exports),
    )  # fmt: skip
    pub.started(0)
    for step in range(20, 220, 20):
        norms = np.geomspace(1e-4, 1.0, 12) * (1 + step / 100)
        pub.logged(step, 6.0 - step / 50, {"encoder_0": norms, "decoder_0": norms[:8]})
    pub.validated(50, 5.2, 0.4, improved=True)
    pub.validated(200, 3.1, 12.5, improved=False)
    pub.write()
    port = free_port()
    with Server(repo, "--http-port", str(port), "--poll-seconds", "0.5"):
        ready(driver, f"http://127.0.0.1:{port}/")
        # the panel is drawn anew at every poll: read it in one script each time, never through
        # an element found earlier (it would be stale)
        wait(driver, lambda d: "step 200 of 1,000" in run_text(d), 30, "no learning panel")
        text = run_text(driver)
        assert "Translator training" in text
        assert "next validation at step 400" in text
        assert "v1 · step 50 · validation BLEU 0.4" in text
        heatmaps = wait(
            driver,
            lambda d: (h := painted_heatmaps(d)) and all(share > 0 for _, share in h) and h,
            30,
            "the heatmaps were not drawn",
        )
        assert [label for label, _ in heatmaps] == [
            "‖∂L/∂h_t‖ of encoder_0, time step by training step",
            "‖∂L/∂h_t‖ of decoder_0, time step by training step",
        ]
        # drawn up to step 200 of the schedule's 1,000: the first fifth of its width, filled
        assert all(0.17 < painted < 0.23 for _, painted in heatmaps), heatmaps

        # the run goes on: a better validation, a new version exported and loaded
        shutil.copytree(repo / "translate" / "1", repo / "translate" / "2")
        for step in range(220, 420, 20):
            pub.logged(step, 6.0 - step / 50, {"encoder_0": np.ones(12), "decoder_0": np.ones(8)})
        pub.validated(400, 2.4, 21.0, improved=True)
        wait(driver, lambda d: "step 400 of 1,000" in run_text(d), 30,
             "the panel did not follow the run")  # fmt: skip
        assert "v2 · step 400 · validation BLEU 21.0" in run_text(driver)
        news = by_id(driver, "news")
        wait(driver, lambda d: news.is_displayed(), 30, "the new version was not announced")
        assert news.text == "translate v2 is now served."
        type_into(driver, "source", "Veo el gato.")
        submit_with_keyboard(driver, "source")
        wait(driver, lambda d: by_id(d, "translate-by").text, 60, "no translation")
        assert by_id(driver, "translate-by").text == "answered by translate v2"
        pub.ended("finished", 1000)
        wait(driver, lambda d: "finished" in run_text(d), 30, "not finished")


def test_the_page_says_how_far_to_trust_an_answer(models, driver, tmp_path):
    """An English text gets "This does not look like Spanish" beside its translation; the
    confidence is shown in words and colour; a paragraph is shown sentence by sentence; the
    text box stops at the server's limit; byte pieces are shown as the characters they spell."""
    import json
    import shutil

    repo = tmp_path / "models"
    shutil.copytree(models, repo)
    # the tiny export has no validation split to fit a confidence on: give it one that reads
    # the mean log-probability per piece (what an export fits, as seq2seq.confidence stores it)
    meta_path = repo / "translate" / "1" / "assets.extra" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["confidence"] = {
        "names": ["mean_logprob"], "mean": [-1.0], "scale": [0.5], "weights": [2.0], "bias": 0.0,
    }  # fmt: skip
    meta_path.write_text(json.dumps(meta))
    port = free_port()
    with Server(repo, "--http-port", str(port)):
        ready(driver, f"http://127.0.0.1:{port}/")
        type_into(driver, "source", "The weather is nice today.")
        submit_with_keyboard(driver, "source")
        warnings = by_id(driver, "translate-warnings")
        wait(driver, lambda d: warnings.is_displayed(), 60, "no warning shown")
        notes = all_of(driver, "#translate-warnings li")
        assert notes[0].text == "This does not look like Spanish (it looks like English)."
        assert notes[0].get_attribute("data-code") == "not_source_language"
        badge = all_of(driver, "#hypotheses li .confidence")
        assert len(badge) == 1 and badge[0].text.endswith("% confidence")
        assert badge[0].text.split(" · ")[0] in ("likely right", "may be wrong", "probably wrong")
        color = badge[0].value_of_css_property("color")
        assert color in ("rgba(27, 110, 58, 1)", "rgba(138, 90, 0, 1)", "rgba(164, 22, 26, 1)")

        # Spanish: no warning; a paragraph: its sentences, each with its translation
        type_into(driver, "source", "Veo el gato. Comen pan. El perro duerme.")
        submit_with_keyboard(driver, "source")
        wait(driver, lambda d: len(all_of(d, "#sentences li")) == 3, 60, "no sentences")
        assert not by_id(driver, "translate-warnings").is_displayed()
        parts = [e.text for e in all_of(driver, "#sentences .part-text")]
        assert parts == ["I see the cat.", "They eat bread.", "The dog sleeps."]
        assert all_of(driver, "#hypotheses .text")[0].text == " ".join(parts)
        # a sentence's alignment on a click
        all_of(driver, "#sentences button")[1].click()
        wait(driver, lambda d: [w.text for w in all_of(d, "#target-words .word")] ==
             ["They", "eat", "bread."], 30, "the sentence's alignment was not shown")  # fmt: skip

        # the classifier, given Spanish
        type_into(driver, "review", "Una película aburrida y demasiado larga.")
        by_id(driver, "classify-button").click()
        wait(driver, lambda d: by_id(d, "classify-warnings").is_displayed(), 30, "no warning")
        assert all_of(driver, "#classify-warnings li")[0].text.startswith(
            "This does not look like English"
        )

        # the text box stops at the server's limit, and says how much is left
        box = by_id(driver, "source")
        assert box.get_attribute("maxlength") == "2000"
        assert by_id(driver, "source-count").text.endswith(" / 2,000 characters")
        # byte pieces: characters, never "<0x…>"
        labels = driver.execute_script(
            "return pieceLabels(['\u2581a', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '<0xC3>'])"
        )
        assert labels == ["\u2581a", "😀", "·", "·", "·", "·"]
        spelled = driver.execute_script(
            "return words(['\u2581a', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '\u2581b', '<0xC3>'])"
            ".map((w) => w.text)"
        )
        assert spelled == ["a😀", "b"]


def run_text(driver) -> str:
    """The translator's run in the learning panel, as shown ('' while there is none)."""
    return driver.execute_script(
        "const e = document.getElementById('run-translate'); return e ? e.innerText : ''"
    )


def painted_heatmaps(driver) -> list:
    """(aria-label, share of its pixels drawn) of each heatmap of the translator's run."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#run-translate canvas.heat')].map((c) => {"
        "  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "  let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0;"
        "  return [c.getAttribute('aria-label'), n / (d.length / 4)]; })"
    )
