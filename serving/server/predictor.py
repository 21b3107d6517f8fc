"""The predictor: checks requests, holds the version each asks for, batches them. No gRPC.

An export is a SavedModel plus `assets.extra/` (tokenizers, metadata), kept in a
TF-Serving-style repository `<model_dir>/<task>/<version>/`; `seq2seq.inference.ExportedModel`
loads one and runs texts through it exactly as evaluation and the CLI do (TensorFlow and
SentencePiece only: no Keras, nothing from training). Which versions are loaded, and when they
are let go, is the version manager's job (`serving.server.manager`); this module validates a
request against the limits and the model (a text to classify longer than the model reads is
refused, never cut; a text to translate is split into sentences and clauses, and a part still
longer is cut with a `truncated` warning), holds the version it asked for while its texts go
through that task's batcher (`serving.server.batching`), and hands back answers that say how far
to trust them (`seq2seq.answers`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import NamedTuple

import tensorflow as tf

from seq2seq import export_format as fmt
from seq2seq.inference import ExportedModel
from serving.server import manager
from serving.server.batching import Batcher, BatchingOptions
from serving.server.errors import (
    TASKS,
    DeadlineExceeded,
    InvalidRequest,
    Limits,
    NotSupported,
)
from serving.server.manager import Served, VersionManager
from serving.server.versions import VersionPolicy

log = logging.getLogger("seq2seq.serving")


def set_tf_threads(per_call: int, batching: BatchingOptions) -> None:
    """TensorFlow's thread pools for serving (call before any model is loaded).

    A translation is a loop of small ops (a 256-wide step per token): spreading one call over
    several threads costs more in hand-offs than it gains. One thread per call, with as many
    calls at once as there are batcher threads (all tasks together), uses the cores better:
    measured on 2 cores, 2 callers × 1 thread ran about twice the sentences/s of 1 caller with
    TensorFlow's default pools. `per_call` 0 leaves TensorFlow's defaults.
    """
    if per_call > 0:
        tf.config.threading.set_intra_op_parallelism_threads(per_call)
        calls_at_once = sum(batching.threads_for(task) for task in TASKS)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, calls_at_once))


def _check_texts(texts, limits: Limits) -> list[str]:
    """The request's texts, normalised; InvalidRequest for any the server will not take."""
    if not isinstance(texts, (list, tuple)) or not texts:
        raise InvalidRequest("texts is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise InvalidRequest(f"too many texts: {len(texts)} > max_texts {limits.max_texts}")
    clean = []
    for i, text in enumerate(texts):
        # The limit holds for the text the model gets, after normalisation (NFC can make a
        # text up to three times longer: 2,000 × U+FB2C are 6,000 characters); a raw text
        # beyond three times the limit is refused before it costs a normalisation.
        if isinstance(text, str) and len(text) > 3 * limits.max_text_chars:
            raise InvalidRequest(
                f"texts[{i}] has {len(text)} characters > max_text_chars {limits.max_text_chars}"
            )
        try:
            text = fmt.check_text(text, f"texts[{i}]")
        except fmt.TextError as err:
            raise InvalidRequest(str(err)) from None
        if len(text) > limits.max_text_chars:
            raise InvalidRequest(
                f"texts[{i}] has {len(text)} characters > max_text_chars "
                f"{limits.max_text_chars} (counted once normalised: Unicode NFC, single spaces)"
            )
        clean.append(text)
    return clean


def _check_lengths(lengths: list[int], limit: int, model) -> None:
    """InvalidRequest naming the first text longer than the model reads (in SentencePiece
    pieces): the model would see only its first `limit` pieces, and an answer about part of a
    text must not pass for an answer about all of it."""
    for i, n in enumerate(lengths):
        if n > limit:
            raise InvalidRequest(
                f"texts[{i}] is {n} pieces long, over the {model.task} model's limit of {limit} "
                f"pieces (version {model.version}): the model would read only its beginning; "
                "send it in shorter parts (sentences)"
            )


class BatchKey(NamedTuple):
    """What requests must share to be answered by one model call."""

    served: Served  # the loaded version
    decoding: fmt.Decoding | None  # translation: the search (canonical); classification: None
    alignment: bool  # translation: decode with the attention alignment


class NullMetrics(manager.NullMetrics):
    """The metrics interface the predictor reports to; this one records nothing."""

    def batch(self, task: str, items: int, requests: int, seconds: float) -> None: ...

    def track_queue(self, task: str, depth) -> None: ...


class Predictor:
    """Serves the versions of each task under `model_dir` that its version policy and labels
    pick (the newest by default; `serving.server.manager`), with dynamic batching: checks each
    request, holds the version it asked for, and hands its texts to that task's batcher.

    Args:
        model_dir: the model repository root (holding translate/ and classify/).
        limits: request limits.
        batching: BatchingOptions for each task's batcher.
        poll_seconds: how often to look for new versions (0: never, load once at start). A new
            version is loaded once its folder has been unchanged for one poll.
        metrics: an object with NullMetrics's methods (serving.server.metrics.Metrics for
            Prometheus).
        policies: {task: VersionPolicy} (default: the newest version of each).
        labels: {task: {label: version}}; each label's version is served too; ValueError at
            start if one points at a version that cannot be served (see `set_versions`).
        on_poll: called (no arguments) at every poll before the repository is looked at; the
            server re-reads its config file there.
        on_change: called (no arguments) after a version was loaded and warmed up, or freed.
    """

    def __init__(
        self,
        model_dir: str | Path = "models",
        limits: Limits | None = None,
        batching: BatchingOptions | None = None,
        poll_seconds: float = 0.0,
        metrics=None,
        policies: dict[str, VersionPolicy] | None = None,
        labels: dict[str, dict[str, int]] | None = None,
        on_poll=None,
        on_change=None,
        keep_intermediate: int = 0,
        retire_seconds: float = 0.0,
    ):
        self.model_dir = Path(model_dir)
        self.limits = limits or Limits()
        self.batching = batching or BatchingOptions()
        self.metrics = metrics or NullMetrics()
        self.versions = VersionManager(
            self.model_dir,
            policies,
            labels,
            metrics=self.metrics,
            on_change=on_change,
            keep_intermediate=keep_intermediate,
            retire_seconds=retire_seconds,
        )
        self._batchers = {}
        for task in TASKS:
            batcher = Batcher(
                lambda key, items, task=task: self._run_batch(task, key, items),
                self.batching,
                on_batch=lambda key, n, r, sec, task=task: self.metrics.batch(task, n, r, sec),
                name=task,
                call_items=self._call_items,
            )
            self.metrics.track_queue(task, lambda b=batcher: b.queue_depth)
            self._batchers[task] = batcher
        self._stop = threading.Event()
        self._watcher = None
        if poll_seconds > 0:
            self._watcher = self.versions.watch(poll_seconds, self._stop, on_poll)

    # --- versions (serving.server.manager) ------------------------------------------------------

    @property
    def models(self) -> dict[str, ExportedModel]:
        """The newest version served of each task (what a request naming none gets)."""
        return self.versions.models

    def served_versions(self) -> dict[str, list[int]]:
        """{task: the versions served, newest first}."""
        return self.versions.served_versions()

    def labels(self) -> dict[str, dict[str, int]]:
        return self.versions.labels()

    def set_versions(self, policies: dict[str, VersionPolicy], labels) -> None:
        """A new version policy and labels, read live (VersionManager.set_versions)."""
        self.versions.set_versions(policies, labels)

    def refresh(self, task: str, wait_until_stable: bool = True) -> int | None:
        """Loads what `task`'s policy and labels want now (VersionManager.refresh)."""
        return self.versions.refresh(task, wait_until_stable)

    # --- requests ------------------------------------------------------------------------------

    def _run_batch(self, task: str, key: BatchKey, items: list) -> list:
        runner = key.served.model.runner
        if task == "classify":
            return runner.classify(items, batch_size=None)
        n_best = max(n for _, n in items)
        texts = [text for text, _ in items]
        results = runner.run(
            texts, key.decoding, n_best, batch_size=None, alignment=key.alignment, pieces=True
        )
        return [hyps[:n] for hyps, (_, n) in zip(results, items, strict=True)]

    def _call_items(self, key: BatchKey) -> int:
        """The most texts one model call takes for `key`: a translation's cost grows with the
        hypotheses and steps it may run (beam × max_length), and `batching.max_call_cost`
        bounds one call's, so that an expired request frees its worker within one such call."""
        if key.decoding is None:  # classification: one short pass per text
            return self.batching.max_batch_size
        per_text = key.decoding.beam_size * key.decoding.max_length
        return max(1, self.batching.max_call_cost // per_text)

    def _batched(
        self, task: str, key: BatchKey, items: list, timeout: float | None, alive=None
    ) -> list:
        """The items' results from the batcher. Past `timeout`, or once `alive()` is false
        (the client went away), the request is dropped: from the queue, or at the next model
        call boundary if it is running, and DeadlineExceeded is raised."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def expired() -> bool:
            if deadline is not None and time.monotonic() >= deadline:
                return True
            return alive is not None and not alive()

        future = self._batchers[task].submit(key, items, expired)
        try:
            return future.result(timeout)
        except FutureTimeout:
            if not future.cancel():  # running: it stops at its next call boundary
                try:
                    future.result()
                except DeadlineExceeded:
                    pass
            raise DeadlineExceeded(
                f"the deadline passed before the model answered ({timeout:.3f} s left at arrival)"
            ) from None

    def translate(
        self,
        texts,
        beam_size=None,
        n_best=None,
        max_length=None,
        length_penalty=None,
        model_version=None,
        timeout=None,
        return_alignment=False,
        model_version_label=None,
        alive=None,
    ):
        """For each text, a seq2seq.answers.TranslationAnswer: n_best hypotheses
        (seq2seq.inference.Hypothesis, with pieces and alignment when the model has attention),
        the confidence, warnings and language check, and the parts when the text was split
        (seq2seq.sentences); returns (answers, version). The version is `model_version`, the
        one `model_version_label` names, or the newest served. A part longer than the model
        reads is cut and its answer warned `truncated`."""
        lim = self.limits
        if beam_size is not None and not 1 <= beam_size <= lim.max_beam_size:
            raise InvalidRequest(
                f"beam_size must be in [1, max_beam_size {lim.max_beam_size}], got {beam_size}"
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
        n_best = 1 if n_best is None else n_best
        if not 1 <= n_best <= lim.max_n_best:
            raise InvalidRequest(
                f"n_best must be in [1, max_n_best {lim.max_n_best}], got {n_best}"
            )
        texts = _check_texts(texts, lim)
        served = self.versions.acquire("translate", model_version, model_version_label)
        try:
            # the model's defaults for what the request leaves out, the server's limits over them
            default = served.model.runner.defaults
            if beam_size is None:
                beam_size = min(default.beam_size, lim.max_beam_size)
            if max_length is None:
                max_length = min(default.max_length, lim.max_output_length)
            decoding = default.override(beam_size, max_length, length_penalty)
            if n_best > decoding.beam_size:
                raise InvalidRequest(
                    f"n_best must be in [1, beam_size {decoding.beam_size}], got {n_best}"
                )
            runner, checks = served.model.runner, served.model.checks
            parts = [checks.parts(text) for text in texts]
            flat = [part.model_text for text_parts in parts for part in text_parts]
            lengths = [len(ids) for ids in runner.source.encode_batch(flat)]
            pieces = sum(min(n, runner.max_input_tokens) for n in lengths)
            cost = pieces * decoding.beam_size * decoding.max_length
            if cost > lim.max_request_cost:
                raise InvalidRequest(
                    f"the request's decoding cost {cost:,} (source pieces {pieces:,} × beam_size "
                    f"{decoding.beam_size} × max_length {decoding.max_length}) is over "
                    f"max_request_cost {lim.max_request_cost:,}: send fewer or shorter texts, "
                    f"or a smaller beam_size or max_length"
                )
            if return_alignment and not served.model.runner.has_alignment:
                raise NotSupported(
                    f"translate model version {served.model.version} has no attention, so it "
                    "has no alignment to return: ask without return_alignment, or serve a "
                    "model trained with model.attention=luong"
                )
            # every part is decoded with its pieces (and alignment, when the model has
            # attention): its confidence is computed from them; the servicer returns them only
            # to a request that asked for them
            key = BatchKey(served, decoding.canonical(), runner.has_alignment)
            results = self._batched("translate", key, [(t, n_best) for t in flat], timeout, alive)
            alpha = decoding.canonical().length_penalty
            answers, start = [], 0
            for text, text_parts in zip(texts, parts, strict=True):
                end = start + len(text_parts)
                answers.append(
                    checks.answer(text, text_parts, lengths[start:end], results[start:end], alpha)
                )
                start = end
            return answers, served.model.version
        finally:
            self.versions.release(served)

    def classify(
        self, texts, model_version=None, timeout=None, model_version_label=None, alive=None
    ):
        """For each text, a seq2seq.answers.ClassificationAnswer (label, {label: probability},
        warnings, the language check); returns (answers, version)."""
        texts = _check_texts(texts, self.limits)
        served = self.versions.acquire("classify", model_version, model_version_label)
        try:
            runner = served.model.runner
            lengths = [len(ids) for ids in runner.tokenizer.encode_batch(texts)]
            _check_lengths(lengths, runner.max_input_tokens, served.model)
            key = BatchKey(served, None, False)
            results = self._batched("classify", key, texts, timeout, alive)
            checks = served.model.checks
            answers = [
                checks.answer(text, label, probabilities)
                for text, (label, probabilities) in zip(texts, results, strict=True)
            ]
            return answers, served.model.version
        finally:
            self.versions.release(served)

    def metadata(self, task: str | None = None) -> list[dict]:
        if task is not None and task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}")
        return [
            {**model.describe(), "version_labels": labels, "is_default": default}
            for _, model, labels, default in self.versions.described(task)
        ]

    def training(self, task: str | None = None, full: bool = False) -> dict[str, dict]:
        """{task: what its training says (serving.server.learning)} for the tasks that have a
        training status; `full`: with the curves."""
        if task is not None and task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}")
        found = {}
        for t in TASKS if task is None else (task,):
            status = self.versions.training[t]
            found[t] = status.full() if full else status.summary()
        return {t: s for t, s in found.items() if s is not None}

    def close(self) -> None:
        """Stops the watcher and the batchers (queued requests are answered first)."""
        self._stop.set()
        for batcher in self._batchers.values():
            batcher.close()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
