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


def test_chrf_is_sacrebleus_character_f_score_and_orders_hypotheses():
    from seq2seq.evaluation import translation_scores

    refs = [["The cat sat on the mat."], ["I like green tea."]]
    same = translation_scores(["The cat sat on the mat.", "I like green tea."], refs)
    assert same["chrf"] == 100.0 and same["bleu"] == 100.0
    close = translation_scores(["The cat sat on a mat.", "I like green tea."], refs)
    far = translation_scores(["A dog ran.", "Coffee."], refs)
    assert 100.0 > close["chrf"] > far["chrf"] > 0.0
    # character n-grams: a near-miss spelling still earns most of the score, unlike BLEU
    typo = translation_scores(["The cat sat on the matt.", "I like grene tea."], refs)
    assert typo["chrf"] > 80.0 and typo["chrf"] > typo["bleu"]
    assert typo["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no")
    # the value is sacreBLEU's corpus chrF (character 6-grams, β = 2), rounded to 2 places
    import sacrebleu

    hyps = ["The cat sat on the matt.", "I like grene tea."]
    want = sacrebleu.CHRF().corpus_score(hyps, [[r[0] for r in refs]]).score
    assert typo["chrf"] == round(want, 2)
