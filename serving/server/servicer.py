"""The gRPC servicer: protobuf ↔ Python around a predictor, and errors → status codes.

It holds no TensorFlow: any object with the predictor's methods works (tests use a fake).
"""

from __future__ import annotations

import logging
import math
import threading
import time

import grpc
from google.protobuf.message import DecodeError

from serving.server.errors import (
    TASKS,
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
# The tasks are defined once (seq2seq.export_format.TASKS); each is the proto's TASK_<NAME>.
TASK_ENUMS = {task: pb.Task.Value(f"TASK_{task.upper()}") for task in TASKS}
TASK_NAMES = {enum: task for task, enum in TASK_ENUMS.items()}


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


def _warnings(warnings) -> list[pb.AnswerWarning]:
    return [pb.AnswerWarning(code=w.code, message=w.message) for w in warnings]


def _language(guessed) -> pb.LanguageGuess | None:
    if guessed is None:
        return None
    return pb.LanguageGuess(
        language=guessed.language,
        probability=guessed.probability,
        expected=guessed.expected,
        expected_probability=guessed.expected_probability,
    )


def _translation(answer, alignment: bool) -> pb.Translation:
    """A seq2seq.answers.TranslationAnswer as protobuf (pieces and alignment only when the
    request asked for them)."""
    return pb.Translation(
        hypotheses=[_hypothesis(h, alignment) for h in answer.hypotheses],
        confidence=answer.confidence,
        warnings=_warnings(answer.warnings),
        language=_language(answer.language),
        sentences=[
            pb.SentenceTranslation(
                source=s.source,
                hypothesis=_hypothesis(s.hypothesis, alignment),
                confidence=s.confidence,
                warnings=_warnings(s.warnings),
            )
            for s in answer.sentences
        ],
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
        if not context.is_active():  # waited past its deadline, or its client went away
            if _time_left(context) == 0.0:
                context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the call ran"
                )
            context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")
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
            translations=[_translation(answer, aligned) for answer in results],
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
                    label=answer.label,
                    probabilities=[
                        pb.LabelProbability(label=n, probability=p)
                        for n, p in answer.probabilities.items()
                    ],
                    warnings=_warnings(answer.warnings),
                    language=_language(answer.language),
                )
                for answer in results
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
                    trained_steps=d.get("trained_steps", 0),
                    intermediate=d.get("intermediate", False),
                )
                for d in described
            ],
            training=[
                training_message(task, status)
                for task, status in self.predictor.training(TASK_NAMES.get(request.task)).items()
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


def _number(value, missing: float = math.nan) -> float:
    return missing if value is None else float(value)


def training_message(task: str, s: dict) -> pb.TrainingStatus:
    """A task's training status (serving.server.learning's summary) as the proto message."""
    latest = s["latest_validation"] or {}
    return pb.TrainingStatus(
        task=TASK_ENUMS[task],
        state=s["state"],
        improving=s["improving"],
        step=s["step"],
        total_steps=s["total_steps"],
        steps_per_second=_number(s["steps_per_second"], 0.0),
        score_name=s["score_name"],
        latest_validation_step=int(latest.get("step") or 0),
        latest_valid_loss=_number(latest.get("loss")),
        latest_valid_score=_number(latest.get("score")),
        versions=[
            pb.ExportedVersion(
                version=int(v["version"] or 0),
                step=int(v["step"] or 0),
                valid_loss=_number(v["valid_loss"]),
                valid_score=_number(v["valid_score"]),
                final=bool(v["final"]),
            )
            for v in s["versions"]
        ],
        next_check_step=int(s["next_check_step"] or 0),
        next_check_seconds=_number(s["next_check_seconds"], -1.0),
        message=s["message"],
    )


class RateLimitedLog:
    """One log line per `every` seconds at most for one kind of event, with the count of those
    not logged since: a stream of bad requests (or clients that go away) cannot fill the log."""

    def __init__(self, every: float = 10.0, level: int = logging.WARNING):
        self.every, self.level, self.last, self.quiet = every, level, float("-inf"), 0
        self._lock = threading.Lock()

    def due(self) -> int | None:
        """For an event: None if a line was logged less than `every` s ago (the event is
        counted), else the number of events left out since that line (a line is due now)."""
        now = time.monotonic()
        with self._lock:
            if now - self.last < self.every:
                self.quiet += 1
                return None
            quiet, self.quiet, self.last = self.quiet, 0, now
        return quiet

    def __call__(self, message: str, *args) -> bool:
        """Logs `message % args` unless a line was logged less than `every` s ago; True if
        it was logged."""
        quiet = self.due()
        if quiet is None:
            return False
        more = f" (and {quiet} more since the last such line)" if quiet else ""
        log.log(self.level, message + "%s", *args, more)
        return True


class MalformedLog(RateLimitedLog):
    """A malformed request: one log line per 10 s at most."""

    def __call__(self, method: str, peer: str, err: Exception) -> bool:
        return super().__call__("malformed %s request from %s refused: %s", method, peer, err)


def add_to_server(servicer: Seq2SeqServicer, server: grpc.Server) -> None:
    """Registers the service with raw-bytes handlers: each request is parsed here, after the
    interceptors (token auth) have let the call through, so a caller without a token never gets
    its bytes parsed, and a malformed message is INVALID_ARGUMENT with at most one log line
    every 10 s — not INTERNAL with a traceback, as gRPC's own deserialisation gives."""
    malformed = MalformedLog()
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
