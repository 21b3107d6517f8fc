"""The predictor: loads exported models and answers requests. Knows nothing of gRPC.

It uses TensorFlow and SentencePiece only (not the `seq2seq` training package): an export is a
SavedModel plus `assets.extra/` (tokenizers, metadata), loaded from a TF-Serving-style
repository `<model_dir>/<task>/<version>/`, newest version first.
"""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path

import numpy as np
import sentencepiece as spm
import tensorflow as tf

from serving.errors import InvalidRequest, Limits, ModelUnavailable, VersionNotFound

PAD, UNK, SOS, EOS = 0, 1, 2, 3
TASKS = ("translate", "classify")


def versions(repository: Path) -> list[int]:
    """The complete numeric versions in a repository, oldest first (temporary folders skipped)."""
    if not repository.is_dir():
        return []
    found = []
    for p in repository.iterdir():
        if (
            p.name.isdigit()
            and (p / "saved_model.pb").exists()
            and (p / "assets.extra" / "metadata.json").exists()
        ):
            found.append(int(p.name))
    return sorted(found)


def _pad(rows: list[list[int]]) -> np.ndarray:
    width = max(1, max(len(r) for r in rows))
    out = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class LoadedModel:
    """One exported version: the SavedModel, its tokenizers and metadata."""

    def __init__(self, path: Path):
        self.path = Path(path)
        extra = self.path / "assets.extra"
        self.metadata = json.loads((extra / "metadata.json").read_text())
        self.task = self.metadata["task"]
        self.version = int(self.metadata.get("version", self.path.name))
        self.module = tf.saved_model.load(str(self.path))
        if self.task == "translate":
            self.source = spm.SentencePieceProcessor(model_file=str(extra / "source.spm"))
            self.target = spm.SentencePieceProcessor(model_file=str(extra / "target.spm"))
            self.max_input_tokens = int(self.metadata.get("max_source_tokens", 200))
        else:
            self.source = spm.SentencePieceProcessor(model_file=str(extra / "tokenizer.spm"))
            self.labels = list(self.metadata["labels"])
            self.max_input_tokens = int(self.metadata.get("max_tokens", 256))

    def encode(self, texts: list[str]) -> np.ndarray:
        return _pad([ids[: self.max_input_tokens] or [UNK] for ids in self.source.encode(texts)])

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if EOS in ids:
            ids = ids[: ids.index(EOS)]
        return self.target.decode([i for i in ids if i > EOS])

    def translate(self, texts, beam_size, n_best, max_length, length_penalty):
        src = tf.constant(self.encode(texts))
        if beam_size == 1:
            out = self.module.translate_greedy(src, tf.constant(max_length, tf.int32))
            ids, scores = out["ids"].numpy()[:, None], out["scores"].numpy()[:, None]
        else:
            out = self.module.translate_beam(
                src,
                tf.constant(beam_size, tf.int32),
                tf.constant(max_length, tf.int32),
                tf.constant(length_penalty, tf.float32),
            )
            ids, scores = out["ids"].numpy(), out["scores"].numpy()
        return [
            [(self.decode(ids[i, j]), float(scores[i, j])) for j in range(n_best)]
            for i in range(len(texts))
        ]

    def classify(self, texts):
        probs = self.module.classify(tf.constant(self.encode(texts)))["probabilities"].numpy()
        return [
            (
                self.labels[int(p.argmax())],
                [(name, float(v)) for name, v in zip(self.labels, p, strict=True)],
            )
            for p in probs
        ]

    def warm_up(self) -> None:
        if self.task == "translate":
            self.translate(["hola"], 1, 1, 4, 0.0)
            self.translate(["hola"], 2, 1, 4, 0.0)
        else:
            self.classify(["hello"])

    def describe(self) -> dict:
        m = self.metadata
        scores = {}
        ev = m.get("eval") or {}
        for key in ("beam", "greedy"):
            if isinstance(ev.get(key), dict):
                scores.update(
                    {f"{key}_{k}": float(v) for k, v in ev[key].items() if k in ("bleu", "chrf")}
                )
        if isinstance(ev.get("rnn"), dict):
            scores.update({k: float(ev["rnn"][k]) for k in ("accuracy", "macro_f1")})
        return {
            "task": self.task,
            "version": self.version,
            "source_language": m.get("source_language", ""),
            "target_language": m.get("target_language", ""),
            "labels": m.get("labels", []),
            "source_vocab_size": int(m.get("source_vocab_size", m.get("vocab_size", 0))),
            "target_vocab_size": int(m.get("target_vocab_size", 0)),
            "eval_scores": scores,
            "dataset": m.get("dataset") or m.get("config", {}).get("data", {}).get("dataset", ""),
            "default_max_length": int(m.get("default_max_length", 48)),
            "default_length_penalty": float(m.get("default_length_penalty", 0.6)),
        }


