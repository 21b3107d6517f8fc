"""Names and rare words: byte fallback in the joint tokenizer, the pointer-generator's copy
distribution (sums to one, step = whole-sequence, sums repeated pieces), and a toy task where
only the copying model carries an unseen name over."""

import numpy as np
import pytest
import tensorflow as tf

from seq2seq.data import Tokenizer
from seq2seq.decoding import greedy_decode
from seq2seq.export_format import PAD
from seq2seq.models import Translator
from seq2seq.models.translator import scatter_to_vocab


def test_byte_fallback_round_trips_any_unicode_string():
    corpus = ["me llamo ana .", "my name is ana ."] * 40
    with_bytes = Tokenizer.train(corpus, vocab_size=300, byte_fallback=True)
    without = Tokenizer.train(corpus, vocab_size=40)
    for text in ("Zoë Ŝtefan", "Ελένη", "北京 2026", "naïve café ☕", "Ω≈ç√∫"):
        assert with_bytes.decode(with_bytes.encode(text)) == text
    assert without.decode(without.encode("北京")) != "北京"  # <unk> without the bytes


def test_the_copy_distribution_adds_the_weight_of_every_position_holding_a_piece():
    weights = tf.constant([[[0.5, 0.25, 0.25]], [[0.1, 0.2, 0.7]]])  # (B=2, T=1, S=3)
    ids = tf.constant([[4, 7, 4], [2, 3, 5]])
    copy = scatter_to_vocab(weights, ids, 8).numpy()
    want = np.zeros((2, 1, 8))
    want[0, 0, 4], want[0, 0, 7] = 0.75, 0.25
    want[1, 0, 2], want[1, 0, 3], want[1, 0, 5] = 0.1, 0.2, 0.7
    assert np.allclose(copy, want)


def small_copy_model(vocab=30):
    model = Translator(vocab, vocab, embedding_dim=8, units=8, attention="luong", copy=True)
    model((tf.ones([1, 2], tf.int32), tf.ones([1, 2], tf.int32)))
    return model


def test_the_mixture_is_a_distribution_and_steps_match_the_whole_sequence():
    model = small_copy_model()
    source = tf.constant([[5, 6, 7, 3, PAD], [9, 8, 3, PAD, PAD]])
    decoder_input = tf.constant([[2, 11, 12], [2, 13, 14]])
    log_p = model((source, decoder_input)).numpy()  # (B, T, V)
    assert np.allclose(np.exp(log_p).sum(-1), 1.0, atol=1e-5)
    memory, mask, states = model.encode(source)
    keys, ids = model.attention_keys(memory), model.memory_ids(source)
    for t in range(3):
        step, states, _ = model.step(decoder_input[:, t], states, memory, mask, keys, ids)
        assert np.allclose(step.numpy(), log_p[:, t], atol=1e-5)
    # reading backwards, the memory's pieces are the source reversed, padding left at the end
    assert ids.numpy().tolist() == [[3, 7, 6, 5, PAD], [3, 8, 9, PAD, PAD]]


def test_copy_needs_attention_and_one_vocabulary():
    with pytest.raises(ValueError, match="copy needs attention"):
        Translator(30, 30, attention="none", copy=True)
    with pytest.raises(ValueError, match="one vocabulary"):
        Translator(30, 40, attention="luong", copy=True)


def made_up_names(n: int, seed: int) -> list[str]:
    """Capitalised strings of 4–7 letters: names no vocabulary has a piece for."""
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnoprstuvz")
    return ["".join(rng.choice(letters, rng.integers(4, 8))).capitalize() for _ in range(n)]


NAMES = made_up_names(80, seed=0)
UNSEEN = made_up_names(4, seed=1)


def toy_pairs():
    pairs = []
    for name in NAMES:
        pairs += [
            (f"Me llamo {name}.", f"My name is {name}."),
            (f"{name} come pan.", f"{name} eats bread."),
            (f"Veo a {name}.", f"I see {name}."),
        ]
    return pairs


@pytest.mark.slow
@pytest.mark.parametrize("copy", [True, False])
def test_only_the_copying_model_carries_an_unseen_name_over(copy, tmp_path):
    from seq2seq.config import load_config
    from seq2seq.data import prepare
    from seq2seq.tasks import translation

    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{en}\t{es}\tx\n" for es, en in toy_pairs()))
    overrides = [
        f"data.dir={tmp_path / 'prepared'}",
        f"train.run_dir={tmp_path / 'runs'}",
        f"data.data_file={data}",
        "data.valid_fraction=0",
        "data.test_fraction=0",
        "data.joint_vocab_size=120",
        "model.attention=luong",
        f"model.copy={str(copy).lower()}",
        "train.max_steps=1500",
        "model.reverse_source=false",
    ]
    cfg = load_config("translate", "tiny", overrides=overrides)
    prepare(cfg)
    translation.run_training(cfg, progress=False)
    translator = translation.load_trained(cfg)
    sources = [f"Me llamo {n}." for n in UNSEEN] + [f"Veo a {n}." for n in UNSEEN]
    outputs = [h[0].text for h in translator.translate(sources, beam_size=1)]
    wanted = [f"My name is {n}." for n in UNSEEN] + [f"I see {n}." for n in UNSEEN]
    right = sum(o == w for o, w in zip(outputs, wanted, strict=True))
    if copy:
        assert right >= 7, outputs  # the unseen names are copied piece by piece
        # the mechanism ships inside the SavedModel: the export gives the same outputs
        from seq2seq.inference import ExportedModel

        exported = ExportedModel(translation.run_export(cfg, tmp_path / "models"), "translate")
        served = [h[0].text for h in exported.runner.translate(sources, beam_size=1)]
        assert served == outputs
        beam = [h[0].text for h in exported.runner.translate(sources, beam_size=3)]
        assert sum(o == w for o, w in zip(beam, wanted, strict=True)) >= 7, beam
    else:
        assert right <= 1, outputs  # without copying it can only guess names it has seen
    greedy = greedy_decode(translator.model, tf.constant([[5, 6, 3]]), 5)
    assert greedy["ids"].shape[0] == 1


def test_name_augmentation_replaces_shared_names_and_numbers_the_same_on_both_sides():
    from seq2seq.data.augment import augment_names, shared_names

    rows = [
        ("Tom vive en Boston desde 1995.", "Tom has lived in Boston since 1995.", "x"),
        ("Hola.", "Hello.", "x"),
        ("Necesito un cable USB.", "I need a USB cable.", "x"),
    ]
    assert shared_names(*rows[0][:2]) == ["Tom", "Boston", "1995"]
    assert shared_names(*rows[1][:2]) == []
    out = augment_names(rows, 1.0, seed=3)
    assert out[:3] == rows and len(out) == 5  # the originals stay; one copy per pair with names
    for (src, tgt, _), (new_src, new_tgt, tag) in zip([rows[0], rows[2]], out[3:], strict=True):
        assert tag == "x"
        old, new = shared_names(src, tgt), shared_names(new_src, new_tgt)
        assert len(new) == len(old) and not set(new) & set(old)  # every one replaced …
        swapped_src, swapped_tgt = src, tgt
        for a, b in zip(old, new, strict=True):
            assert b.isdigit() == a.isdigit()  # a number stays a number
            swapped_src, swapped_tgt = swapped_src.replace(a, b), swapped_tgt.replace(a, b)
        assert (swapped_src, swapped_tgt) == (new_src, new_tgt)  # … the same on both sides
    assert augment_names(rows, 0.0) == rows
    assert augment_names(rows, 1.0, seed=3) == out  # seeded
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        augment_names(rows, 1.5)
