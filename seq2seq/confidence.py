"""How likely is a translation to be acceptable? A probability fitted on the validation split.

A hypothesis's log-probability cannot say it: English input scores better than real Spanish,
and its scale moves with the length penalty. What can is a small logistic regression over what
the decoder shows while it translates (`features`): the mean log-probability per piece, how
much of the source the attention covered and whether it dwelt on one piece, the length ratio,
whether the output ended, the share of byte-fallback (unknown) characters in the source, the
source length, the share of output pieces copied from the source, and how much of the output
repeats itself. Its target is "acceptable": the sentence's chrF against the reference is at
least `ACCEPTABLE_CHRF`. An output cut at max_length is given no chance at all (0,
`seq2seq.answers`): it never ended, so it is no whole translation, and the validation split,
where none is cut, cannot teach the model that.

It is fitted at export on the validation split, decoded exactly as the server decodes (the
model's default beam, with alignment), and stored in the export's metadata (`ConfidenceModel`,
a few numbers: the server needs numpy only). Evaluation reports its AUROC on the test split
(acceptable against chrF below `POOR_CHRF`, as the issue that asked for it put it) and its
expected calibration error. numpy only.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

ACCEPTABLE_CHRF = 50.0  # a translation with sentence chrF ≥ this is "acceptable"
POOR_CHRF = 30.0  # AUROC: acceptable ones against those below this
LOW = 0.5  # a probability below this earns the low_confidence warning
ECE_BINS = 10
_BYTE = re.compile(r"^<0x[0-9A-F]{2}>$")
_PUNCT = re.compile(r"^\W*$")

FEATURES = (
    "mean_logprob",  # log-probability per output piece (EOS included)
    "coverage",  # mean over source pieces of min(1, the attention they received)
    "dwell",  # log(1 + the most attention one source piece received)
    "length_ratio",  # log((output pieces + 1) / (source pieces + 1))
    "no_eos",  # 1: the output stopped at max_length without ending
    "byte_share",  # share of the source pieces that are byte-fallback pieces
    "source_pieces",  # log(1 + source pieces)
    "copied_share",  # share of the output's word pieces that appear in the source
    "repeats",  # share of the output pieces that repeat the three before them somewhere earlier
)
WITHOUT_ATTENTION = ("coverage", "dwell")


def features(
    source_tokens, target_tokens, alignment, score: float, length_penalty: float
) -> dict[str, float]:
    """The features of one hypothesis (its pieces as produced, "<eos>" included when it
    ended; alignment rows over the source pieces, or () without attention; its score as the
    decoder gave it: length-normalised by GNMT's penalty with `length_penalty` as alpha)."""
    produced = len(target_tokens)
    ended = produced > 0 and target_tokens[-1] == "<eos>"
    length = max(produced, 1)
    raw = score * ((5.0 + length) / 6.0) ** length_penalty
    words = [p for p in target_tokens if p != "<eos>" and not _PUNCT.match(p.lstrip("\u2581"))]
    source_set = {p.lstrip("\u2581") for p in source_tokens}
    out = {
        "mean_logprob": raw / length,
        "length_ratio": math.log((produced - ended + 1) / (len(source_tokens) + 1)),
        "no_eos": 0.0 if ended else 1.0,
        "byte_share": sum(bool(_BYTE.match(p)) for p in source_tokens) / max(1, len(source_tokens)),
        "source_pieces": math.log1p(len(source_tokens)),
        "copied_share": sum(p.lstrip("\u2581") in source_set for p in words) / max(1, len(words)),
        "repeats": _repeats([p for p in target_tokens if p != "<eos>"]),
    }
    if len(alignment):
        received = np.asarray(alignment, np.float64).sum(axis=0)  # per source piece
        out["coverage"] = float(np.minimum(received, 1.0).mean())
        out["dwell"] = float(np.log1p(received.max()))
    return out


def _repeats(pieces: list[str], n: int = 3) -> float:
    """Share of the pieces that end an n-gram seen earlier in the output (a decoder in a loop:
    "the last train had already left, the last train had already left, …")."""
    seen, repeated = set(), 0
    for i in range(n - 1, len(pieces)):
        gram = tuple(pieces[i - n + 1 : i + 1])
        repeated += gram in seen
        seen.add(gram)
    return repeated / max(1, len(pieces))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))


