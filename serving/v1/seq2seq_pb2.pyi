from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_TRANSLATE: _ClassVar[Task]
    TASK_CLASSIFY: _ClassVar[Task]
TASK_UNSPECIFIED: Task
TASK_TRANSLATE: Task
TASK_CLASSIFY: Task

class TranslateRequest(_message.Message):
    __slots__ = ("texts", "beam_size", "n_best", "max_length", "length_penalty", "model_version", "return_alignment", "model_version_label")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    N_BEST_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LENGTH_PENALTY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RETURN_ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    beam_size: int
    n_best: int
    max_length: int
    length_penalty: float
    model_version: int
    return_alignment: bool
    model_version_label: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., beam_size: _Optional[int] = ..., n_best: _Optional[int] = ..., max_length: _Optional[int] = ..., length_penalty: _Optional[float] = ..., model_version: _Optional[int] = ..., return_alignment: _Optional[bool] = ..., model_version_label: _Optional[str] = ...) -> None: ...

class Hypothesis(_message.Message):
    __slots__ = ("text", "score", "source_tokens", "target_tokens", "alignment", "word_alignment")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TARGET_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    WORD_ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    text: str
    score: float
    source_tokens: _containers.RepeatedScalarFieldContainer[str]
    target_tokens: _containers.RepeatedScalarFieldContainer[str]
    alignment: _containers.RepeatedScalarFieldContainer[float]
    word_alignment: _containers.RepeatedCompositeFieldContainer[AlignedWord]
    def __init__(self, text: _Optional[str] = ..., score: _Optional[float] = ..., source_tokens: _Optional[_Iterable[str]] = ..., target_tokens: _Optional[_Iterable[str]] = ..., alignment: _Optional[_Iterable[float]] = ..., word_alignment: _Optional[_Iterable[_Union[AlignedWord, _Mapping]]] = ...) -> None: ...

