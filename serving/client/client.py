"""Python client for the seq2seq gRPC service. Needs only grpcio and protobuf (no TensorFlow).

Example:
    >>> from serving.client import Client
    >>> with Client("localhost:50051") as client:
    ...     print(client.translate(["Me gusta leer."])[0].text)
    ...     print(client.classify(["A wonderful film."])[0].label)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from serving.v1 import seq2seq_pb2 as pb
from serving.v1 import seq2seq_pb2_grpc as pb_grpc


class ServingError(Exception):
    """An rpc failed. `code` is the grpc.StatusCode, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass
class Hypothesis:
    """One translation. The pieces and alignments are filled only when asked for
    (`translate(..., return_alignment=True)`): `alignment[t][s]` is the attention on source
    piece s when output piece t was chosen; `word_alignment` pairs each output word with the
    source word it attends to most."""

    text: str
    score: float
    source_tokens: list[str] = field(default_factory=list)
    target_tokens: list[str] = field(default_factory=list)
    alignment: list[list[float]] = field(default_factory=list)
    word_alignment: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class AnswerWarning:
    """Why an answer may not deserve trust: `code` is "not_source_language", "truncated" or
    "low_confidence"; `message` says what it means for this text."""

    code: str
    message: str


@dataclass
class Language:
    """The server's language check of a text: the most probable `language` (ISO 639-1, ""
    for a text with no letters) and its `probability`; the language the model reads
    (`expected`) and its probability."""

    language: str
    probability: float
    expected: str
    expected_probability: float


@dataclass
class Sentence:
    """One part of a text translated in parts: its `source`, best `hypothesis`, `confidence`
    and `warnings`."""

    source: str
    hypothesis: Hypothesis
    confidence: float | None = None
    warnings: list[AnswerWarning] = field(default_factory=list)


@dataclass
class TranslationResult:
    """The best translation (`text`, `score`) and every returned hypothesis, best first;
    `confidence`: the chance it is acceptable (None: the model version has no confidence);
    `warnings`; `language`: the language check; `sentences`: the parts, when the text was
    translated in several (sentences, or clauses of a long one)."""

    hypotheses: list[Hypothesis]
    model_version: int = 0
    confidence: float | None = None
    warnings: list[AnswerWarning] = field(default_factory=list)
    language: Language | None = None
    sentences: list[Sentence] = field(default_factory=list)

    @property
    def warning_codes(self) -> list[str]:
        return [w.code for w in self.warnings]

    @property
    def text(self) -> str:
        return self.hypotheses[0].text

    @property
    def score(self) -> float:
        return self.hypotheses[0].score


@dataclass
class ClassificationResult:
    """The most probable `label` and `probabilities` (label → probability), `warnings` and
    the language check."""

    label: str
    probabilities: dict[str, float] = field(default_factory=dict)
    model_version: int = 0
    warnings: list[AnswerWarning] = field(default_factory=list)
    language: Language | None = None

    @property
    def warning_codes(self) -> list[str]:
        return [w.code for w in self.warnings]


def _hypothesis(h) -> Hypothesis:
    width = len(h.source_tokens)
    flat = list(h.alignment)
    return Hypothesis(
        h.text,
        h.score,
        list(h.source_tokens),
        list(h.target_tokens),
        [flat[i : i + width] for i in range(0, len(flat), width)] if width else [],
        [(w.target, w.source) for w in h.word_alignment],
    )


def _warnings(message) -> list[AnswerWarning]:
    return [AnswerWarning(w.code, w.message) for w in message.warnings]


def _language(message) -> Language | None:
    if not message.HasField("language"):
        return None
    g = message.language
    return Language(g.language, g.probability, g.expected, g.expected_probability)


def _confidence(message) -> float | None:
    return message.confidence if message.HasField("confidence") else None


def _translation(t, version: int) -> TranslationResult:
    return TranslationResult(
        [_hypothesis(h) for h in t.hypotheses],
        version,
        _confidence(t),
        _warnings(t),
        _language(t),
        [
            Sentence(s.source, _hypothesis(s.hypothesis), _confidence(s), _warnings(s))
            for s in t.sentences
        ],
    )


RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def _maybe(value: float) -> float | None:
    return None if math.isnan(value) else value


def _training(t) -> dict:
    """A TrainingStatus message as a plain dict (None where a number is not known)."""
    return {
        "state": t.state,
        "improving": t.improving,
        "step": t.step,
        "total_steps": t.total_steps,
        "steps_per_second": t.steps_per_second or None,
        "score_name": t.score_name,
        "latest_validation": {
            "step": t.latest_validation_step,
            "loss": _maybe(t.latest_valid_loss),
            "score": _maybe(t.latest_valid_score),
        }
        if t.latest_validation_step
        else None,
        "versions": [
            {
                "version": v.version,
                "step": v.step,
                "valid_loss": _maybe(v.valid_loss),
                "valid_score": _maybe(v.valid_score),
                "final": v.final,
            }
            for v in t.versions
        ],
        "next_check_step": t.next_check_step or None,
        "next_check_seconds": None if t.next_check_seconds < 0 else t.next_check_seconds,
        "message": t.message,
    }


