"""The predictor: loads exported models, batches requests, reloads new versions. No gRPC.

An export is a SavedModel plus `assets.extra/` (tokenizers, metadata), kept in a
TF-Serving-style repository `<model_dir>/<task>/<version>/`; `seq2seq.inference.ExportedModel`
loads one and runs texts through it exactly as evaluation and the CLI do (TensorFlow and
SentencePiece only: no Keras, nothing from training). Which versions of each task are served is
the version policy (`serving.server.versions`: the newest by default, the latest N, or specific
ones), and labels name versions for requests; a watcher thread polls the repository and loads a
new version (warmed up first) before letting go of the one it replaces, which finishes the
requests already given to it.
"""

from __future__ import annotations

import gc
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
from serving.server.batching import Batcher, BatchingOptions
from serving.server.errors import (
    TASKS,
    DeadlineExceeded,
    InvalidRequest,
    Limits,
    ModelUnavailable,
    NotSupported,
    VersionNotFound,
)
from serving.server.versions import VersionPolicy, check_labels

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


def _signature(path: Path) -> tuple:
    """(files, bytes, newest mtime) of a folder: it changes while the folder is being written."""
    files = size = newest = 0
    for f in path.rglob("*"):
        st = f.stat()
        files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return files, size, newest


class _Served:
    """A loaded version and the number of requests holding it (queued or running)."""

    def __init__(self, model: ExportedModel):
        self.model = model
        self.in_flight = 0
        self.retired = False


class BatchKey(NamedTuple):
    """What requests must share to be answered by one model call."""

    served: _Served  # the loaded version
    decoding: fmt.Decoding | None  # translation: the search (canonical); classification: None
    alignment: bool  # translation: return pieces and alignment too


class NullMetrics:
    """The metrics interface the predictor reports to; this one records nothing."""

    def batch(self, task: str, items: int, requests: int, seconds: float) -> None: ...

    def track_queue(self, task: str, depth) -> None: ...

    def model_loaded(self, task: str, version: int) -> None: ...

    def reload(self, task: str, ok: bool) -> None: ...


