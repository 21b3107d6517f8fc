"""Name augmentation for translation training: copies of pairs with their names and numbers
replaced by made-up ones, the same on both sides.

Tatoeba's names are mostly "Tom" and "Mary", so a translator learns to write those two rather
than to carry a name over: given "Madrid" it says "Mary". Pairs whose source and target share a
capitalised word or a number (a name, even at the start of the sentence) are copied with each
such token replaced by an invented name, acronym or number, so the only way to get them right
is to copy them (with model.copy, piece by piece).
"""

from __future__ import annotations

import random
import re

from seq2seq.words import WORD

CONSONANTS = "bcdfghjklmnprstvz"
VOWELS = "aeiou"


def made_up(token: str, rng: random.Random) -> str:
    """A replacement of the same kind: a number for a number, else a name (3 in 4) or an
    acronym (1 in 4)."""
    if any(c.isdigit() for c in token):
        return str(rng.choice([rng.randint(0, 99), rng.randint(100, 9999), rng.randint(1, 12)]))
    if rng.random() < 0.25:
        return "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXZ") for _ in range(rng.randint(2, 4)))
    syllables = rng.randint(1, 3)
    name = "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(syllables))
    if rng.random() < 0.5:
        name += rng.choice(CONSONANTS)
    return name.capitalize()


def shared_names(source: str, target: str) -> list[str]:
    """Capitalised words and numbers of `source` that `target` has too."""
    in_target = set(WORD.findall(target))
    words = WORD.findall(source)
    return [
        w
        for w in dict.fromkeys(words)
        if (w[0].isupper() or any(c.isdigit() for c in w)) and w in in_target
    ]


def _replace(text: str, new: dict[str, str]) -> str:
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, new)) + r")(?!\w)")
    return pattern.sub(lambda m: new[m.group(1)], text)


def augment_names(rows: list[tuple], share: float, seed: int = 0) -> list[tuple]:
    """`rows` (source, target, …) plus, for `share` of those with names or numbers on both
    sides, a copy with each replaced (consistently) by a made-up one."""
    if not 0 <= share <= 1:
        raise ValueError(f"the augmented share must be in [0, 1], got {share}")
    rng = random.Random(seed)
    extra = []
    for row in rows:
        source, target = row[0], row[1]
        tokens = shared_names(source, target)
        if not tokens or rng.random() >= share:
            continue
        new = {t: made_up(t, rng) for t in tokens}
        extra.append((_replace(source, new), _replace(target, new), *row[2:]))
    return list(rows) + extra
