"""Texts into parts a translator trained on short sentences can take (seq2seq.sentences)."""

from seq2seq.sentences import Part, clauses, join, sentences, split


def test_a_paragraph_is_split_into_its_sentences_abbreviations_kept():
    assert sentences("Hola. ¿Cómo estás? ¡Qué bien!", "es") == [
        "Hola.",
        "¿Cómo estás?",
        "¡Qué bien!",
    ]
    assert sentences("El Sr. García vive en EE. UU. desde 1990. Trabaja mucho.", "es") == [
        "El Sr. García vive en EE. UU. desde 1990.",
        "Trabaja mucho.",
    ]
    assert sentences("¿Vienes?¡Sí!", "es") == ["¿Vienes?", "¡Sí!"]


def test_a_short_sentence_is_one_part():
    assert clauses("Veo el gato.", 15) == ["Veo el gato."]
    assert split("Veo el gato.", 15) == [Part("Veo el gato.", 0, True, "")]


def test_a_long_sentence_is_cut_at_its_clauses_and_every_word_kept():
    long = (
        "Cuando llegamos a la estación de tren, el último tren ya se había ido, así que "
        "tuvimos que esperar dos horas en el frío y al final volvimos a casa en un taxi "
        "que nos costó mucho dinero."
    )
    parts = clauses(long, 15)
    assert " ".join(parts) == long  # nothing lost
    assert all(len(p.split()) <= 15 for p in parts)
    assert parts[:3] == [
        "Cuando llegamos a la estación de tren,",
        "el último tren ya se había ido,",
        "así que tuvimos que esperar dos horas en el frío",
    ]
    assert parts[3].startswith("y al final")
    # a clause of one or two words stays with its neighbour
    assert clauses(
        "Sí, veo el gato que duerme en la casa de mi abuela, y el perro también duerme mucho.", 15
    ) == ["Sí, veo el gato que duerme en la casa de mi abuela,", "y el perro también duerme mucho."]
    # a clause with no place to cut is halved at word boundaries
    words = " ".join(f"palabra{i}" for i in range(40))
    halves = clauses(words, 15)
    assert " ".join(halves) == words and all(len(h.split()) <= 15 for h in halves)


def test_parts_know_their_sentence_and_a_clause_keeps_its_comma():
    text = "Hola. " + "uno dos tres cuatro, cinco seis siete ocho nueve diez."
    parts = split(text, 5)
    assert [(p.text, p.sentence, p.last, p.joiner, p.first) for p in parts] == [
        ("Hola.", 0, True, "", True),
        ("uno dos tres cuatro,", 1, False, ",", True),
        ("cinco seis siete", 1, False, "", False),  # 7 words over 5: halved
        ("ocho nueve diez.", 1, True, "", False),
    ]
    # the model is given each clause as a sentence: a capital first, a full stop last
    assert [p.model_text for p in parts] == [
        "Hola.",
        "Uno dos tres cuatro.",
        "Cinco seis siete.",
        "Ocho nueve diez.",
    ]


def test_join_drops_a_clause_full_stop_puts_its_comma_back_and_goes_on_in_lower_case():
    parts = [
        Part("a,", 0, False, ","),
        Part("b,", 0, False, ",", first=False),
        Part("Juan c.", 0, False, "", first=False),
        Part("d.", 0, True, "", first=False),
        Part("e.", 1, True, ""),
    ]
    got = join(parts, ["When we arrived.", "We waited.", "Juan came.", "I left.", "Fine."])
    # "I" and a name of the source keep their capitals
    assert got == "When we arrived, we waited, Juan came I left. Fine."
    assert join([Part("x", 0, True)], [""]) == ""