class Predictor:
    """Serves the versions of each task under `model_dir` that its version policy picks (the
    newest by default), with dynamic batching.

    Args:
        model_dir: the model repository root (holding translate/ and classify/).
        limits: request limits.
        batching: BatchingOptions for each task's batcher.
        poll_seconds: how often to look for new versions (0: never, load once at start). A new
            version is loaded once its folder has been unchanged for one poll.
        metrics: an object with NullMetrics's methods (serving.server.metrics.Metrics for
            Prometheus).
        policies: {task: VersionPolicy} (default: the newest version of each).
        labels: {task: {label: version}}; ValueError at start if one points at a version that
            is not served (see `set_versions`).
        on_poll: called (no arguments) at every poll before the repository is looked at; the
            server re-reads its config file there.
        on_loaded: called (no arguments) after a version was loaded and warmed up.
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
        on_loaded=None,
    ):
        self.model_dir = Path(model_dir)
        self.limits = limits or Limits()
        self.batching = batching or BatchingOptions()
        self.metrics = metrics or NullMetrics()
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one refresh at a time (watcher, config change)
        self._policies = {task: VersionPolicy() for task in TASKS} | (policies or {})
        self._labels: dict[str, dict[str, int]] = {task: {} for task in TASKS}
        self._served: dict[str, dict[int, _Served]] = {task: {} for task in TASKS}
        self._pending: dict[tuple[str, int], tuple] = {}  # (task, version) → signature seen once
        self._failed: dict[tuple[str, int], tuple] = {}  # (task, version) → signature that failed
        self._on_poll = on_poll
        self._on_loaded = on_loaded
        for task in TASKS:
            self.refresh(task, wait_until_stable=False)
        labels = {task: {} for task in TASKS} | (labels or {})
        check_labels(labels, self.served_versions(), self._policies)
        self._labels = labels
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
            self._watcher = threading.Thread(
                target=self._watch, args=(poll_seconds,), name="model-watcher", daemon=True
            )
            self._watcher.start()

    @property
    def models(self) -> dict[str, ExportedModel]:
        """The newest version served of each task (what a request naming none gets)."""
        with self._lock:
            return {
                task: served[max(served)].model for task, served in self._served.items() if served
            }

    def served_versions(self) -> dict[str, list[int]]:
        """{task: the versions served, newest first}."""
        with self._lock:
            return {task: sorted(served, reverse=True) for task, served in self._served.items()}

    def labels(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {task: dict(names) for task, names in self._labels.items()}

    # --- versions ------------------------------------------------------------------------------

    def set_versions(self, policies: dict[str, VersionPolicy], labels) -> None:
        """Applies a new version policy and labels (a changed config file, read live): loads
        what the policy now wants, then checks the labels against what is served. ValueError
        (and the labels unchanged) if a label points at a version that is not served; the
        versions loaded for the new policy stay."""
        policies = {task: VersionPolicy() for task in TASKS} | policies
        labels = {task: {} for task in TASKS} | labels
        # first against what the policy would serve of the complete versions on disk (known
        # broken ones left out), so that a refused change loads and lets go of nothing
        would = {
            task: policies[task].wanted(
                [v for v in fmt.versions(self.model_dir / task) if (task, v) not in self._failed]
            )
            for task in TASKS
        }
        check_labels(labels, would, policies)
        with self._refreshing:
            self._policies = policies
        for task in TASKS:
            self.refresh(task, wait_until_stable=False)
        check_labels(labels, self.served_versions(), self._policies)  # a version failed to load
        with self._lock:
            self._labels = labels

    def refresh(self, task: str, wait_until_stable: bool = True) -> int | None:
        """Loads the versions of `task` its policy wants and lets go of the others.

        Returns the newest version now served (None: none). Candidates are taken newest first:
        a version that fails to load is logged and skipped until its files change, and the next
        older one is tried in its place (so a broken newest version does not leave the task
        unserved); with `wait_until_stable`, a version not yet seen unchanged for one poll is
        left for the next. Served versions are let go only once what replaces them is loaded.
        """
        with self._refreshing:
            policy = self._policies[task]
            with self._lock:
                current = dict(self._served[task])
            chosen: list[int] = []
            for candidate in reversed(fmt.versions(self.model_dir / task)):
                if policy.specific is not None and candidate not in policy.specific:
                    continue
                if policy.latest is not None and len(chosen) >= policy.latest:
                    break
                if candidate in current:
                    chosen.append(candidate)
                    continue
                if self._load(task, candidate, wait_until_stable):
                    chosen.append(candidate)
            if chosen:  # nothing loadable: what is served stays
                for version, served in current.items():
                    if version not in chosen:
                        with self._lock:
                            del self._served[task][version]
                        log.info("%s: version %d is no longer served", task, version)
                        self._retire(served)
            return self.models[task].version if task in self.models else None

    def _load(self, task: str, version: int, wait_until_stable: bool) -> bool:
        path = self.model_dir / task / str(version)
        try:
            signature = _signature(path)
        except OSError:  # removed while we looked
            return False
        if self._failed.get((task, version)) == signature:
            return False
        if wait_until_stable and self._pending.get((task, version)) != signature:
            self._pending[(task, version)] = signature  # load it at the next poll if unchanged
            return False
        self._pending.pop((task, version), None)
        try:
            model = ExportedModel(path, task)
            model.warm_up()
        except Exception as err:
            self._failed[(task, version)] = signature
            log.error("%s version %d in %s cannot be loaded, skipped: %s", task, version, path, err)
            self.metrics.reload(task, ok=False)
            return False
        with self._lock:
            self._served[task][version] = _Served(model)
        log.info("%s: now serving version %d", task, version)
        self.metrics.model_loaded(task, version)
        self.metrics.reload(task, ok=True)
        if self._on_loaded is not None:
            self._on_loaded()
        return True

    def _watch(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            if self._on_poll is not None:
                try:
                    self._on_poll()
                except Exception:  # the watcher must survive anything
                    log.exception("reading the serving config again failed")
            for task in TASKS:
                try:
                    self.refresh(task)
                except Exception:  # the watcher must survive anything the file system does
                    log.exception("looking for new %s versions failed", task)

    def _acquire(self, task: str, version: int | None, label: str | None = None) -> _Served:
        with self._lock:
            served = self._served.get(task)
            if not served:
                raise ModelUnavailable(
                    f"no {task} model is loaded: export one into {self.model_dir / task}/"
                    f"<version>/ (make export-{task}); the server picks it up"
                )
            have = ", ".join(map(str, sorted(served, reverse=True)))
            if label:
                names = self._labels.get(task, {})
                if version is not None:
                    raise InvalidRequest(
                        "give model_version or model_version_label, not both "
                        f"(got {version} and {label!r})"
                    )
                if label not in names:
                    known = ", ".join(f"{k}={v}" for k, v in sorted(names.items())) or "none"
                    raise VersionNotFound(f"no {task} version label {label!r} (labels: {known})")
                version = names[label]
            chosen = served[max(served)] if version is None else served.get(version)
            if chosen is None:
                what = f"version {version}" + (f" (label {label!r})" if label else "")
                raise VersionNotFound(
                    f"{task} model {what} is not loaded (serving versions {have})"
                )
            chosen.in_flight += 1
            return chosen

    def _release(self, served: _Served) -> None:
        with self._lock:
            served.in_flight -= 1
            free = served.retired and served.in_flight == 0
        if free:
            self._free(served)

    def _retire(self, served: _Served) -> None:
        with self._lock:
            served.retired = True
            free = served.in_flight == 0
        if free:
            self._free(served)

    @staticmethod
    def _free(served: _Served) -> None:
        log.info("released %s version %d", served.model.task, served.model.version)
        served.model.release()
        gc.collect()

    # --- requests ------------------------------------------------------------------------------

    def _run_batch(self, task: str, key: BatchKey, items: list) -> list:
        runner = key.served.model.runner
        if task == "classify":
            return runner.classify(items, batch_size=None)
        n_best = max(n for _, n in items)
        texts = [text for text, _ in items]
        results = runner.run(texts, key.decoding, n_best, batch_size=None, alignment=key.alignment)
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
        """For each text, n_best hypotheses (seq2seq.inference.Hypothesis, with pieces and
        alignment when `return_alignment`); returns (results, version). The version is
        `model_version`, the one `model_version_label` names, or the newest served."""
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
        served = self._acquire("translate", model_version, model_version_label)
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
            runner = served.model.runner
            pieces = sum(
                min(len(ids), runner.max_input_tokens) for ids in runner.source.encode_batch(texts)
            )
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
            key = BatchKey(served, decoding.canonical(), bool(return_alignment))
            items = [(text, n_best) for text in texts]
            results = self._batched("translate", key, items, timeout, alive)
            return results, served.model.version
        finally:
            self._release(served)

    def classify(
        self, texts, model_version=None, timeout=None, model_version_label=None, alive=None
    ):
        """For each text, (label, {label: probability}); returns (results, version)."""
        texts = _check_texts(texts, self.limits)
        served = self._acquire("classify", model_version, model_version_label)
        try:
            key = BatchKey(served, None, False)
            return self._batched("classify", key, texts, timeout, alive), served.model.version
        finally:
            self._release(served)

    def metadata(self, task: str | None = None) -> list[dict]:
        if task is not None and task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}")
        with self._lock:
            found = [
                (t, version, s.model, sorted(k for k, v in self._labels[t].items() if v == version))
                for t in TASKS
                if task in (None, t)
                for version, s in sorted(self._served[t].items(), reverse=True)
            ]
        newest = self.models
        return [
            {
                **model.describe(),
                "version_labels": labels,
                "is_default": newest.get(t) is model,
            }
            for t, version, model, labels in found
        ]

    def close(self) -> None:
        """Stops the watcher and the batchers (queued requests are answered first)."""
        self._stop.set()
        for batcher in self._batchers.values():
            batcher.close()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
