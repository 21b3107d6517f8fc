"""The gRPC servicer: protobuf ↔ Python around a predictor, and errors → status codes.

It holds no TensorFlow: any object with the predictor's methods works (tests use a fake).
"""

from __future__ import annotations

import logging
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from serving.server.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelUnavailable,
    NotSupported,
    Overloaded,
    VersionNotFound,
)
from serving.v1 import seq2seq_pb2 as pb
from serving.v1 import seq2seq_pb2_grpc as pb_grpc

log = logging.getLogger("seq2seq.serving")

# The one place where predictor errors become gRPC status codes.
STATUS_OF = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (VersionNotFound, grpc.StatusCode.NOT_FOUND),
    (ModelUnavailable, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (NotSupported, grpc.StatusCode.FAILED_PRECONDITION),
)
TASK_NAMES = {pb.TASK_TRANSLATE: "translate", pb.TASK_CLASSIFY: "classify"}
TASK_ENUMS = {v: k for k, v in TASK_NAMES.items()}


def _optional(msg, field: str):
    return getattr(msg, field) if msg.HasField(field) else None


def _hypothesis(h, alignment: bool) -> pb.Hypothesis:
    """A hypothesis (an object with seq2seq.inference.Hypothesis's fields) as protobuf."""
    if not alignment:
        return pb.Hypothesis(text=h.text, score=h.score)
    return pb.Hypothesis(
        text=h.text,
        score=h.score,
        source_tokens=h.source_tokens,
        target_tokens=h.target_tokens,
        alignment=[w for row in h.alignment for w in row],
        word_alignment=[pb.AlignedWord(target=t, source=s) for t, s in h.word_alignment],
    )


def _time_left(context) -> float | None:
    """Seconds to the call's deadline, None when it has none."""
    left = context.time_remaining()
    return None if left is None or left > 1e6 else max(left, 0.0)


class Seq2SeqServicer(pb_grpc.Seq2SeqServiceServicer):
    """Adapts `predictor` (see serving.server.predictor.Predictor) to the Seq2SeqService rpcs."""

    def __init__(self, predictor, memory=None):
        self.predictor = predictor
        self.memory = memory  # a serving.server.memory.MemoryBudget, or None

    def _call(self, context, fn, *args, admit=False, **kwargs):
        """fn(*args, **kwargs), its errors as status codes; `admit`: a request for the model,
        refused (RESOURCE_EXHAUSTED) while the server is over its memory budget."""
        if not context.is_active():
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled or timed out")
        try:
            if admit and self.memory is not None:
                self.memory.check()
            return fn(*args, **kwargs)
        except Exception as err:  # mapped below; anything else is a server bug
            for kind, code in STATUS_OF:
                if isinstance(err, kind):
                    context.abort(code, str(err))
            log.exception("internal error")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}")

    def Translate(self, request, context):
        results, version = self._call(
            context,
            self.predictor.translate,
            list(request.texts),
            admit=True,
            beam_size=_optional(request, "beam_size"),
            n_best=_optional(request, "n_best"),
            max_length=_optional(request, "max_length"),
            length_penalty=_optional(request, "length_penalty"),
            model_version=_optional(request, "model_version"),
            model_version_label=_optional(request, "model_version_label"),
            return_alignment=request.return_alignment,
            timeout=_time_left(context),
            alive=context.is_active,
        )
        aligned = request.return_alignment
        return pb.TranslateResponse(
            translations=[
                pb.Translation(hypotheses=[_hypothesis(h, aligned) for h in hyps])
                for hyps in results
            ],
            model_version=version,
        )

    def Classify(self, request, context):
        results, version = self._call(
            context,
            self.predictor.classify,
            list(request.texts),
            admit=True,
            model_version=_optional(request, "model_version"),
            model_version_label=_optional(request, "model_version_label"),
            timeout=_time_left(context),
            alive=context.is_active,
        )
        return pb.ClassifyResponse(
            results=[
                pb.Classification(
                    label=label,
                    probabilities=[
                        pb.LabelProbability(label=n, probability=p) for n, p in probs.items()
                    ],
                )
                for label, probs in results
            ],
            model_version=version,
        )

    def GetModelMetadata(self, request, context):
        if request.task not in (pb.TASK_UNSPECIFIED, *TASK_NAMES):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown task {request.task}")
        described = self._call(context, self.predictor.metadata, TASK_NAMES.get(request.task))
        lim = self.predictor.limits
        return pb.GetModelMetadataResponse(
            models=[
                pb.ModelMetadata(
                    task=TASK_ENUMS[d["task"]],
                    version=d["version"],
                    source_language=d["source_language"],
                    target_language=d["target_language"],
                    labels=d["labels"],
                    source_vocab_size=d["source_vocab_size"],
                    target_vocab_size=d["target_vocab_size"],
                    eval_scores=d["eval_scores"],
                    dataset=d["dataset"],
                    default_beam_size=d["default_beam_size"],
                    default_max_length=d["default_max_length"],
                    default_length_penalty=d["default_length_penalty"],
                    version_labels=d.get("version_labels", []),
                    is_default=d.get("is_default", True),
                )
                for d in described
            ],
            limits=pb.Limits(
                max_texts=lim.max_texts,
                max_text_chars=lim.max_text_chars,
                max_beam_size=lim.max_beam_size,
                max_n_best=lim.max_n_best,
                max_output_length=lim.max_output_length,
                max_request_cost=lim.max_request_cost,
                memory_budget_mib=self.memory.budget_mib if self.memory is not None else 0,
            ),
        )


class _MalformedLog:
    """One log line per `every` seconds at most for malformed requests, with the count of those
    not logged since: a stream of garbage cannot fill the log."""

    def __init__(self, every: float = 10.0):
        self.every, self.last, self.quiet = every, float("-inf"), 0
        self._lock = threading.Lock()

    def __call__(self, method: str, peer: str, err: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self.last < self.every:
                self.quiet += 1
                return
            quiet, self.quiet, self.last = self.quiet, 0, now
        more = f" (and {quiet} more since the last such line)" if quiet else ""
        log.warning("malformed %s request from %s refused: %s%s", method, peer, err, more)


def add_to_server(servicer: Seq2SeqServicer, server: grpc.Server) -> None:
    """Registers the service with raw-bytes handlers: each request is parsed here, after the
    interceptors (token auth) have let the call through, so a caller without a token never gets
    its bytes parsed, and a malformed message is INVALID_ARGUMENT with at most one log line
    every 10 s — not INTERNAL with a traceback, as gRPC's own deserialisation gives."""
    malformed = _MalformedLog()
    service = pb.DESCRIPTOR.services_by_name["Seq2SeqService"]
    handlers = {}
    for method in service.methods:
        request_class = getattr(pb, method.input_type.name)
        response_class = getattr(pb, method.output_type.name)
        implementation = getattr(servicer, method.name)

        def handle(raw, context, impl=implementation, cls=request_class, name=method.name):
            try:
                request = cls.FromString(raw)
            except DecodeError as err:
                malformed(name, context.peer(), err)
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"the request is not a valid {cls.DESCRIPTOR.full_name} message ({err})",
                )
            return impl(request, context)

        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=None, response_serializer=response_class.SerializeToString
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
