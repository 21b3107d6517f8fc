"""Texts in, texts out: the one inference path of each task, and a loaded export.

`TextTranslator` and `TextClassifier` normalise → tokenize → pad → call the model's serving
functions → detokenize. The functions are either a trained model's own (`from_model`: what
training validation, `make eval-*` and `python -m seq2seq translate/classify` use) or the same
functions read back from an exported SavedModel (`ExportedModel`: what the server and the CLI's
`--model` use). TensorFlow and SentencePiece only: no Keras, nothing from training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from seq2seq import answers
from seq2seq import export_format as fmt
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.language import guess


class Hypothesis(NamedTuple):
    text: str
    score: float  # log-probability; length-normalised under beam search
    # with alignment or pieces (else empty): the source pieces, the output pieces as produced
    # ("<eos>" included when produced); with alignment only: per output piece its attention
    # over the source pieces (len(target_tokens) rows of len(source_tokens)), and per output
    # word the source word it attends to most
    source_tokens: tuple[str, ...] = ()
    target_tokens: tuple[str, ...] = ()
    alignment: tuple[tuple[float, ...], ...] = ()
    word_alignment: tuple[tuple[str, str], ...] = ()
    ended: bool = True  # False: the output stopped at max_length without producing EOS


class NoAlignment(ValueError):
    """Alignment was asked of a translator without attention."""


class NoLogits(ValueError):
    """Logits were asked of a classifier exported before they were part of its signature."""


class Classification(NamedTuple):
    label: str
    probabilities: dict[str, float]  # every label, in the model's label order


def _compiled(functions: dict) -> dict:
    """A model's {name: (function, input signature)} as tf.functions (traced once each)."""
    return {
        name: tf.function(fn, input_signature=signature)
        for name, (fn, signature) in functions.items()
    }


class TextTranslator:
    """Batched text → n-best translations.

    Args:
        functions: {"translate_greedy": fn, "translate_beam": fn} with the export signatures.
        source, target: the tokenizers.
        defaults: the Decoding used for settings a call leaves out.
        max_input_tokens: longer inputs are cut.
        model: what owns the functions' variables (the Keras model, or the loaded SavedModel),
            kept alive with them.
    """

    def __init__(
        self,
        functions,
        source: Tokenizer,
        target: Tokenizer,
        defaults: fmt.Decoding,
        max_input_tokens: int = fmt.MAX_INPUT_TOKENS["translate"],
        model=None,
    ):
        self.functions, self.source, self.target = functions, source, target
        self.defaults, self.max_input_tokens, self.model = defaults, max_input_tokens, model

    @classmethod
    def from_model(cls, model, source: Tokenizer, target: Tokenizer, defaults) -> TextTranslator:
        return cls(_compiled(model.serving_functions()), source, target, defaults, model=model)

    def settings(self, beam_size=None, max_length=None, length_penalty=None) -> fmt.Decoding:
        """The Decoding for a call: the given settings over the defaults (ValueError if bad)."""
        return self.defaults.override(beam_size, max_length, length_penalty)

    def translate(
        self,
        texts: list[str],
        beam_size: int | None = None,
        n_best: int = 1,
        max_length: int | None = None,
        length_penalty: float | None = None,
        batch_size: int | None = 64,
        progress: bool = False,
        alignment: bool = False,
    ) -> list[list[Hypothesis]]:
        """For each text, the n best hypotheses, best first (unset settings: the defaults).

        `n_best` may not exceed the beam size. Texts are normalised, sorted by length and run
        `batch_size` at a time (None: all at once); results come back in the order given.
        `alignment` fills the hypotheses' token and alignment fields (NoAlignment if the model
        has no attention).
        """
        decoding = self.settings(beam_size, max_length, length_penalty)
        return self.run(texts, decoding, n_best, batch_size, progress, alignment)

    @property
    def has_alignment(self) -> bool:
        return fmt.GREEDY_ALIGNED in self.functions

    def run(
        self,
        texts: list[str],
        decoding: fmt.Decoding,
        n_best: int = 1,
        batch_size: int | None = 64,
        progress: bool = False,
        alignment: bool = False,
        pieces: bool = False,
    ) -> list[list[Hypothesis]]:
        """`translate` with the settings already resolved (the server runs a batch of requests
        that share one Decoding this way); `pieces`: the source and output pieces even without
        alignment (what a confidence is computed from)."""
        if alignment and not self.has_alignment:
            raise NoAlignment(
                "this translation model has no attention, so it has no alignment to give "
                "(train one with model.attention=luong)"
            )
        if isinstance(n_best, bool) or not isinstance(n_best, (int, np.integer)) or n_best < 1:
            raise ValueError(f"n_best must be an integer ≥ 1, got {n_best!r}")
        if n_best > decoding.beam_size:
            raise ValueError(f"n_best ({n_best}) must not exceed beam_size ({decoding.beam_size})")
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
        texts = [fmt.normalize(t) for t in texts]
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together
        step = batch_size or max(1, len(texts))
        chunks = [order[i : i + step] for i in range(0, len(order), step)]
        results: list = [None] * len(texts)
        for chunk in tqdm(chunks, desc="translating", disable=not progress, unit=" batch"):
            src = fmt.input_ids(
                self.source.encode_batch([texts[i] for i in chunk]), self.max_input_tokens
            )
            out = self._decode(src, decoding, alignment)
            ids, scores = out["ids"], out["scores"]
            for row, i in enumerate(chunk):
                results[i] = [
                    Hypothesis(
                        self.target.decode(ids[row, j]),
                        float(scores[row, j]),
                        ended=fmt.EOS in ids[row, j],
                    )
                    if not (alignment or pieces)
                    else self._aligned(
                        src[row],
                        ids[row, j],
                        scores[row, j],
                        out["alignment"][row, j] if alignment else None,
                    )
                    for j in range(n_best)
                ]
        return results

    def _decode(self, src: np.ndarray, decoding: fmt.Decoding, alignment: bool) -> dict:
        """ids (B, K, L), scores (B, K) [, alignment (B, K, L, S)], K = 1 under greedy search."""
        src = tf.constant(src)
        max_length = tf.constant(decoding.max_length, tf.int32)
        if decoding.greedy:
            fn = self.functions[fmt.GREEDY_ALIGNED if alignment else fmt.GREEDY]
            return {k: v.numpy()[:, None] for k, v in fn(src, max_length).items()}
        fn = self.functions[fmt.BEAM_ALIGNED if alignment else fmt.BEAM]
        out = fn(
            src,
            tf.constant(decoding.beam_size, tf.int32),
            max_length,
            tf.constant(decoding.length_penalty, tf.float32),
        )
        return {k: v.numpy() for k, v in out.items()}

    def _aligned(self, source_row, ids, score, weights) -> Hypothesis:
        """A hypothesis with its pieces, and its alignment (rows cut to the real source
        pieces) unless `weights` is None."""
        source = [int(i) for i in source_row if i != fmt.PAD]
        produced = fmt.produced_ids(ids)
        source_tokens = tuple(self.source.pieces(source))
        target_tokens = tuple(self.target.pieces(produced))
        rows, words = (), ()
        if weights is not None:
            rows = tuple(
                tuple(float(w) for w in weights[t, : len(source)]) for t in range(len(produced))
            )
            words = tuple(fmt.word_alignment(list(source_tokens), list(target_tokens), rows))
        return Hypothesis(
            self.target.decode(ids),
            float(score),
            source_tokens,
            target_tokens,
            rows,
            words,
            ended=fmt.EOS in produced,
        )


