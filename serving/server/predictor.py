"""The predictor: loads exported models, batches requests, reloads new versions. No gRPC.

It uses TensorFlow and SentencePiece only (not the `seq2seq` training package): an export is a
SavedModel plus `assets.extra/` (tokenizers, metadata), kept in a TF-Serving-style repository
`<model_dir>/<task>/<version>/`. The newest complete version of each task is served; a watcher
thread polls the repository and swaps in a newer version (loaded and warmed up first) while the
old one finishes the requests already given to it, then lets it go.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import threading
import unicodedata
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
import sentencepiece as spm
import tensorflow as tf

from serving.server.batching import Batcher, BatchingOptions
from serving.server.errors import (
    TASKS,
    DeadlineExceeded,
    InvalidRequest,
    Limits,
    ModelUnavailable,
    VersionNotFound,
)

PAD, UNK, SOS, EOS = 0, 1, 2, 3
log = logging.getLogger("seq2seq.serving")


class _NoGradientWarning(logging.Filter):
    """Exports leave out custom gradients on purpose (serving needs none, and loading them
    would register every version's functions in a global registry forever); TensorFlow warns
    about it at each load."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "unsaved custom gradients" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoGradientWarning())


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


def versions(repository: Path) -> list[int]:
    """The complete numeric versions in a repository, oldest first.

    A version is a folder named by a number holding saved_model.pb and
    assets.extra/metadata.json; anything else (e.g. `.tmp-7`, still being written) is skipped.
    """
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
        # The folder name is the version (as in TF Serving): a copied export takes its new name.
        self.version = int(self.path.name) if self.path.name.isdigit() else 0
        self.module = tf.saved_model.load(str(self.path))
        self._description = None
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

    def release(self) -> None:
        """Drops the SavedModel so TensorFlow can free it (the object is unusable after)."""
        self.module = None

    def describe(self) -> dict:
        """What GetModelMetadata reports (computed once: requests read the defaults from it)."""
        if self._description is None:
            self._description = self._describe()
        return self._description

    def _describe(self) -> dict:
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


def _signature(path: Path) -> tuple:
    """(files, bytes, newest mtime) of a folder: it changes while the folder is being written."""
    files = size = newest = 0
    for f in path.rglob("*"):
        st = f.stat()
        files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return files, size, newest


class _Served:
    """A loaded version and the number of requests holding it (queued or running)."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.in_flight = 0
        self.retired = False


class NullMetrics:
    """The metrics interface the predictor reports to; this one records nothing."""

    def batch(self, task: str, items: int, requests: int, seconds: float) -> None: ...

    def track_queue(self, task: str, depth) -> None: ...

    def model_loaded(self, task: str, version: int) -> None: ...

    def reload(self, task: str, ok: bool) -> None: ...


class Predictor:
    """Serves the newest complete version of each task under `model_dir`, with dynamic batching.

    Args:
        model_dir: the model repository root (holding translate/ and classify/).
        limits: request limits.
        batching: BatchingOptions for each task's batcher.
        poll_seconds: how often to look for new versions (0: never, load once at start). A new
            version is loaded once its folder has been unchanged for one poll.
        metrics: an object with NullMetrics's methods (serving.server.metrics.Metrics for
            Prometheus).
    """

    def __init__(
        self,
        model_dir: str | Path = "models",
        limits: Limits | None = None,
        batching: BatchingOptions | None = None,
        poll_seconds: float = 0.0,
        metrics=None,
    ):
        self.model_dir = Path(model_dir)
        self.limits = limits or Limits()
        self.batching = batching or BatchingOptions()
        self.metrics = metrics or NullMetrics()
        self._lock = threading.Lock()
        self._served: dict[str, _Served] = {}
        self._pending: dict[str, tuple[int, tuple]] = {}  # task → (version, signature) seen once
        self._failed: dict[tuple[str, int], tuple] = {}  # (task, version) → signature that failed
        for task in TASKS:
            self.refresh(task, wait_until_stable=False)
        self._batchers = {}
        for task in TASKS:
            batcher = Batcher(
                lambda key, items, task=task: self._run_batch(task, key, items),
                self.batching,
                on_batch=lambda key, n, r, sec, task=task: self.metrics.batch(task, n, r, sec),
                name=task,
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
    def models(self) -> dict[str, LoadedModel]:
        """The model now served for each task."""
        with self._lock:
            return {task: served.model for task, served in self._served.items()}

    # --- versions ------------------------------------------------------------------------------

    def refresh(self, task: str, wait_until_stable: bool = True) -> int | None:
        """Swaps in the newest version of `task` that loads, if it is not the one served.

        Returns the version now served (None: none). A version that fails to load is logged and
        skipped until its files change, and the next older one is tried in its place (so a
        broken newest version at start does not leave the task unserved); the served version
        stays if nothing newer loads.
        """
        with self._lock:
            current = self._served.get(task)
        current_version = current.model.version if current else None
        for candidate in reversed(versions(self.model_dir / task)):
            if candidate == current_version:
                break
            path = self.model_dir / task / str(candidate)
            try:
                signature = _signature(path)
            except OSError:  # removed while we looked
                continue
            if self._failed.get((task, candidate)) == signature:
                continue
            if wait_until_stable and self._pending.get(task) != (candidate, signature):
                # load it at the next poll if it is unchanged by then
                self._pending[task] = (candidate, signature)
                return current_version
            self._pending.pop(task, None)
            try:
                model = LoadedModel(path)
                if model.task != task:
                    raise ValueError(f"its metadata says task {model.task!r}, not {task!r}")
                model.warm_up()
            except Exception as err:
                self._failed[(task, candidate)] = signature
                log.error(
                    "%s version %d in %s cannot be loaded, skipped: %s", task, candidate, path, err
                )
                self.metrics.reload(task, ok=False)
                continue
            with self._lock:
                self._served[task] = _Served(model)
            if current is not None:
                self._retire(current)
            log.info("%s: now serving version %d (was %s)", task, candidate, current_version)
            self.metrics.model_loaded(task, candidate)
            self.metrics.reload(task, ok=True)
            return candidate
        self._pending.pop(task, None)
        return current_version

    def _watch(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            for task in TASKS:
                try:
                    self.refresh(task)
                except Exception:  # the watcher must survive anything the file system does
                    log.exception("looking for new %s versions failed", task)

    def _acquire(self, task: str, version: int | None) -> _Served:
        with self._lock:
            served = self._served.get(task)
            if served is None:
                raise ModelUnavailable(
                    f"no {task} model is loaded: export one into {self.model_dir / task}/"
                    f"<version>/ (make export-{task}); the server picks it up"
                )
            if version is not None and version != served.model.version:
                raise VersionNotFound(
                    f"{task} model version {version} is not loaded "
                    f"(serving version {served.model.version})"
                )
            served.in_flight += 1
            return served

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

    def _run_batch(self, task: str, key: tuple, items: list) -> list:
        served = key[0]
        if task == "classify":
            return served.model.classify(items)
        _, beam_size, max_length, alpha = key
        n_best = max(n for _, n in items)
        results = served.model.translate(
            [text for text, _ in items], beam_size, n_best, max_length, alpha
        )
        return [hyps[:n] for hyps, (_, n) in zip(results, items, strict=True)]

    def _batched(self, task: str, key: tuple, items: list, timeout: float | None) -> list:
        future = self._batchers[task].submit(key, items)
        try:
            return future.result(timeout)
        except FutureTimeout:
            if not future.cancel():  # already running: let it finish before the model is let go
                future.result()
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
        served = self._acquire("translate", model_version)
        try:
            info = served.model.describe()
            max_length = max_length or min(info["default_max_length"], lim.max_output_length)
            alpha = info["default_length_penalty"] if length_penalty is None else length_penalty
            # Greedy ignores the length penalty: let all greedy requests share batches.
            key = (served, beam_size, max_length, 0.0 if beam_size == 1 else float(alpha))
            items = [(text, n_best) for text in texts]
            return self._batched("translate", key, items, timeout), served.model.version
        finally:
            self._release(served)

    def classify(self, texts, model_version=None, timeout=None):
        """For each text, (label, [(label, probability), …]); returns (results, version)."""
        texts = _check_texts(texts, self.limits)
        served = self._acquire("classify", model_version)
        try:
            return self._batched("classify", (served,), texts, timeout), served.model.version
        finally:
            self._release(served)

    def metadata(self, task: str | None = None) -> list[dict]:
        if task is not None and task not in TASKS:
            raise InvalidRequest(f"unknown task {task!r}")
        return [m.describe() for t, m in self.models.items() if task in (None, t)]

    def close(self) -> None:
        """Stops the watcher and the batchers (queued requests are answered first)."""
        self._stop.set()
        for batcher in self._batchers.values():
            batcher.close()
        if self._watcher is not None:
            self._watcher.join(timeout=30)
