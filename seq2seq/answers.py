"""Answers that say how far to trust them: warnings, a confidence, and paragraphs in parts.

A model's raw output is a text and a log-probability, and both look the same whether the input
was a Spanish sentence, an English one, a paragraph or a line of code. This module turns model
outputs into answers a caller can judge, for the server and the command line alike:

- a text is translated in parts (`seq2seq.sentences`): sentences, and clauses of a sentence
  longer than the model learnt from; the parts' translations are joined back;
- each answer carries warnings, each a code and a sentence:
  `not_source_language` (`seq2seq.language`: the input does not look like the language the model
  reads), `truncated` (a part longer than the model reads was cut, or a translation stopped at
  max_length without ending), `low_confidence` (the translation's chance of being acceptable,
  `seq2seq.confidence`, is below one half; a label's calibrated probability below `LOW_LABEL`);
- a translation carries that chance, for the text (its least sure part) and per part.

No TensorFlow here: the server builds answers from what the model returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seq2seq import confidence as conf
from seq2seq import sentences
from seq2seq.language import LanguageGuess, guess

NOT_SOURCE_LANGUAGE = "not_source_language"
TRUNCATED = "truncated"
LOW_CONFIDENCE = "low_confidence"
WARNINGS = (NOT_SOURCE_LANGUAGE, TRUNCATED, LOW_CONFIDENCE)
LOW_LABEL = 0.6  # a label whose calibrated probability is below this is flagged low_confidence
DEFAULT_MAX_WORDS = 15  # an export that does not say how long its training sentences were
ISO_639_1 = {"spa": "es", "eng": "en"}  # the corpus's language codes → language-check codes


@dataclass(frozen=True)
class AnswerWarning:
    code: str  # one of WARNINGS
    message: str  # what it means for this text, in a sentence


@dataclass(frozen=True)
class Sentence:
    """One part of a text translated on its own."""

    source: str
    hypothesis: object  # seq2seq.inference.Hypothesis, the best
    confidence: float | None
    warnings: tuple[AnswerWarning, ...] = ()


@dataclass(frozen=True)
class TranslationAnswer:
    hypotheses: list  # n-best for the whole text (Hypothesis); a split text's join the parts'
    confidence: float | None  # P(acceptable) of the best, its least sure part's; None: unknown
    warnings: tuple[AnswerWarning, ...]
    language: LanguageGuess | None
    sentences: list[Sentence] = field(default_factory=list)  # the parts, when split into several


@dataclass(frozen=True)
class ClassificationAnswer:
    label: str
    probabilities: dict[str, float]
    warnings: tuple[AnswerWarning, ...]
    language: LanguageGuess | None


def _language_warning(guessed: LanguageGuess | None) -> tuple[AnswerWarning, ...]:
    if guessed is None or guessed.looks_expected:
        return ()
    return (AnswerWarning(NOT_SOURCE_LANGUAGE, guessed.message()),)


def _iso(code: str | None) -> str | None:
    return ISO_639_1.get(code, code) if code else None


@dataclass(frozen=True)
class TranslationChecks:
    """What a translation model's answers are checked against: the language it reads, the
    sentence length it learnt from, its input limit and its fitted confidence."""

    language: str | None  # ISO 639-1; None: no language check
    max_words: int = DEFAULT_MAX_WORDS
    max_input_tokens: int = 200
    confidence: conf.ConfidenceModel | None = None

    @classmethod
    def from_metadata(cls, metadata: dict, max_input_tokens: int) -> TranslationChecks:
        data = (metadata.get("config") or {}).get("data") or {}
        return cls(
            _iso(metadata.get("source_language")),
            int(data.get("max_words") or DEFAULT_MAX_WORDS),
            max_input_tokens,
            conf.ConfidenceModel.from_dict(metadata.get("confidence") or {}),
        )

    def parts(self, text: str) -> list[sentences.Part]:
        """The parts of `text` to translate, each on its own."""
        return sentences.split(text, self.max_words, self.language or "en")

    def answer(self, text, parts, lengths, nbest_per_part, length_penalty) -> TranslationAnswer:
        """The answer for `text` from its parts' n-best hypotheses (with pieces, so that the
        confidence can be computed), `lengths` the parts' source pieces and `length_penalty`
        the alpha the scores were normalised with (0 for greedy search)."""
        guessed = None if self.language is None else guess(text, self.language)
        notes: list[AnswerWarning] = list(_language_warning(guessed))
        per_part = []
        for part, n, hyps in zip(parts, lengths, nbest_per_part, strict=True):
            best = hyps[0]
            where = f"sentence {part.sentence + 1}: " if len(parts) > 1 else ""
            cut = []
            if n > self.max_input_tokens:
                cut.append(
                    AnswerWarning(
                        TRUNCATED,
                        f"{where}the input is {n} pieces long and the model reads "
                        f"{self.max_input_tokens}: its end was not translated",
                    )
                )
            if not best.ended:
                cut.append(
                    AnswerWarning(
                        TRUNCATED,
                        f"{where}the translation stopped at the length limit "
                        f"({len(best.target_tokens) or 'max_length'} pieces) without ending",
                    )
                )
            p = None
            if self.confidence is not None and not best.ended:
                p = 0.0  # cut off: no whole translation (seq2seq.confidence)
            elif self.confidence is not None and best.target_tokens:
                row = conf.features(
                    best.source_tokens,
                    best.target_tokens,
                    best.alignment,
                    best.score,
                    length_penalty,
                )
                if all(name in row for name in self.confidence.names):
                    p = float(self.confidence.predict([row])[0])
            per_part.append(Sentence(part.text, best, p, tuple(cut)))
            notes.extend(cut)
        known = [s.confidence for s in per_part if s.confidence is not None]
        p_text = min(known) if len(known) == len(per_part) and known else None
        if p_text is not None and p_text < conf.LOW:
            notes.append(
                AnswerWarning(
                    LOW_CONFIDENCE,
                    f"the model is unsure of this translation ({100 * p_text:.0f}% confidence)",
                )
            )
        if len(parts) == 1:
            return TranslationAnswer(list(nbest_per_part[0]), p_text, tuple(notes), guessed)
        hypotheses = [
            _joined(parts, [hyps[min(k, len(hyps) - 1)] for hyps in nbest_per_part])
            for k in range(max(len(h) for h in nbest_per_part))
        ]
        return TranslationAnswer(hypotheses, p_text, tuple(notes), guessed, per_part)


def _joined(parts, hyps):
    """One hypothesis for a text translated in parts: the texts joined, the mean score."""
    first = hyps[0]
    return first._replace(
        text=sentences.join(parts, [h.text for h in hyps]),
        score=sum(h.score for h in hyps) / len(hyps),
        source_tokens=(),
        target_tokens=(),
        alignment=(),
        word_alignment=(),
        ended=all(h.ended for h in hyps),
    )


@dataclass(frozen=True)
class ClassificationChecks:
    """What a classifier's answers are checked against: the language of its texts."""

    language: str | None

    @classmethod
    def from_metadata(cls, metadata: dict) -> ClassificationChecks:
        return cls(_iso(metadata.get("source_language")) or _dataset_language(metadata))

    def answer(self, text: str, label: str, probabilities: dict) -> ClassificationAnswer:
        guessed = None if self.language is None else guess(text, self.language)
        notes = list(_language_warning(guessed))
        p = probabilities[label]
        if p < LOW_LABEL:
            notes.append(
                AnswerWarning(
                    LOW_CONFIDENCE,
                    f"the model is unsure: {label} at {100 * p:.0f}% is close to a coin toss "
                    f"between the labels",
                )
            )
        return ClassificationAnswer(label, probabilities, tuple(notes), guessed)


def _dataset_language(metadata: dict) -> str | None:
    """The language of an older classifier export's corpus (both built-in ones are English)."""
    dataset = metadata.get("dataset") or ((metadata.get("config") or {}).get("data") or {}).get(
        "dataset"
    )
    return "en" if dataset in ("sentiment", "sms_spam") else None
