"""Calibrated probabilities: temperature scaling (Guo et al. 2017, "On Calibration of Modern
Neural Networks") and the expected calibration error. numpy only.

A classifier trained to a low loss is overconfident: its softmax says 1.000 where it is right
four times in five. Temperature scaling divides the logits by one number T > 0, fitted on the
validation split to minimise the negative log-likelihood. It cannot change any argmax, so
accuracy is unchanged; only the probabilities move.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15  # as Guo et al.
T_RANGE = (0.05, 100.0)  # the temperatures fit_temperature searches
MIN_TEXTS = 50  # fewer validation texts than this: no temperature is fitted


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(logits, temperature))


def nll(logits: np.ndarray, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under softmax(logits / temperature)."""
    labels = np.asarray(labels)
    return float(-log_softmax(logits, temperature)[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels, steps: int = 60) -> float:
    """The temperature T minimising nll(logits, labels, T), within T_RANGE.

    With β = 1/T the NLL is convex in β, and its derivative is the mean over examples of
    E_p[z] − z_label (p = softmax(β z)), which only grows with β; bisection on its sign finds the
    minimum (in log β, to the precision of `steps` halvings).
    """
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need (N, C) logits and N labels, N ≥ 1; got {logits.shape} and {len(labels)}"
        )
    true_logit = logits[np.arange(len(labels)), labels]

    def slope(log_beta: float) -> float:
        p = softmax(logits * np.exp(log_beta))
        return float(((p * logits).sum(axis=1) - true_logit).mean())

    lo, hi = np.log(1 / T_RANGE[1]), np.log(1 / T_RANGE[0])
    if slope(lo) >= 0:  # the NLL grows from the smallest β: the largest temperature
        return T_RANGE[1]
    if slope(hi) <= 0:  # still falling at the largest β: the smallest temperature
        return T_RANGE[0]
    for _ in range(steps):
        mid = (lo + hi) / 2
        if slope(mid) < 0:
            lo = mid
        else:
            hi = mid
    return float(1 / np.exp((lo + hi) / 2))


def reliability(probs: np.ndarray, labels, bins: int = ECE_BINS):
    """Per non-empty confidence bin (equal widths over [0, 1]): (mean confidence, accuracy,
    size), as lists; the confidence is the probability of the predicted label."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)  # bin i: [i/bins, (i+1)/bins)
    centers, observed, sizes = [], [], []
    for b in range(bins):
        inside = which == b
        if inside.any():
            centers.append(float(confidence[inside].mean()))
            observed.append(float(correct[inside].mean()))
            sizes.append(int(inside.sum()))
    return centers, observed, sizes


def expected_calibration_error(probs: np.ndarray, labels, bins: int = ECE_BINS) -> float:
    """ECE: the gap between confidence and accuracy in each bin, weighted by the bin's share."""
    centers, observed, sizes = reliability(probs, labels, bins)
    gaps = [n * abs(c - o) for c, o, n in zip(centers, observed, sizes, strict=True)]
    return float(sum(gaps) / sum(sizes))


def summary(logits: np.ndarray, labels, temperature: float) -> dict:
    """NLL and ECE before (T = 1) and after temperature scaling, for eval.json."""
    return {
        "temperature": round(float(temperature), 4),
        "ece_bins": ECE_BINS,
        "ece_before": round(expected_calibration_error(softmax(logits), labels), 4),
        "ece_after": round(expected_calibration_error(softmax(logits, temperature), labels), 4),
        "nll_before": round(nll(logits, labels), 4),
        "nll_after": round(nll(logits, labels, temperature), 4),
        "texts": len(labels),
    }
