"""Does a text look like the language the model reads? An offline language check.

A translator trained on Spanish turns any input into fluent-looking English: English, French,
code and random letters all come back as sentences, with scores no worse than real Spanish
gets. So every answer says whether its input looked like the model's source language.

The check is py3langid (langid.py: a naive-Bayes model over byte n-grams, 97 languages, shipped
inside the wheel; nothing is downloaded). A text is *not* in the expected language when the
probability langid gives that language, normalised over all 97, is below `FLOOR`, or when it
has no letter at all (emoji, numbers, symbols). The floor was chosen on the validation split:
Spanish short sentences are often read as Galician, Portuguese or Catalan, but they keep some
probability of Spanish; other languages keep next to none. Measured (docs/results.md): 0 of
1,409 Spanish validation sentences and 2 of 1,429 test sentences flagged, 0 of 2,112 English
sentiment sentences; of the English side of the translation test split, 98% flagged (the misses
are two- and three-word sentences such as "Tom lied." that no character model can place).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

FLOOR = 0.01  # P(expected language) below this: the text does not look like that language
_lock = threading.Lock()
_identifier = None

# the names a message uses for the languages the project's models read
NAMES = {"es": "Spanish", "en": "English", "fr": "French", "de": "German", "it": "Italian",
         "pt": "Portuguese", "ca": "Catalan", "gl": "Galician", "zh": "Chinese", "ja": "Japanese",
         "ko": "Korean", "ru": "Russian", "ar": "Arabic", "nl": "Dutch"}  # fmt: skip


def name(code: str) -> str:
    """A language's English name where the project knows it, else its ISO 639-1 code."""
    return NAMES.get(code, code)


@dataclass(frozen=True)
class LanguageGuess:
    """What the check says of one text."""

    language: str  # the most probable language (ISO 639-1), "" for a text with no letters
    probability: float  # its probability
    expected: str  # the language asked about
    expected_probability: float  # the probability of that one

    @property
    def looks_expected(self) -> bool:
        return bool(self.language) and self.expected_probability >= FLOOR

    def message(self) -> str:
        """Why the text was flagged, in words (for a warning)."""
        if not self.language:
            return f"this has no words: it does not look like {name(self.expected)}"
        seems = f" (it looks like {name(self.language)})" if self.language != self.expected else ""
        return f"this does not look like {name(self.expected)}{seems}"


def _get():
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _identifier


def guess(text: str, expected: str) -> LanguageGuess:
    """The check for one text: the most probable language, and the expected one's chance."""
    if not any(c.isalpha() for c in text):
        return LanguageGuess("", 0.0, expected, 0.0)
    ranked = _get().rank(text)
    top, p_top = ranked[0]
    p_expected = next((float(p) for lang, p in ranked if lang == expected), 0.0)
    return LanguageGuess(str(top), float(p_top), expected, p_expected)


def guess_all(texts: list[str], expected: str) -> list[LanguageGuess]:
    return [guess(t, expected) for t in texts]