class TextClassifier:
    """Batched text → label and probabilities.

    Args:
        functions: {"classify": fn} with the export signature.
        tokenizer: the tokenizer.
        labels: label names in the model's output order.
        max_input_tokens: longer inputs are cut.
        model: what owns the functions' variables (the Keras model, or the loaded SavedModel),
            kept alive with them.
        temperature: the one the functions' probabilities are calibrated with (for reports;
            the functions apply it).
    """

    def __init__(
        self,
        functions,
        tokenizer: Tokenizer,
        labels: list[str],
        max_input_tokens: int = fmt.MAX_INPUT_TOKENS["classify"],
        model=None,
        temperature: float = 1.0,
    ):
        self.functions, self.tokenizer, self.labels = functions, tokenizer, list(labels)
        self.max_input_tokens, self.model = max_input_tokens, model
        self.temperature = temperature

    @classmethod
    def from_model(
        cls, model, tokenizer: Tokenizer, labels: list[str], temperature: float = 1.0
    ) -> TextClassifier:
        """Around a trained Keras model; `temperature` calibrates its probabilities."""
        functions = _compiled(model.serving_functions(temperature))
        return cls(functions, tokenizer, labels, model=model, temperature=temperature)

    def run(self, texts: list[str], outputs=("probabilities",), batch_size: int | None = 128):
        """For each name in `outputs` ("probabilities", calibrated; "logits", before any
        temperature), a (len(texts), len(labels)) array, from one pass of `batch_size` texts
        per call (None: all). Exports from before calibration have no logits: NoLogits."""
        out = [np.zeros((len(texts), len(self.labels)), np.float32) for _ in outputs]
        step = batch_size or max(1, len(texts))
        for start in range(0, len(texts), step):
            chunk = [fmt.normalize(t) for t in texts[start : start + step]]
            rows = self.tokenizer.encode_batch(chunk)
            ids = tf.constant(fmt.input_ids(rows, self.max_input_tokens))
            answer = self.functions[fmt.CLASSIFY](ids)
            for name, array in zip(outputs, out, strict=True):
                if name not in answer:
                    raise NoLogits(
                        f"this model's classify function returns no {name} (exported before "
                        "calibration: export it again)"
                    )
                array[start : start + len(chunk)] = answer[name]
        return out

    def probabilities(self, texts: list[str], batch_size: int | None = 128) -> np.ndarray:
        return self.run(texts, ("probabilities",), batch_size)[0]

    def logits(self, texts: list[str], batch_size: int | None = 128) -> np.ndarray:
        return self.run(texts, ("logits",), batch_size)[0]

    def classify(self, texts: list[str], batch_size: int | None = 128) -> list[Classification]:
        return [
            Classification(
                self.labels[int(p.argmax())],
                {name: float(v) for name, v in zip(self.labels, p, strict=True)},
            )
            for p in self.probabilities(texts, batch_size)
        ]


