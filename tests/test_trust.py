"""Trust, end to end on a real (tiny) export: the confidence is fitted at export and served,
and no answer ever shows a broken character or a byte piece, whatever the input."""

import random
import re

import pytest
from servers import OBJECTS, SUBJECTS

from seq2seq.config import load_config
from seq2seq.data import prepare
from seq2seq.export_format import BYTE_PIECE
from seq2seq.inference import ExportedModel
from seq2seq.tasks import translation
from serving.server.predictor import Predictor

BYTES = re.compile(r"<0x[0-9A-Fa-f]{2}>")
# scripts and symbols a user may paste: emoji (with joiners and skin tones), CJK, Arabic,
# Cyrillic, Devanagari, Greek, combining accents, currency and maths
ALPHABETS = [
    "😀😂👍🎉🔥🇪🇸👩‍💻👍🏽❤️",
    "今天天气很好我们去公园",
    "مرحبا بالعالم",
    "Привет мир",
    "नमस्ते दुनिया",
    "Καλημέρα κόσμε",
    "e\u0301a\u0300n\u0303",
    "€£¥₹∑∫√∞≠≤≥±×÷",
    "¿¡«»—…",
    "abcdefghijklmnñopqrstuvwxyz",
]


def weird_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(1, 8)):
            alphabet = rng.choice(ALPHABETS)
            words.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))))
        if rng.random() < 0.5:  # some real words among them
            words.insert(rng.randrange(len(words) + 1), rng.choice(["Veo", "el", "gato", "."]))
        texts.append(" ".join(words))
    return texts


@pytest.fixture(scope="module")
def barely_trained(tmp_path_factory):
    """A translator with one vocabulary and byte fallback, trained 5 steps: it writes nearly
    random pieces, most of them bytes (256 of its ~300), so broken sequences abound; a
    validation split of 30 pairs to fit its confidence on."""
    root = tmp_path_factory.mktemp("trust")
    pairs = [
        (f"{en} {o} {n}.", f"{es} {p} {n}.")
        for en, es in SUBJECTS
        for o, p in OBJECTS
        for n in range(5)
    ]
    data = root / "pairs.tsv"
    data.write_text("".join(f"{en}\t{es}\tx\n" for en, es in pairs))
    cfg = load_config(
        "translate",
        "tiny",
        overrides=[
            f"data.dir={root / 'prepared'}",
            f"train.run_dir={root / 'runs'}",
            f"data.data_file={data}",
            "data.valid_fraction=0.25",
            "data.test_fraction=0",
            "data.joint_vocab_size=300",
            "model.attention=luong",
            "model.copy=true",
            "train.max_steps=5",
        ],
    )
    prepare(cfg)
    translation.run_training(cfg, progress=False)
    path = translation.run_export(cfg, root / "models" / "translate")
    return path


def test_the_confidence_is_fitted_at_export_and_each_answer_has_one(barely_trained):
    model = ExportedModel(barely_trained, "translate")
    stored = model.metadata["confidence"]
    assert stored["fitted_on"].startswith("validation split (") and model.checks.confidence
    predictor = Predictor(barely_trained.parent.parent)
    try:
        answers, _ = predictor.translate(["Veo el gato.", "Ves la casa. Vemos el libro."])
        for answer in answers:
            assert 0.0 <= answer.confidence <= 1.0
        # a five-step model is acceptable nowhere: the confidence says so
        assert all(a.confidence < 0.5 for a in answers)
        assert "low_confidence" in [w.code for w in answers[0].warnings]
        assert [s.source for s in answers[1].sentences] == ["Ves la casa.", "Vemos el libro."]
    finally:
        predictor.close()


def test_a_thousand_texts_of_emoji_symbols_and_scripts_never_show_broken_characters(
    barely_trained,
):
    predictor = Predictor(barely_trained.parent.parent)
    texts = weird_texts(1000)
    broken_raw = 0  # outputs whose byte pieces do not make UTF-8: what the guard must catch
    try:
        for i in range(0, len(texts), 50):
            answers, _ = predictor.translate(texts[i : i + 50], return_alignment=True)
            for text, answer in zip(texts[i : i + 50], answers, strict=True):
                shown = [h.text for h in answer.hypotheses]
                hyps = [s.hypothesis for s in answer.sentences] or answer.hypotheses
                shown += [h.text for h in hyps]
                shown += [w for h in hyps for pair in h.word_alignment for w in pair]
                for s in shown:
                    assert "\ufffd" not in s and not BYTES.search(s), (text, s)
                for h in hyps:
                    data = bytes(
                        int(m.group(1), 16) for p in h.target_tokens if (m := BYTE_PIECE.match(p))
                    )
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        broken_raw += 1
    finally:
        predictor.close()
    assert broken_raw >= 100, broken_raw  # the model did write broken sequences
