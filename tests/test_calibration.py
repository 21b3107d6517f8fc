"""Temperature scaling and ECE (seq2seq/calibration.py) on synthetic logits whose right answer is
known, then on a tiny trained classifier: fitted at training, applied by evaluation, the export
and the server."""

import json

import numpy as np
import pytest

from seq2seq import calibration


def sampled(n=4000, classes=3, scale=1.0, seed=0):
    """Logits z and labels drawn from softmax(z): calibrated by construction. Returned
    logits are `scale` × z, so the best temperature is `scale`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, classes))
    p = calibration.softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return scale * z, labels


@pytest.mark.parametrize("scale", [0.5, 1.0, 4.0])
def test_the_fitted_temperature_undoes_a_known_scaling(scale):
    logits, labels = sampled(scale=scale)
    t = calibration.fit_temperature(logits, labels)
    assert t == pytest.approx(scale, rel=0.1)


def test_an_overconfident_model_gets_a_temperature_above_one_and_a_lower_nll():
    logits, labels = sampled(scale=5.0, seed=1)  # five times too sure of itself
    before = calibration.nll(logits, labels)
    t = calibration.fit_temperature(logits, labels)
    after = calibration.nll(logits, labels, t)
    assert t > 3 and after < before * 0.8
    # the fitted temperature is the minimum: nearby ones do worse
    assert after <= calibration.nll(logits, labels, t * 1.1)
    assert after <= calibration.nll(logits, labels, t / 1.1)
    # and argmax, so accuracy, is unchanged
    assert (calibration.softmax(logits, t).argmax(1) == logits.argmax(1)).all()
    ece_before = calibration.expected_calibration_error(calibration.softmax(logits), labels)
    ece_after = calibration.expected_calibration_error(calibration.softmax(logits, t), labels)
    assert ece_before > 0.1 and ece_after < 0.03


def test_ece_by_hand():
    # two bins used (of 15): confidence 0.9 right 1 of 2 → gap 0.4; 0.6 right 2 of 2 → gap 0.4
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])
    assert calibration.expected_calibration_error(probs, labels) == pytest.approx(0.4)
    centers, observed, sizes = calibration.reliability(probs, labels)
    assert centers == pytest.approx([0.6, 0.9]) and observed == [1.0, 0.5] and sizes == [2, 2]
    # a probability of exactly 1 falls in the last bin, not past it
    assert calibration.reliability(np.array([[1.0, 0.0]]), [0])[2] == [1]


def test_the_temperature_stays_in_range_at_the_extremes():
    separable = np.array([[5.0, -5.0], [-5.0, 5.0]])
    assert calibration.fit_temperature(separable, [0, 1]) == calibration.T_RANGE[0]
    always_wrong = np.array([[5.0, -5.0], [-5.0, 5.0]])
    assert calibration.fit_temperature(always_wrong, [1, 0]) == calibration.T_RANGE[1]
    with pytest.raises(ValueError, match="need"):
        calibration.fit_temperature(np.zeros((3, 2)), [0, 1])


# --- a tiny trained classifier -----------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    from servers import classify_overrides

    from seq2seq.config import load_config
    from seq2seq.data import prepare
    from seq2seq.tasks import classification

    root = tmp_path_factory.mktemp("calibrated")
    overrides = classify_overrides(root)
    # noisy labels, so that the model cannot be right every time and its confidence matters
    data = root / "reviews.tsv"
    rng = np.random.default_rng(0)
    lines = []
    for i in range(200):
        label = "pos" if rng.random() < 0.5 else "neg"  # not from i: digits are pieces
        word = "good" if (label == "pos") != (rng.random() < 0.2) else "bad"
        lines.append(f"{label}\ta {word} film number {i}\n")
    data.write_text("".join(lines))
    cfg = load_config(
        "classify",
        "tiny",
        overrides=[*overrides, "train.max_steps=300", "data.valid_fraction=0.3"],
    )
    prepare(cfg)
    summary = classification.run_training(cfg, progress=False)
    return cfg, summary, root


def test_training_fits_a_temperature_that_evaluation_and_the_export_use(calibrated_run):
    from seq2seq.inference import ExportedModel
    from seq2seq.tasks import classification

    cfg, summary, root = calibrated_run
    fitted = json.loads((cfg.run_dir / "calibration.json").read_text())
    t = fitted["temperature"]
    assert summary["calibration"]["temperature"] == t and fitted["fitted_on"] == "valid"
    assert fitted["nll_after"] <= fitted["nll_before"]
    assert t != pytest.approx(1.0, abs=0.01)  # trained to near-certainty on noisy labels

    results = classification.run_evaluation(cfg)
    c = results["rnn"]["calibration"]
    assert c["temperature"] == pytest.approx(t, abs=1e-4) and c["ece_bins"] == 15
    preds = [json.loads(line) for line in (cfg.run_dir / "predictions.jsonl").open()]
    trained = classification.load_trained(cfg)
    logits = trained.logits([p["text"] for p in preds[:8]])
    want = calibration.softmax(logits, t)
    assert np.allclose([p["probabilities"] for p in preds[:8]], want, atol=1e-5)

    path = classification.run_export(cfg, root / "models" / "classify")
    metadata = json.loads((path / "assets.extra" / "metadata.json").read_text())
    assert metadata["temperature"] == pytest.approx(t)
    exported = ExportedModel(path, "classify")
    texts = [p["text"] for p in preds[:8]]
    assert np.allclose(exported.runner.probabilities(texts), want, atol=1e-5)
    raw = calibration.softmax(exported.runner.logits(texts))
    assert not np.allclose(raw, want, atol=1e-3)  # the calibration changed them
    assert exported.describe()["eval_scores"]["ece"] == c["ece_after"]


def test_the_server_returns_the_calibrated_probabilities(calibrated_run):
    from servers import Server

    from serving.client import Client

    cfg, _, root = calibrated_run
    t = json.loads((cfg.run_dir / "calibration.json").read_text())["temperature"]
    from seq2seq.tasks import classification

    texts = ["a good film number 3", "a bad film number 5"]
    logits = classification.load_trained(cfg).logits(texts)
    want = calibration.softmax(logits, t)
    with Server(root / "models") as srv, Client(srv.target, timeout=60) as client:
        got = client.classify(texts)
        metadata = client.metadata("classify")
    labels = classification.load_trained(cfg).labels
    for row, result in zip(want, got, strict=True):
        assert [result.probabilities[name] for name in labels] == pytest.approx(row, abs=1e-5)
    assert "ece" in metadata["models"][0]["eval_scores"]


def test_too_few_validation_texts_leave_the_temperature_at_one(tmp_path):
    from servers import classify_overrides

    from seq2seq.config import load_config
    from seq2seq.data import prepare
    from seq2seq.tasks import classification

    cfg = load_config(
        "classify", "tiny", overrides=[*classify_overrides(tmp_path), "train.max_steps=20"]
    )
    prepare(cfg)
    summary = classification.run_training(cfg, progress=False)
    assert summary["calibration"] == {"temperature": 1.0, "fitted_on": None, "texts": 6}
    assert classification.fitted_temperature(cfg) == 1.0