@dataclass(frozen=True)
class ConfidenceModel:
    """P(acceptable) = sigmoid(bias + Σ weights · (x − mean) / scale) over `names`."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    acceptable_chrf: float = ACCEPTABLE_CHRF
    fitted_on: str = ""

    def matrix(self, rows: list[dict]) -> np.ndarray:
        return np.array([[r[n] for n in self.names] for r in rows], np.float64).reshape(
            len(rows), len(self.names)
        )

    def predict(self, rows: list[dict]) -> np.ndarray:
        """P(acceptable) for feature rows (dicts from `features`)."""
        x = (self.matrix(rows) - np.array(self.mean)) / np.array(self.scale)
        return sigmoid(x @ np.array(self.weights) + self.bias)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d) -> ConfidenceModel | None:
        """The model stored in an export's metadata; None if absent or malformed (an export
        without one answers without a confidence)."""
        try:
            names = tuple(str(n) for n in d["names"])
            vectors = [tuple(float(v) for v in d[k]) for k in ("mean", "scale", "weights")]
            if any(len(v) != len(names) for v in vectors) or not set(names) <= set(FEATURES):
                return None
            if not all(s > 0 for s in vectors[1]):
                return None
            return cls(
                names,
                *vectors,
                float(d["bias"]),
                float(d.get("acceptable_chrf", ACCEPTABLE_CHRF)),
                str(d.get("fitted_on", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50):
    """Weights and bias minimising the mean log-loss + l2/(2n)·‖w‖² (the bias unpenalised), by
    Newton's method: the loss is convex, so a few steps reach its minimum."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2 / n)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = sigmoid(xb @ theta)
        grad = xb.T @ (p - y) / n + penalty * theta
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / n + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return theta[:-1], float(theta[-1])


def fit(rows: list[dict], chrf: list[float], fitted_on: str = "") -> ConfidenceModel:
    """A ConfidenceModel from feature rows and their sentences' chrF (the features every row
    has: without attention, no coverage or dwell)."""
    if len(rows) < 20:
        raise ValueError(f"need at least 20 sentences to fit a confidence, got {len(rows)}")
    names = tuple(n for n in FEATURES if all(n in r for r in rows))
    x = np.array([[r[n] for n in names] for r in rows], np.float64)
    y = (np.asarray(chrf) >= ACCEPTABLE_CHRF).astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a constant feature (no byte pieces in the split): weight ~0
    if y.min() == y.max():  # all acceptable or none (an early version): (k + ½) / (n + 1)
        w, b = np.zeros(len(names)), float(np.log((y.sum() + 0.5) / (len(y) - y.sum() + 0.5)))
    else:
        w, b = fit_logistic((x - mean) / scale, y)
    return ConfidenceModel(
        names,
        tuple(float(v) for v in mean),
        tuple(float(v) for v in scale),
        tuple(float(v) for v in w),
        b,
        ACCEPTABLE_CHRF,
        fitted_on,
    )


def auroc(scores, positive) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative (ties count half), by the rank-sum (Mann–Whitney) statistic."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positives and negatives")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def calibration_error(p, outcome, bins: int = ECE_BINS) -> float:
    """Expected calibration error of probabilities `p` of a yes/no `outcome`: per bin of p
    (equal widths), |mean p − share of yes|, weighted by the bin's share."""
    p = np.asarray(p, np.float64)
    outcome = np.asarray(outcome, np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    gap = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            gap += inside.sum() * abs(p[inside].mean() - outcome[inside].mean())
    return float(gap / len(p))


def report(model: ConfidenceModel, rows: list[dict], chrf: list[float]) -> dict:
    """How well `model` separates and is calibrated on held-out sentences."""
    chrf = np.asarray(chrf, np.float64)
    p = model.predict(rows)
    acceptable = chrf >= ACCEPTABLE_CHRF
    clear = acceptable | (chrf < POOR_CHRF)
    return {
        "sentences": len(rows),
        "acceptable_share": round(float(acceptable.mean()), 4),
        "auroc": round(auroc(p[clear], acceptable[clear]), 4),
        "auroc_all": round(auroc(p, acceptable), 4),
        "ece": round(calibration_error(p, acceptable), 4),
        "low_share": round(float((p < LOW).mean()), 4),
        "mean_probability": round(float(p.mean()), 4),
    }
