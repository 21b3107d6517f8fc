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
    assert parts[0] == "Cuando llegamos a la estación de tren, el último tren ya se había ido,"
    assert len(parts) >= 3
    # a clause with no place to cut is halved at word boundaries
    words = " ".join(f"palabra{i}" for i in range(40))
    halves = clauses(words, 15)
    assert " ".join(halves) == words and all(len(h.split()) <= 15 for h in halves)


def test_parts_know_their_sentence_and_a_clause_keeps_its_comma():
    text = "Hola. " + "uno dos tres cuatro, cinco seis siete ocho nueve diez."
    parts = split(text, 5)
    assert [(p.text, p.sentence, p.last, p.joiner) for p in parts] == [
        ("Hola.", 0, True, ""),
        ("uno dos tres cuatro,", 1, False, ","),
        ("cinco seis siete", 1, False, ""),  # 7 words over 5: halved
        ("ocho nueve diez.", 1, True, ""),
    ]


def test_join_drops_a_clause_full_stop_and_puts_its_comma_back():
    parts = [Part("a,", 0, False, ","), Part("b.", 0, True, ""), Part("c.", 1, True, "")]
    assert join(parts, ["When we arrived.", "We waited.", "Fine."]) == (
        "When we arrived, We waited. Fine."
    )
    assert join([Part("x", 0, True)], [""]) == ""