def _check_texts(texts, limits: Limits) -> list[str]:
    if not isinstance(texts, (list, tuple)) or not texts:
        raise InvalidRequest("texts is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise InvalidRequest(f"too many texts: {len(texts)} > max_texts {limits.max_texts}")
    clean = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidRequest(f"texts[{i}] is not a string")
        if len(text) > limits.max_text_chars:
            raise InvalidRequest(
                f"texts[{i}] has {len(text)} characters > max_text_chars {limits.max_text_chars}"
            )
        if not text.strip():
            raise InvalidRequest(f"texts[{i}] is empty or only whitespace")
        bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r"]
        if bad:
            raise InvalidRequest(
                f"texts[{i}] contains control character U+{ord(bad[0]):04X}; send plain text"
            )
        clean.append(" ".join(unicodedata.normalize("NFC", text).split()))
    return clean


class Predictor:
    """Serves the newest version of each task found under `model_dir`.

    Args:
        model_dir: the model repository root (holding translate/ and classify/).
        limits: request limits.
    """

    def __init__(self, model_dir: str | Path = "models", limits: Limits | None = None):
        self.model_dir = Path(model_dir)
        self.limits = limits or Limits()
        self.models: dict[str, LoadedModel] = {}
        for task in TASKS:
            found = versions(self.model_dir / task)
            if found:
                model = LoadedModel(self.model_dir / task / str(found[-1]))
                model.warm_up()
                self.models[task] = model

    def _model(self, task: str, version: int | None) -> LoadedModel:
        model = self.models.get(task)
        if model is None:
            raise ModelUnavailable(
                f"no {task} model is loaded: export one into {self.model_dir / task}/<version>/ "
                f"(make export-{task}) and restart the server"
            )
        if version is not None and version != model.version:
            raise VersionNotFound(
                f"{task} model version {version} is not loaded (serving version {model.version})"
            )
        return model

    def translate(
        self,
        texts,
        beam_size=None,
        n_best=None,
        max_length=None,
        length_penalty=None,
        model_version=None,
    ):
        """For each text, n_best (text, score) hypotheses; returns (results, version)."""
        lim = self.limits
        beam_size = 1 if beam_size is None else beam_size
        n_best = 1 if n_best is None else n_best
        if not 1 <= beam_size <= lim.max_beam_size:
            raise InvalidRequest(
                f"beam_size must be in [1, max_beam_size {lim.max_beam_size}], got {beam_size}"
            )
        if not 1 <= n_best <= min(beam_size, lim.max_n_best):
            raise InvalidRequest(
                f"n_best must be in [1, beam_size {beam_size}] (max_n_best "
                f"{lim.max_n_best}), got {n_best}"
            )
        if max_length is not None and not 1 <= max_length <= lim.max_output_length:
            raise InvalidRequest(
                f"max_length must be in [1, max_output_length "
                f"{lim.max_output_length}], got {max_length}"
            )
        if length_penalty is not None and not (
            math.isfinite(length_penalty) and 0.0 <= length_penalty <= 2.0
        ):
            raise InvalidRequest(f"length_penalty must be in [0, 2], got {length_penalty}")
        texts = _check_texts(texts, lim)
        model = self._model("translate", model_version)
        info = model.describe()
        max_length = max_length or min(info["default_max_length"], lim.max_output_length)
        alpha = info["default_length_penalty"] if length_penalty is None else length_penalty
        return model.translate(texts, beam_size, n_best, max_length, alpha), model.version

    def classify(self, texts, model_version=None):
        """For each text, (label, [(label, probability), …]); returns (results, version)."""
        texts = _check_texts(texts, self.limits)
        model = self._model("classify", model_version)
        return model.classify(texts), model.version

    def metadata(self, task: str | None = None) -> list[dict]:
        if task is not None and task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}")
        return [m.describe() for t, m in self.models.items() if task in (None, t)]