class Client:
    """A connection to a seq2seq server.

    Args:
        target: "host:port".
        timeout: per-call deadline in seconds (None: no deadline).
        token: bearer token sent as `authorization` metadata (servers with token auth).
        tls_ca: path of a PEM CA certificate: connect with TLS and verify the server with it.
        tls_server_name: the name the server's certificate must carry, when it differs from the
            host in `target` (e.g. connecting by IP address to a certificate for a DNS name).
        retries: attempts after the first on UNAVAILABLE, with exponential backoff and jitter.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float | None = None,
        token: str | None = None,
        tls_ca: str | None = None,
        tls_server_name: str | None = None,
        retries: int = 3,
        backoff: float = 0.2,
    ):
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout}")
        if not (isinstance(retries, int) and retries >= 0):
            raise ValueError(f"retries must be an integer ≥ 0, got {retries!r}")
        if tls_ca:
            with open(tls_ca, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            options = (
                [("grpc.ssl_target_name_override", tls_server_name)] if tls_server_name else []
            )
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.Seq2SeqServiceStub(self._channel)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.retries = retries
        self.backoff = backoff

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rpc(self, method, request):
        attempt = 0
        while True:
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as err:
                code = err.code()
                if code in RETRYABLE and attempt < self.retries:
                    time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
                    attempt += 1
                    continue
                raise ServingError(code, err.details() or "") from None

    def translate(
        self,
        texts: Sequence[str],
        beam_size: int | None = None,
        n_best: int = 1,
        max_length: int | None = None,
        length_penalty: float | None = None,
        model_version: int | None = None,
        return_alignment: bool = False,
        model_version_label: str | None = None,
    ) -> list[TranslationResult]:
        """One result per text, in order. Settings left None are the model's (its
        `default_*` in `metadata()`: the ones its published scores were measured with).
        `return_alignment` also fills each hypothesis's pieces and alignments (a model with
        attention only: else ServingError FAILED_PRECONDITION). `model_version` or
        `model_version_label` (e.g. "stable") picks a served version; neither: the newest."""
        if isinstance(texts, str):
            texts = [texts]
        request = pb.TranslateRequest(texts=list(texts), n_best=n_best)
        if beam_size is not None:
            request.beam_size = beam_size
        if max_length is not None:
            request.max_length = max_length
        if length_penalty is not None:
            request.length_penalty = length_penalty
        if model_version is not None:
            request.model_version = model_version
        if model_version_label is not None:
            request.model_version_label = model_version_label
        if return_alignment:
            request.return_alignment = True
        response = self._rpc(self._stub.Translate, request)
        return [_translation(t, response.model_version) for t in response.translations]

    def classify(
        self,
        texts: Sequence[str],
        model_version: int | None = None,
        model_version_label: str | None = None,
    ) -> list[ClassificationResult]:
        """One result per text, in order (version choice as in `translate`)."""
        if isinstance(texts, str):
            texts = [texts]
        request = pb.ClassifyRequest(texts=list(texts))
        if model_version is not None:
            request.model_version = model_version
        if model_version_label is not None:
            request.model_version_label = model_version_label
        response = self._rpc(self._stub.Classify, request)
        return [
            ClassificationResult(
                r.label,
                {p.label: p.probability for p in r.probabilities},
                response.model_version,
                _warnings(r),
                _language(r),
            )
            for r in response.results
        ]

    def metadata(self, task: str | None = None) -> dict:
        """The served models and the server's limits, as plain dicts."""
        enum = {
            None: pb.TASK_UNSPECIFIED,
            "translate": pb.TASK_TRANSLATE,
            "classify": pb.TASK_CLASSIFY,
        }
        if task not in enum:
            raise ValueError(f"task must be translate, classify or None; got {task!r}")
        r = self._rpc(self._stub.GetModelMetadata, pb.GetModelMetadataRequest(task=enum[task]))
        names = {pb.TASK_TRANSLATE: "translate", pb.TASK_CLASSIFY: "classify"}
        return {
            "models": [
                {
                    "task": names.get(m.task, "unspecified"),
                    "version": m.version,
                    "source_language": m.source_language,
                    "target_language": m.target_language,
                    "labels": list(m.labels),
                    "source_vocab_size": m.source_vocab_size,
                    "target_vocab_size": m.target_vocab_size,
                    "eval_scores": dict(m.eval_scores),
                    "dataset": m.dataset,
                    "default_beam_size": m.default_beam_size,
                    "default_max_length": m.default_max_length,
                    "default_length_penalty": round(m.default_length_penalty, 6),
                    "version_labels": list(m.version_labels),
                    "is_default": m.is_default,
                    "trained_steps": m.trained_steps,
                    "intermediate": m.intermediate,
                }
                for m in r.models
            ],
            "training": {names.get(t.task, "unspecified"): _training(t) for t in r.training},
            "limits": {f.name: getattr(r.limits, f.name) for f in r.limits.DESCRIPTOR.fields},
        }
