"""The classification scores agree with scikit-learn's, class by class."""

import numpy as np
import pytest
from sklearn import metrics

from seq2seq.evaluation import classification_scores


@pytest.mark.parametrize("seed", range(5))
def test_classification_scores_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = ["neg", "neutral", "pos", "never-predicted", "absent"]
    y_true = rng.integers(0, 4, 200).tolist()  # "absent" has no example
    y_pred = [t if rng.random() < 0.6 and t < 3 else int(rng.integers(0, 3)) for t in y_true]
    got = classification_scores(y_true, y_pred, labels)
    every = list(range(len(labels)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=every, zero_division=0
    )
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred), abs=1e-4)
    want_macro = metrics.f1_score(y_true, y_pred, labels=every, average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(want_macro, abs=1e-4)
    for i, name in enumerate(labels):
        row = got["per_class"][name]
        assert row["precision"] == pytest.approx(precision[i], abs=1e-4)
        assert row["recall"] == pytest.approx(recall[i], abs=1e-4)
        assert row["f1"] == pytest.approx(f1[i], abs=1e-4)
        assert row["support"] == support[i]
    want_matrix = metrics.confusion_matrix(y_true, y_pred, labels=every).tolist()
    assert got["confusion_matrix"]["rows_true_cols_predicted"] == want_matrix
    assert got["per_class"]["never-predicted"]["precision"] == 0.0  # nothing predicted: 0, no error
    assert got["examples"] == 200
