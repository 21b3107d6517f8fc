"""Scores: sacreBLEU and chrF, and the names test, for translation; accuracy, macro-F1,
per-class precision/recall and the confusion matrix for classification."""

from __future__ import annotations

import sacrebleu

from seq2seq.words import WORD


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


def sentence_chrf(hypotheses: list[str], references: list[list[str]]) -> list[float]:
    """chrF of each sentence against its references (what "acceptable" is judged by)."""
    metric = sacrebleu.CHRF()
    return [
        metric.sentence_score(h, list(r)).score for h, r in zip(hypotheses, references, strict=True)
    ]


def pass_through_tokens(source: str, references: list[str]) -> list[str]:
    """The tokens of `source` a translation must carry over unchanged: numbers, and capitalised
    words not at the start of the sentence (names), that also appear in every reference."""
    words = WORD.findall(source)
    candidates = [
        w for i, w in enumerate(words) if any(c.isdigit() for c in w) or (i > 0 and w[0].isupper())
    ]
    in_refs = [set(WORD.findall(r)) for r in references]
    return [w for w in dict.fromkeys(candidates) if all(w in ref for ref in in_refs)]


def names_kept(sources: list[str], references: list[list[str]], hypotheses: list[str]) -> dict:
    """The names test: of the pass-through tokens (see pass_through_tokens) of every sentence
    that has any, the share found as a token in its hypothesis."""
    tokens = kept = sentences = 0
    missed = []
    for source, refs, hyp in zip(sources, references, hypotheses, strict=True):
        must = pass_through_tokens(source, refs)
        if not must:
            continue
        sentences += 1
        found = set(WORD.findall(hyp))
        tokens += len(must)
        kept += sum(w in found for w in must)
        missed += [w for w in must if w not in found]
    return {
        "kept": round(kept / tokens, 4) if tokens else None,
        "tokens": tokens,
        "sentences": sentences,
        "missed": sorted(set(missed))[:20],
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