class _NoGradientWarning(logging.Filter):
    """Exports leave out custom gradients on purpose (serving needs none, and loading them
    would register every version's functions in a global registry forever); TensorFlow warns
    about it at each load."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "unsaved custom gradients" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoGradientWarning())


class ExportedModel:
    """One exported version folder, loaded: its SavedModel, tokenizers and metadata.

    `runner` is its TextTranslator or TextClassifier, `checks` what its answers are checked
    against (seq2seq.answers); the folder name is the version (as in TF Serving: a copied
    export takes its new name; a folder not named by a number is version 0).
    """

    def __init__(self, path: str | Path, task: str | None = None):
        self.path = Path(path)
        extra = self.path / fmt.ASSETS
        if not (extra / fmt.METADATA_FILE).is_file():
            raise FileNotFoundError(
                f"{self.path} is not an exported model (no {fmt.ASSETS}/{fmt.METADATA_FILE}): "
                f"give a version folder such as models/{task or 'translate'}/1"
            )
        self.metadata = json.loads((extra / fmt.METADATA_FILE).read_text())
        self.task = self.metadata.get("task")
        if self.task not in fmt.MAX_INPUT_TOKENS:
            raise ValueError(f"{self.path}: its metadata names no known task ({self.task!r})")
        if task is not None and self.task != task:
            raise ValueError(f"{self.path} is a {self.task} model, not a {task} one")
        self.version = int(self.path.name) if self.path.name.isdigit() else 0
        self.module = tf.saved_model.load(str(self.path))
        self._description = None
        if self.task == "translate":
            names = [fmt.GREEDY, fmt.BEAM]
            if self.metadata.get("alignment"):
                names += [fmt.GREEDY_ALIGNED, fmt.BEAM_ALIGNED]
            self.runner = TextTranslator(
                self._functions(names),
                Tokenizer.load(extra / fmt.SOURCE_SPM),
                Tokenizer.load(extra / fmt.TARGET_SPM),
                fmt.default_decoding(self.metadata),
                fmt.max_input_tokens(self.metadata),
                model=self.module,
            )
            self.checks = answers.TranslationChecks.from_metadata(
                self.metadata, fmt.max_input_tokens(self.metadata)
            )
        else:
            self.runner = TextClassifier(
                self._functions((fmt.CLASSIFY,)),
                Tokenizer.load(extra / fmt.TOKENIZER_SPM),
                list(self.metadata["labels"]),
                fmt.max_input_tokens(self.metadata),
                model=self.module,
                temperature=float(self.metadata.get("temperature", 1.0)),
            )
            self.checks = answers.ClassificationChecks.from_metadata(self.metadata)

    def _functions(self, names) -> dict:
        missing = [n for n in names if not hasattr(self.module, n)]
        if missing:
            raise ValueError(f"{self.path}: the SavedModel has no {', '.join(missing)} signature")
        return {n: getattr(self.module, n) for n in names}

    def warm_up(self) -> None:
        """Runs what the first requests would (greedy and beam search, with alignment too when
        the model has it, or classify, and the language check: its model loads on first use),
        so that none of them pays for the first call."""
        if self.checks.language:
            guess("hola", self.checks.language)
        if self.task == "translate":
            for alignment in (False, True) if self.runner.has_alignment else (False,):
                for beam in (1, 2):
                    self.runner.run(["hola"], fmt.Decoding(beam, 4, 0.0), alignment=alignment)
        else:
            self.runner.classify(["hello"])

    def release(self) -> None:
        """Drops the SavedModel so TensorFlow can free it (the object is unusable after)."""
        self.module = self.runner = None

    def describe(self) -> dict:
        """What GetModelMetadata reports (computed once)."""
        if self._description is None:
            self._description = fmt.describe(self.metadata, self.version)
        return self._description
