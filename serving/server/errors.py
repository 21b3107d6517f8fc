"""The predictor's error types and request limits. No TensorFlow here: the servicer and the
client import this module."""

from __future__ import annotations

from dataclasses import dataclass

from seq2seq.export_format import TASKS  # noqa: F401 - the tasks, defined once, for the server


class PredictorError(Exception):
    """Base of the errors a predictor raises; the servicer maps each to a gRPC status."""


class InvalidRequest(PredictorError, ValueError):
    """The request breaks a rule or a limit (→ INVALID_ARGUMENT)."""


class ModelUnavailable(PredictorError):
    """No model is loaded for the task (→ UNAVAILABLE)."""


class VersionNotFound(PredictorError, LookupError):
    """The requested model version is not loaded (→ NOT_FOUND)."""


class NotSupported(PredictorError):
    """The model cannot do what was asked (alignment from a model without attention) (→
    FAILED_PRECONDITION)."""


class Overloaded(PredictorError):
    """Too much work queued (→ RESOURCE_EXHAUSTED)."""


class DeadlineExceeded(PredictorError, TimeoutError):
    """The caller's deadline passed before the model answered (→ DEADLINE_EXCEEDED)."""


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64  # texts per request
    max_text_chars: int = 2000  # characters per text
    max_beam_size: int = 16  # beam width
    max_n_best: int = 16  # hypotheses per text
    max_output_length: int = 256  # output tokens
    # translation: Σ over texts of source pieces × beam × max_length, a request's decoding work
    # (the default decoding of 64 texts of 15 pieces: 230,400; 64 × 200 pieces at beam 16 and
    # 256 steps: 52 million, refused)
    max_request_cost: int = 4_000_000
