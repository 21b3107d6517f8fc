"""Answers that say how far to trust them (seq2seq.answers): the warnings, the confidence of a
text and of its parts, and a paragraph's n-best joined from its sentences'."""

import numpy as np

from seq2seq import confidence as conf
from seq2seq.answers import (
    LOW_CONFIDENCE,
    NOT_SOURCE_LANGUAGE,
    TRUNCATED,
    ClassificationChecks,
    TranslationChecks,
)
from seq2seq.inference import Hypothesis

ROWS = ((0.9, 0.1), (0.1, 0.9))


def hyp(text, score=-0.3, ended=True, target=("▁I", "<eos>")):
    target = target if ended else target[:-1]
    return Hypothesis(text, score, ("▁Veo", "."), target, ROWS[: len(target)], (), ended)


def by_logprob():
    """A confidence that reads the mean log-probability only: high above -1, low below."""
    names = ("mean_logprob",)
    return conf.ConfidenceModel(names, (-1.0,), (0.1,), (1.0,), 0.0)


def checks(**kw):
    return TranslationChecks("es", max_words=5, max_input_tokens=10, confidence=by_logprob(), **kw)


def codes(answer):
    return [w.code for w in answer.warnings]


def test_a_sure_spanish_sentence_has_no_warning():
    c = checks()
    parts = c.parts("Veo el gato.")
    answer = c.answer("Veo el gato.", parts, [4], [[hyp("I see the cat.", -0.2)]], 0.0)
    assert codes(answer) == [] and answer.sentences == []
    assert answer.confidence > 0.99 and answer.language.looks_expected
    assert answer.hypotheses[0].text == "I see the cat."


def test_english_input_an_unsure_translation_and_a_cut_are_each_flagged():
    c = checks()
    text = "The weather is nice today."
    answer = c.answer(text, c.parts(text), [6], [[hyp("It's going.", -3.0, ended=False)]], 0.0)
    assert codes(answer) == [NOT_SOURCE_LANGUAGE, TRUNCATED, LOW_CONFIDENCE]
    notes = {w.code: w.message for w in answer.warnings}
    assert notes[NOT_SOURCE_LANGUAGE] == "this does not look like Spanish (it looks like English)"
    assert "stopped at the length limit" in notes[TRUNCATED]
    assert answer.confidence < conf.LOW
    # an input over the model's limit (10 pieces here) is cut: said so, with the numbers
    cut = c.answer("Veo el gato.", c.parts("Veo el gato."), [14], [[hyp("I see.")]], 0.0)
    assert codes(cut) == [TRUNCATED]
    assert cut.warnings[0].message == (
        "the input is 14 pieces long and the model reads 10: its end was not translated"
    )


def test_a_paragraph_is_answered_from_its_sentences_least_sure_first():
    c = checks()
    text = "Veo el gato. Tengo hambre. Es tarde."
    parts = c.parts(text)
    assert [p.text for p in parts] == ["Veo el gato.", "Tengo hambre.", "Es tarde."]
    nbest = [
        [hyp("I see the cat.", -0.1), hyp("I saw the cat.", -0.5)],
        [hyp("I'm hungry.", -0.2), hyp("I am hungry.", -0.4)],
        [hyp("It's late.", -0.3), hyp("It is late.", -0.9)],
    ]
    answer = c.answer(text, parts, [4, 3, 3], nbest, 0.0)
    assert [h.text for h in answer.hypotheses] == [
        "I see the cat. I'm hungry. It's late.",
        "I saw the cat. I am hungry. It is late.",
    ]
    assert answer.hypotheses[0].score == np.mean([-0.1, -0.2, -0.3])
    assert answer.hypotheses[0].alignment == ()  # the parts carry theirs
    assert [s.source for s in answer.sentences] == [p.text for p in parts]
    assert answer.sentences[0].hypothesis.alignment == ROWS
    assert answer.confidence == min(s.confidence for s in answer.sentences)
    assert answer.confidence == answer.sentences[2].confidence


def test_without_a_confidence_model_there_is_no_confidence_and_no_low_warning():
    c = TranslationChecks("es", 15, 200, None)
    answer = c.answer("Veo el gato.", c.parts("Veo el gato."), [4], [[hyp("I", -9.0)]], 0.0)
    assert answer.confidence is None and codes(answer) == []


def test_an_old_export_metadata_gives_checks_with_the_corpus_languages():
    t = TranslationChecks.from_metadata(
        {"source_language": "spa", "config": {"data": {"max_words": 12}}}, 200
    )
    assert (t.language, t.max_words, t.confidence) == ("es", 12, None)
    assert ClassificationChecks.from_metadata({"dataset": "sentiment"}).language == "en"
    assert ClassificationChecks.from_metadata({"dataset": "my_file"}).language is None


def test_a_classification_warns_of_a_foreign_text_and_a_coin_toss():
    c = ClassificationChecks("en")
    sure = c.answer("A warm, funny film.", "pos", {"neg": 0.1, "pos": 0.9})
    assert codes(sure) == []
    spanish = c.answer("Una película aburrida y larga.", "neg", {"neg": 0.55, "pos": 0.45})
    assert codes(spanish) == [NOT_SOURCE_LANGUAGE, LOW_CONFIDENCE]
    assert "neg at 55% is close to a coin toss" in spanish.warnings[1].message


def test_an_output_cut_at_max_length_has_no_chance_whatever_its_score():
    c = checks()
    sure_but_cut = hyp("I see the cat the cat the cat", -0.1, ended=False)
    answer = c.answer("Veo el gato.", c.parts("Veo el gato."), [4], [[sure_but_cut]], 0.0)
    assert answer.confidence == 0.0
    assert codes(answer) == [TRUNCATED, LOW_CONFIDENCE]
