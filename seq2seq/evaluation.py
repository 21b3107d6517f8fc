"""Scores: sacreBLEU and chrF for translation; accuracy, macro-F1, per-class precision/recall
and the confusion matrix for classification."""

from __future__ import annotations

import sacrebleu


def translation_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU and chrF. `references[i]` holds every reference of sentence i."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    most = max((len(r) for r in references), default=1)
    # One stream per reference position; a sentence with fewer references has None there,
    # which sacreBLEU skips (its signature then reads nrefs:var).
    streams = [[r[j] if j < len(r) else None for r in references] for j in range(most)]
    bleu_metric, chrf_metric = sacrebleu.BLEU(), sacrebleu.CHRF()
    bleu = bleu_metric.corpus_score(hypotheses, streams)
    chrf = chrf_metric.corpus_score(hypotheses, streams)
    return {
        "bleu": round(bleu.score, 2),
        "chrf": round(chrf.score, 2),
        "bleu_signature": str(bleu_metric.get_signature()),
        "chrf_signature": str(chrf_metric.get_signature()),
        "sentences": len(hypotheses),
    }


def classification_scores(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows: true label, columns: predicted label, in the order of `labels`)."""
    n = len(labels)
    matrix = [[0] * n for _ in range(n)]
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[t][p] += 1
    per_class = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = matrix[i][i]
        predicted = sum(matrix[r][i] for r in range(n))
        actual = sum(matrix[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[name] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": actual,
        }
    total = len(y_true)
    return {
        "accuracy": round(sum(matrix[i][i] for i in range(n)) / total, 4) if total else 0.0,
        "macro_f1": round(sum(f1s) / n, 4),
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_true_cols_predicted": matrix},
        "examples": total,
    }
