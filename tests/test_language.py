"""The offline language check (seq2seq.language): the ten non-Spanish inputs a user tried are
flagged, ordinary Spanish and English sentences are not."""

import pytest

from seq2seq.language import FLOOR, guess

# what a new user tried against the Spanish → English translator (English, French, Chinese,
# emoji, letters, code), each of which came back as a fluent English "translation"
NOT_SPANISH = [
    "The weather is nice today.",
    "Where is the nearest hospital?",
    "Je voudrais un café, s'il vous plaît.",
    "今天天气很好。",
    "😀😂👍",
    "x groups grukk wam",
    "def f(x): return x ** 2",
    "SELECT name FROM users WHERE id = 3;",
    "I would like a cup of coffee, please.",
    "qwzx plmk trrv",
]
# short everyday Spanish, the kind the test split holds (Tatoeba), and a longer one
SPANISH = [
    "¡Incendio!",
    "Empieza.",
    "Esfúmate.",
    "Tom está aprendiendo JavaScript.",
    "Mañana voy a Madrid con Juan.",
    "¿Dónde está la estación de tren?",
    "Hace frío hoy.",
    "Me gusta mucho leer libros.",
    "¿Puedes ayudarme, por favor?",
    "No sé qué hacer.",
    "Ella vive en una casa pequeña cerca del río.",
    "Cuando llegamos a la estación, el tren ya se había ido y tuvimos que esperar dos horas.",
]
ENGLISH_REVIEWS = [
    "A warm, funny and beautifully acted film.",
    "A dull, lifeless and overlong mess.",
    "The best thing I have seen all year.",
    "it's a charming and often affecting journey.",
]


def test_the_ten_non_spanish_inputs_are_flagged():
    flagged = [t for t in NOT_SPANISH if not guess(t, "es").looks_expected]
    assert len(flagged) >= 9, [(t, guess(t, "es")) for t in NOT_SPANISH]


@pytest.mark.parametrize("text", SPANISH)
def test_spanish_is_not_flagged(text):
    g = guess(text, "es")
    assert g.looks_expected, g
    assert g.expected_probability >= FLOOR


def test_english_reviews_look_english_and_spanish_does_not():
    assert all(guess(t, "en").looks_expected for t in ENGLISH_REVIEWS)
    assert not guess("Esta película es una maravilla, me encantó.", "en").looks_expected


def test_the_message_names_both_languages():
    g = guess("The weather is nice today.", "es")
    assert (g.language, g.expected) == ("en", "es")
    assert g.message() == "this does not look like Spanish (it looks like English)"
    nothing = guess("😀😂👍 123", "es")
    assert nothing.language == "" and not nothing.looks_expected
    assert nothing.message() == "this has no words: it does not look like Spanish"