class AlignedWord(_message.Message):
    __slots__ = ("target", "source")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    target: str
    source: str
    def __init__(self, target: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class AnswerWarning(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class LanguageGuess(_message.Message):
    __slots__ = ("language", "probability", "expected", "expected_probability")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    language: str
    probability: float
    expected: str
    expected_probability: float
    def __init__(self, language: _Optional[str] = ..., probability: _Optional[float] = ..., expected: _Optional[str] = ..., expected_probability: _Optional[float] = ...) -> None: ...

class SentenceTranslation(_message.Message):
    __slots__ = ("source", "hypothesis", "confidence", "warnings")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    HYPOTHESIS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    source: str
    hypothesis: Hypothesis
    confidence: float
    warnings: _containers.RepeatedCompositeFieldContainer[AnswerWarning]
    def __init__(self, source: _Optional[str] = ..., hypothesis: _Optional[_Union[Hypothesis, _Mapping]] = ..., confidence: _Optional[float] = ..., warnings: _Optional[_Iterable[_Union[AnswerWarning, _Mapping]]] = ...) -> None: ...

class Translation(_message.Message):
    __slots__ = ("hypotheses", "confidence", "warnings", "language", "sentences")
    HYPOTHESES_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    hypotheses: _containers.RepeatedCompositeFieldContainer[Hypothesis]
    confidence: float
    warnings: _containers.RepeatedCompositeFieldContainer[AnswerWarning]
    language: LanguageGuess
    sentences: _containers.RepeatedCompositeFieldContainer[SentenceTranslation]
    def __init__(self, hypotheses: _Optional[_Iterable[_Union[Hypothesis, _Mapping]]] = ..., confidence: _Optional[float] = ..., warnings: _Optional[_Iterable[_Union[AnswerWarning, _Mapping]]] = ..., language: _Optional[_Union[LanguageGuess, _Mapping]] = ..., sentences: _Optional[_Iterable[_Union[SentenceTranslation, _Mapping]]] = ...) -> None: ...

class TranslateResponse(_message.Message):
    __slots__ = ("translations", "model_version")
    TRANSLATIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    translations: _containers.RepeatedCompositeFieldContainer[Translation]
    model_version: int
    def __init__(self, translations: _Optional[_Iterable[_Union[Translation, _Mapping]]] = ..., model_version: _Optional[int] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("texts", "model_version", "model_version_label")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    model_version: int
    model_version_label: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., model_version: _Optional[int] = ..., model_version_label: _Optional[str] = ...) -> None: ...

class LabelProbability(_message.Message):
    __slots__ = ("label", "probability")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("label", "probabilities", "warnings", "language")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    label: str
    probabilities: _containers.RepeatedCompositeFieldContainer[LabelProbability]
    warnings: _containers.RepeatedCompositeFieldContainer[AnswerWarning]
    language: LanguageGuess
    def __init__(self, label: _Optional[str] = ..., probabilities: _Optional[_Iterable[_Union[LabelProbability, _Mapping]]] = ..., warnings: _Optional[_Iterable[_Union[AnswerWarning, _Mapping]]] = ..., language: _Optional[_Union[LanguageGuess, _Mapping]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results", "model_version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    model_version: int
    def __init__(self, results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ..., model_version: _Optional[int] = ...) -> None: ...

class GetModelMetadataRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, str]] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("task", "version", "source_language", "target_language", "labels", "source_vocab_size", "target_vocab_size", "eval_scores", "dataset", "default_beam_size", "default_max_length", "default_length_penalty", "version_labels", "is_default", "trained_steps", "intermediate")
    class EvalScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    TARGET_VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    EVAL_SCORES_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LENGTH_PENALTY_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABELS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    TRAINED_STEPS_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_FIELD_NUMBER: _ClassVar[int]
    task: Task
    version: int
    source_language: str
    target_language: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    source_vocab_size: int
    target_vocab_size: int
    eval_scores: _containers.ScalarMap[str, float]
    dataset: str
    default_beam_size: int
    default_max_length: int
    default_length_penalty: float
    version_labels: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    trained_steps: int
    intermediate: bool
    def __init__(self, task: _Optional[_Union[Task, str]] = ..., version: _Optional[int] = ..., source_language: _Optional[str] = ..., target_language: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., source_vocab_size: _Optional[int] = ..., target_vocab_size: _Optional[int] = ..., eval_scores: _Optional[_Mapping[str, float]] = ..., dataset: _Optional[str] = ..., default_beam_size: _Optional[int] = ..., default_max_length: _Optional[int] = ..., default_length_penalty: _Optional[float] = ..., version_labels: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ..., trained_steps: _Optional[int] = ..., intermediate: _Optional[bool] = ...) -> None: ...

class ExportedVersion(_message.Message):
    __slots__ = ("version", "step", "valid_loss", "valid_score", "final")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    VALID_SCORE_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    version: int
    step: int
    valid_loss: float
    valid_score: float
    final: bool
    def __init__(self, version: _Optional[int] = ..., step: _Optional[int] = ..., valid_loss: _Optional[float] = ..., valid_score: _Optional[float] = ..., final: _Optional[bool] = ...) -> None: ...

class TrainingStatus(_message.Message):
    __slots__ = ("task", "state", "improving", "step", "total_steps", "steps_per_second", "score_name", "latest_validation_step", "latest_valid_loss", "latest_valid_score", "versions", "next_check_step", "next_check_seconds", "message")
    TASK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IMPROVING_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SCORE_NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_VALIDATION_STEP_FIELD_NUMBER: _ClassVar[int]
    LATEST_VALID_LOSS_FIELD_NUMBER: _ClassVar[int]
    LATEST_VALID_SCORE_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHECK_STEP_FIELD_NUMBER: _ClassVar[int]
    NEXT_CHECK_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task: Task
    state: str
    improving: bool
    step: int
    total_steps: int
    steps_per_second: float
    score_name: str
    latest_validation_step: int
    latest_valid_loss: float
    latest_valid_score: float
    versions: _containers.RepeatedCompositeFieldContainer[ExportedVersion]
    next_check_step: int
    next_check_seconds: float
    message: str
    def __init__(self, task: _Optional[_Union[Task, str]] = ..., state: _Optional[str] = ..., improving: _Optional[bool] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., steps_per_second: _Optional[float] = ..., score_name: _Optional[str] = ..., latest_validation_step: _Optional[int] = ..., latest_valid_loss: _Optional[float] = ..., latest_valid_score: _Optional[float] = ..., versions: _Optional[_Iterable[_Union[ExportedVersion, _Mapping]]] = ..., next_check_step: _Optional[int] = ..., next_check_seconds: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_texts", "max_text_chars", "max_beam_size", "max_n_best", "max_output_length", "max_request_cost", "memory_budget_mib")
    MAX_TEXTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_N_BEST_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_COST_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_MIB_FIELD_NUMBER: _ClassVar[int]
    max_texts: int
    max_text_chars: int
    max_beam_size: int
    max_n_best: int
    max_output_length: int
    max_request_cost: int
    memory_budget_mib: int
    def __init__(self, max_texts: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_beam_size: _Optional[int] = ..., max_n_best: _Optional[int] = ..., max_output_length: _Optional[int] = ..., max_request_cost: _Optional[int] = ..., memory_budget_mib: _Optional[int] = ...) -> None: ...

class GetModelMetadataResponse(_message.Message):
    __slots__ = ("models", "limits", "training")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelMetadata]
    limits: Limits
    training: _containers.RepeatedCompositeFieldContainer[TrainingStatus]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelMetadata, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., training: _Optional[_Iterable[_Union[TrainingStatus, _Mapping]]] = ...) -> None: ...
