"""The translation confidence (seq2seq.confidence): its features, its logistic fit and its
scores, checked against scikit-learn where they overlap."""

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from seq2seq import confidence as conf


def test_features_read_what_the_decoder_showed():
    # 3 source pieces; 3 output pieces + <eos>; attention mostly on the first two pieces
    rows = [(0.9, 0.1, 0.0), (0.1, 0.8, 0.1), (0.5, 0.5, 0.0), (0.0, 0.0, 1.0)]
    f = conf.features(("▁Veo", "▁el", "<0xF0>"), ("▁I", "▁see", ".", "<eos>"), rows, -0.8, 0.6)
    raw = -0.8 * ((5 + 4) / 6) ** 0.6
    assert f["mean_logprob"] == pytest.approx(raw / 4)
    assert f["no_eos"] == 0.0
    assert f["length_ratio"] == pytest.approx(math.log((3 + 1) / (3 + 1)))
    assert f["byte_share"] == pytest.approx(1 / 3)
    assert f["source_pieces"] == pytest.approx(math.log(4))
    # the pieces received 1.5, 1.4 and 1.1 of attention: all covered, the most 1.5
    assert f["coverage"] == pytest.approx(1.0) and f["dwell"] == pytest.approx(math.log1p(1.5))
    assert f["copied_share"] == 0.0  # "I", "see" are not source pieces; "." is punctuation
    # cut off at max_length: no <eos>; a copied name; no attention (a plain model)
    g = conf.features(("▁Juan",), ("▁Juan", "▁Juan"), (), -2.0, 0.0)
    assert g["no_eos"] == 1.0 and g["copied_share"] == 1.0 and g["mean_logprob"] == -1.0
    assert "coverage" not in g and "dwell" not in g


def test_the_newton_fit_is_scikit_learns_l2_logistic_regression():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    y = (x @ np.array([1.5, -2.0, 0.0, 0.5]) + 0.3 + rng.normal(size=300) > 0).astype(float)
    w, b = conf.fit_logistic(x, y, l2=1.0)
    # sklearn minimises C·Σ log-loss + ½‖w‖²: the same optimum as mean log-loss + l2/(2n)‖w‖²
    # with C = 1 / l2
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit(x, y)
    assert np.allclose(w, ref.coef_[0], atol=1e-5)
    assert b == pytest.approx(ref.intercept_[0], abs=1e-5)


def test_auroc_is_the_rank_statistic_ties_counted_half():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(200), 1)  # many ties
    labels = rng.random(200) < 0.4
    assert conf.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert conf.auroc([0.1, 0.9], [False, True]) == 1.0
    assert conf.auroc([0.5, 0.5], [False, True]) == 0.5
    with pytest.raises(ValueError, match="both positives and negatives"):
        conf.auroc([0.1, 0.2], [True, True])


def test_calibration_error_is_zero_when_probabilities_match_frequencies():
    p = np.array([0.25] * 4 + [0.75] * 4)
    outcome = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert conf.calibration_error(p, outcome) == pytest.approx(0.0)
    assert conf.calibration_error([0.9] * 4, [0, 0, 0, 0]) == pytest.approx(0.9)


def _rows(n, rng):
    """Feature rows where the mean log-probability decides acceptability (chrF)."""
    rows, chrf = [], []
    for _ in range(n):
        lp = rng.uniform(-3, 0)
        rows.append({name: rng.normal() for name in conf.FEATURES} | {"mean_logprob": lp})
        chrf.append(80 if lp + rng.normal(scale=0.4) > -1.5 else 20)
    return rows, chrf


def test_a_fitted_model_separates_and_survives_metadata():
    rng = np.random.default_rng(2)
    rows, chrf = _rows(400, rng)
    model = conf.fit(rows, chrf, "toy")
    held_rows, held_chrf = _rows(400, rng)
    report = conf.report(model, held_rows, held_chrf)
    assert report["auroc"] > 0.9 and report["ece"] < 0.08, report
    back = conf.ConfidenceModel.from_dict(model.to_dict())
    assert back == model
    assert np.allclose(back.predict(held_rows[:5]), model.predict(held_rows[:5]))
    # the weight of the deciding feature dominates
    weights = dict(zip(model.names, model.weights, strict=True))
    assert abs(weights["mean_logprob"]) > 3 * max(
        abs(v) for k, v in weights.items() if k != "mean_logprob"
    )


def test_all_unacceptable_gives_a_low_constant_not_a_diverged_fit():
    rng = np.random.default_rng(3)
    rows, _ = _rows(50, rng)
    model = conf.fit(rows, [5.0] * 50)
    p = model.predict(rows)
    assert np.allclose(p, 0.5 / 51) and all(w == 0 for w in model.weights)


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"names": ["mean_logprob"], "mean": [0], "scale": [1], "weights": [1]},  # no bias
        {"names": ["nonsense"], "mean": [0], "scale": [1], "weights": [1], "bias": 0},
        {"names": ["mean_logprob"], "mean": [0, 1], "scale": [1], "weights": [1], "bias": 0},
        {"names": ["mean_logprob"], "mean": [0], "scale": [0], "weights": [1], "bias": 0},
        {"names": ["mean_logprob"], "mean": ["x"], "scale": [1], "weights": [1], "bias": 0},
        None,
    ],
)
def test_a_malformed_stored_model_is_ignored_not_fatal(broken):
    assert conf.ConfidenceModel.from_dict(broken) is None
