"""Texts into the parts a translator trained on short sentences can take, and back.

The translator learnt from sentences of up to `data.max_words` words (15 by default). Given a
paragraph, or one long sentence, it translates the first clause and stops: the rest is lost
without a word. So a text is split into sentences (sentencex, Wikimedia's rule-based segmenter:
offline, it knows "Sr." and "EE. UU." are not ends of sentences), and a sentence longer than the
limit into its clauses: after `, ; :` and before a coordinating word ("y", "pero", "porque"…),
a clause of one or two words kept with its neighbour, one still too long halved at word
boundaries. Each part is given to the model as the sentences it learnt from look (a capital
first, a full stop last: given "…de tren," it loops on the comma), translated on its own (the
server batches the parts with the rest of the request), and the outputs are joined back: a
clause's translation loses its full stop and takes the source clause's comma or semicolon, and
the clause after it starts in lower case (unless it starts with "I" or a name of the source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sentencex import segment

# words that start a clause (split before them when a sentence is too long), per language
CLAUSE_WORDS = {
    "es": {"y", "e", "o", "u", "pero", "porque", "aunque", "mientras", "cuando", "donde", "sino",
           "pues", "así", "entonces"},
    "en": {"and", "or", "but", "because", "although", "while", "when", "where", "so", "then"},
}  # fmt: skip
_CLAUSE_END = re.compile(r"[,;:]$")
_SENTENCE_END = re.compile(r"[.!?…]+$")


@dataclass(frozen=True)
class Part:
    """One piece of a text to translate on its own."""

    text: str  # as in the text
    sentence: int  # which sentence of the text (0-based) it belongs to
    last: bool  # the last part of its sentence (it keeps the end of sentence the model writes)
    joiner: str = ""  # the source part's closing punctuation (, ; :), put back after a clause
    first: bool = True  # the first part of its sentence

    @property
    def model_text(self) -> str:
        """What the model is given: a whole sentence as it is; a clause as a sentence."""
        if self.first and self.last:
            return self.text
        text = _CLAUSE_END.sub("", self.text).rstrip()
        if not _SENTENCE_END.search(text):
            text += "."
        return text[:1].upper() + text[1:]


MIN_CLAUSE_WORDS = 3  # a clause shorter than this is kept with its neighbour


def sentences(text: str, language: str) -> list[str]:
    """The text's sentences (stripped, none empty)."""
    return [s.strip() for s in segment(language, text) if s.strip()]


def _halves(words: list[str], max_words: int) -> list[list[str]]:
    if len(words) <= max_words:
        return [words]
    mid = len(words) // 2
    return _halves(words[:mid], max_words) + _halves(words[mid:], max_words)


def clauses(sentence: str, max_words: int, language: str = "es") -> list[str]:
    """The sentence, or for one of more than `max_words` words, its clauses (in order; joined
    with spaces they are the sentence)."""
    words = sentence.split()
    if len(words) <= max_words:
        return [sentence]
    starters = CLAUSE_WORDS.get(language, set())
    units: list[list[str]] = [[]]
    for word in words:
        if units[-1] and word.lower() in starters:
            units.append([])
        units[-1].append(word)
        if _CLAUSE_END.search(word):
            units.append([])
    merged: list[list[str]] = []
    for unit in (u for u in units if u):
        if merged and (len(unit) < MIN_CLAUSE_WORDS or len(merged[-1]) < MIN_CLAUSE_WORDS):
            if len(merged[-1]) + len(unit) <= max_words:
                merged[-1] = merged[-1] + unit
                continue
        merged.append(unit)
    return [" ".join(piece) for unit in merged for piece in _halves(unit, max_words)]


def split(text: str, max_words: int, language: str = "es") -> list[Part]:
    """The parts of a text to translate, in order."""
    out: list[Part] = []
    for i, sentence in enumerate(sentences(text, language) or [text]):
        pieces = clauses(sentence, max_words, language)
        for j, piece in enumerate(pieces):
            last = j == len(pieces) - 1
            end = _CLAUSE_END.search(piece)
            out.append(Part(piece, i, last, "" if last or not end else end.group(), j == 0))
    return out


_PUNCTUATION = ".,;:!?¡¿\"'«»()"
_KEEP_CAPITAL = re.compile(r"^I\b")  # "I", "I'm", "I've"… stay capitalised in English


def join(parts: list[Part], translations: list[str]) -> str:
    """The parts' translations as one text: a clause loses its full stop and takes its source
    punctuation, the clause after it starts in lower case; sentences are separated by a space."""
    out = []
    for part, translation in zip(parts, translations, strict=True):
        translation = translation.strip()
        if not part.first and translation and not _KEEP_CAPITAL.match(translation):
            word = translation.split()[0].strip(_PUNCTUATION)
            if word not in {w.strip(_PUNCTUATION) for w in part.text.split()}:  # not a name
                translation = translation[:1].lower() + translation[1:]
        if not part.last:
            translation = _SENTENCE_END.sub("", translation).rstrip() + part.joiner
        if translation:
            out.append(translation)
    return " ".join(out)
