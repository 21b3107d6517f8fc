"""Translator: training, decoding, resume and export, on a handful of pairs written here."""

import json
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from fresh import run_blocked

from seq2seq.__main__ import main
from seq2seq.config import load_config
from seq2seq.data import prepare
from seq2seq.decoding import beam_search, greedy_decode
from seq2seq.export_format import EOS, PAD, SOS, pad
from seq2seq.tasks import translation
from seq2seq.training import weights_digest

PAIRS = [
    ("I see the cat.", "Veo el gato."),
    ("I see the dog.", "Veo el perro."),
    ("You see the cat.", "Ves el gato."),
    ("We eat bread.", "Comemos pan."),
    ("They eat bread.", "Comen pan."),
    ("I like milk.", "Me gusta la leche."),
    ("The cat sleeps.", "El gato duerme."),
    ("The dog sleeps.", "El perro duerme."),
]


def make_cfg(root, *extra):
    data = root / "pairs.tsv"
    data.write_text("".join(f"{en}\t{es}\tCC-BY test\n" for en, es in PAIRS))
    return load_config(
        "translate",
        "tiny",
        overrides=[
            f"data.dir={root / 'prepared'}",
            f"train.run_dir={root / 'runs'}",
            f"data.data_file={data}",
            "data.valid_fraction=0",
            "data.test_fraction=0",
            *extra,
        ],
    )


@pytest.fixture(scope="module", params=["none", "luong"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"translate-{request.param}")
    cfg = make_cfg(root, f"model.attention={request.param}", "train.max_steps=250")
    prepare(cfg)
    summary = translation.run_training(cfg, progress=False)
    return cfg, summary, translation.load_trained(cfg)


def test_tiny_model_overfits_to_exact_greedy_and_beam_outputs(trained):
    cfg, summary, decoder = trained
    assert summary["steps"] == 250
    sources = [es for _, es in PAIRS]
    want = [en for en, _ in PAIRS]
    greedy = [h[0][0] for h in decoder.translate(sources, beam_size=1)]
    beam = [h[0][0] for h in decoder.translate(sources, beam_size=3)]
    assert greedy == want
    assert beam == want


def test_beam_size_one_equals_greedy(trained):
    _, _, decoder = trained
    src = pad([decoder.source.encode(es) for _, es in PAIRS] + [[5, 6, 7, 8]])
    g_ids, g_len, g_scores = greedy_decode(decoder.model, src, 20).values()
    b_ids, b_len, b_scores = beam_search(decoder.model, src, 1, 20, 0.0).values()
    np.testing.assert_array_equal(b_ids[:, 0, :], g_ids)
    np.testing.assert_array_equal(b_len[:, 0], g_len)
    np.testing.assert_allclose(b_scores[:, 0], g_scores, rtol=1e-5)


def test_beam_returns_sorted_distinct_n_best(trained):
    _, _, decoder = trained
    hyps = decoder.translate(["Veo el gato."], beam_size=4, n_best=4)[0]
    assert len(hyps) == 4
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({h.text for h in hyps}) == 4
    assert hyps[0][0] == "I see the cat."


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beam_size": 0}, "beam_size must be an integer ≥ 1, got 0"),
        ({"beam_size": 2.5}, "beam_size must be an integer ≥ 1, got 2.5"),
        ({"beam_size": 2, "n_best": 3}, "n_best (3) must not exceed beam_size (2)"),
        ({"max_length": 0}, "max_length must be an integer ≥ 1, got 0"),
        ({"batch_size": -1}, "batch_size must be an integer ≥ 1, got -1"),
        ({"beam_size": 2, "length_penalty": -0.5}, "length_penalty must be a number ≥ 0, got -0.5"),
    ],
)
def test_translate_refuses_settings_it_cannot_honour(trained, options, message):
    # beam_size 0 used to decode greedily and n_best > beam_size to return fewer hypotheses
    _, _, decoder = trained
    with pytest.raises(ValueError) as err:
        decoder.translate(["Veo el gato."], **options)
    assert str(err.value) == message


def test_decoded_ids_end_with_eos_then_padding(trained):
    _, _, decoder = trained
    src = pad([decoder.source.encode(es) for _, es in PAIRS])
    ids, lengths, _ = greedy_decode(decoder.model, src, 20).values()
    for row, n in zip(ids.numpy(), lengths.numpy(), strict=True):
        assert row[n - 1] == EOS and np.all(row[n:] == PAD) and SOS not in row


def test_teacher_forcing_logits_shape_and_padding_does_not_leak(trained):
    _, _, decoder = trained
    model = decoder.model
    src = tf.constant([[5, 6, 7, 0, 0]], tf.int32)
    dec = tf.constant([[SOS, 8, 9, 0]], tf.int32)
    logits = model((src, dec))
    assert logits.shape == (1, 4, model.target_vocab_size)
    # extra source padding changes nothing: the encoder masks it
    longer = model((tf.pad(src, [[0, 0], [0, 6]]), dec))
    np.testing.assert_allclose(longer, logits, atol=1e-5)


def test_resume_after_interruption_gives_the_same_weights(tmp_path, monkeypatch):
    extra = [
        "train.max_steps=40",
        "train.checkpoint_every=10",
        "train.eval_every=1000",
        "model.dropout=0.1",
        "train.batch_size=4",
    ]
    (tmp_path / "a").mkdir()
    straight = make_cfg(tmp_path / "a", *extra)
    prepare(straight)
    full = translation.run_training(straight, progress=False)

    (tmp_path / "b").mkdir()
    cut = make_cfg(tmp_path / "b", *extra)
    prepare(cut)
    original = translation.Batches.iterate
    seen = {"n": 0}

    def dying_iterate(self, epoch=0, skip=0):
        for batch in original(self, epoch, skip):
            seen["n"] += 1
            if seen["n"] > 25:  # killed between checkpoints (the last one was at step 20)
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(translation.Batches, "iterate", dying_iterate)
    with pytest.raises(KeyboardInterrupt):
        translation.run_training(cut, progress=False)
    monkeypatch.setattr(translation.Batches, "iterate", original)
    resumed = translation.run_training(cut, progress=False)
    assert resumed["steps"] == 40
    assert resumed["weights_digest"] == full["weights_digest"]


def test_a_run_that_spent_its_time_is_finished_until_the_cap_is_raised(tmp_path, capsys):
    extra = ["train.max_steps=30", "train.eval_every=1000", "train.batch_size=4"]
    capped = make_cfg(tmp_path, *extra, "train.max_minutes=0.0001")  # 6 ms: one step
    prepare(capped)
    first = translation.run_training(capped, progress=False)
    assert (first["steps"], first["stop_reason"]) == (1, "max_minutes")
    capsys.readouterr()
    again = translation.run_training(capped, progress=False)
    assert "this run is finished (out of time at step 1)" in capsys.readouterr().out
    assert (again["steps"], again["stop_reason"]) == (1, "max_minutes")
    assert again["weights_digest"] == first["weights_digest"]
    assert again["wall_seconds"] == first["wall_seconds"]
    raised = translation.run_training(make_cfg(tmp_path, *extra), progress=False)
    assert (raised["steps"], raised["stop_reason"]) == (30, "max_steps")


FRESH = textwrap.dedent(
    """
    import json
    import sentencepiece as spm
    import tensorflow as tf

    path, texts = sys.argv[1], json.loads(sys.argv[2])
    model = tf.saved_model.load(path)
    src = spm.SentencePieceProcessor(model_file=path + "/assets.extra/source.spm")
    tgt = spm.SentencePieceProcessor(model_file=path + "/assets.extra/target.spm")
    ids = src.encode(texts)
    width = max(map(len, ids))
    batch = tf.constant([row + [0] * (width - len(row)) for row in ids], tf.int32)

    def text(row):
        row = [int(i) for i in row]
        row = row[: row.index(3)] if 3 in row else row
        return tgt.decode([i for i in row if i > 3])

    greedy = model.translate_greedy(batch, tf.constant(20))
    beam = model.translate_beam(batch, tf.constant(3), tf.constant(20), tf.constant(0.6))
    meta = json.load(open(path + "/assets.extra/metadata.json"))
    assert "seq2seq" not in sys.modules
    print(json.dumps({
        "greedy": [text(r) for r in greedy["ids"].numpy()],
        "greedy_scores": greedy["scores"].numpy().tolist(),
        "beam": [[text(r) for r in rows] for rows in beam["ids"].numpy()],
        "meta": {k: meta[k] for k in ("task", "source_language", "target_language", "version")},
    }))
    """
)


def test_export_reloads_in_a_tensorflow_and_sentencepiece_only_process(trained, tmp_path, capsys):
    cfg, _, decoder = trained
    path = translation.run_export(cfg, tmp_path / "models" / "translate")
    assert path.name == "1" and (path / "assets.extra" / "metadata.json").exists()
    texts = [es for _, es in PAIRS[:4]] + ["El perro come pan."]  # last one is unseen
    proc = run_blocked(FRESH, str(path), json.dumps(texts))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    here_greedy = decoder.translate(texts, beam_size=1)
    here_beam = decoder.translate(texts, beam_size=3, n_best=3)
    assert out["greedy"] == [h[0][0] for h in here_greedy]
    np.testing.assert_allclose(out["greedy_scores"], [h[0][1] for h in here_greedy], rtol=1e-4)
    assert [b[0] for b in out["beam"]] == [h[0][0] for h in here_beam]
    assert out["meta"] == {
        "task": "translate",
        "source_language": "spa",
        "target_language": "eng",
        "version": 1,
    }
    # `python -m seq2seq translate --model` decodes with the export, as the server does
    capsys.readouterr()
    assert main(["translate", "--model", str(path), "--beam-size", "1", *texts]) == 0
    assert capsys.readouterr().out.splitlines() == out["greedy"]
    assert main(["classify", "--model", str(path), "Hola."]) == 2
    assert "is a translate model, not a classify one" in capsys.readouterr().err
    # a beam size below 1 is refused, not replaced by the default (0 used to become 5)
    for bad in ("0", "-3"):
        assert main(["translate", "--model", str(path), "--beam-size", bad, "Hola."]) == 2
        assert capsys.readouterr().err == f"error: beam_size must be an integer ≥ 1, got {bad}\n"
    # a second export is a new version; the first is left untouched
    assert translation.run_export(cfg, tmp_path / "models" / "translate").name == "2"


def test_weights_digest_changes_with_weights(trained):
    _, _, decoder = trained
    before = weights_digest(decoder.model)
    v = decoder.model.trainable_variables[0]
    v.assign(v + 1.0)
    try:
        assert weights_digest(decoder.model) != before
    finally:
        v.assign(v - 1.0)


def test_evaluation_scores_a_reference_file_as_sacrebleu_does_and_refuses_bad_ones(
    trained, tmp_path
):
    import copy

    import sacrebleu

    from seq2seq.data import DataError

    cfg, _, decoder = trained
    # the fixture's data has no test split: evaluating it says what to do instead
    with pytest.raises(DataError, match="test.tsv holds no examples .*EVAL_FILE="):
        translation.run_evaluation(cfg)
    cfg = copy.deepcopy(cfg)
    # the first three sentences get references the model does not produce, the fourth a second
    # reference equal to its output: BLEU is sacreBLEU's over the decoder's own outputs
    refs = [["I see a cat."], ["I watch the dog."], ["You are seeing the cat."]]
    refs += [["We are eating bread.", "We eat bread."]]
    refs += [[en] for en, _ in PAIRS[4:]]
    sources = [es for _, es in PAIRS]
    path = tmp_path / "eval.tsv"
    path.write_text(
        "".join(f"{s}\t" + "\t".join(r) + "\n" for s, r in zip(sources, refs, strict=True))
    )
    cfg.eval.eval_file = str(path)
    results = translation.run_evaluation(cfg)
    assert results["evaluated_on"] == str(path)
    streams = [[r[0] for r in refs], [r[1] if len(r) > 1 else None for r in refs]]
    for name, k in (("greedy", 1), ("beam", cfg.eval.beam_size)):
        hyps = [h[0][0] for h in decoder.translate(sources, beam_size=k)]
        assert hyps == [en for en, _ in PAIRS]  # the tiny model reproduces its training pairs
        want = sacrebleu.corpus_bleu(hyps, streams)
        assert results[name]["bleu"] == round(want.score, 2)
        assert 0 < results[name]["bleu"] < 100
        assert results[name]["sentences"] == len(PAIRS) and results[name]["beam_size"] == k
        assert "nrefs:var" in results[name]["bleu_signature"]
    # the second reference counts: without it, sentence 4 no longer matches exactly
    one_ref = sacrebleu.corpus_bleu([en for en, _ in PAIRS], [[r[0] for r in refs]])
    assert results["greedy"]["bleu"] > round(one_ref.score, 2)
    written = json.loads((cfg.run_dir / "eval.json").read_text())
    assert written["greedy"]["bleu"] == results["greedy"]["bleu"]
    assert written["examples"][3] == {
        "source": "Comemos pan.",
        "reference": "We are eating bread.",
        "hypothesis": "We eat bread.",
    }
    for content, match in (
        ("Veo el gato.\tI see the cat.\nVeo el perro.\n", r"eval.tsv:2: expected 'source<TAB>"),
        ("\n  \n", "no sentences to evaluate"),
        ("Veo el gato.\tI see the cat.\nVeo el perro.\t \t\n", "eval.tsv:2: an empty source or"),
        ("\tI see the cat.\n", "eval.tsv:1: an empty source or no reference"),
    ):
        path.write_text(content)
        with pytest.raises(DataError, match=match):
            translation.run_evaluation(cfg)
    cfg.eval.eval_file = str(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="eval file not found"):
        translation.run_evaluation(cfg)
    assert written == json.loads((cfg.run_dir / "eval.json").read_text())  # not overwritten


def test_tensorboard_events_and_the_progress_bar(tmp_path, capsys):
    """The documented TensorBoard tags, at the logged steps, and tqdm's bar on stderr."""
    from seq2seq.report import read_logs

    cfg = load_config(
        "translate",
        "tiny",
        overrides=[
            f"data.dir={tmp_path / 'prepared'}",
            f"train.run_dir={tmp_path / 'runs'}",
            f"data.data_file={make_cfg(tmp_path).data.data_file}",
            "data.valid_fraction=0.25",
            "data.test_fraction=0",
            "model.attention=luong",
            "train.max_steps=40",
            "train.eval_every=20",
            "train.log_every=10",
            "train.batch_size=4",
        ],
    )
    prepare(cfg)
    translation.run_training(cfg, progress=True)
    err = capsys.readouterr().err
    assert "40/40" in err and "step/s" in err and "loss=" in err  # tqdm's bar, to the end
    logs = read_logs(cfg.run_dir)
    rnns = ("encoder_0", "decoder_0")
    per_rnn = ("grad_norm_per_step", "grad_norm_by_t", "grad_norm_first_over_last")
    want = {"train/loss", "train/grad_norm", "train/learning_rate", "valid/loss"}
    want |= {"valid/bleu_greedy"} | {f"{p}/{r}" for p in per_rnn for r in rnns}
    assert set(logs) == want
    every_log = ("train/loss", "train/grad_norm", "train/learning_rate")
    for tag in (*every_log, *[f"{p}/encoder_0" for p in per_rnn]):
        assert [s for s, _ in logs[tag]] == [10, 20, 30, 40], tag
    assert [s for s, _ in logs["valid/loss"]] == [20, 40]
    assert all(np.isfinite(float(v)) for _, v in logs["train/loss"])
    warm, peak = float(logs["train/learning_rate"][0][1]), cfg.train.learning_rate
    assert 0 < warm <= peak


def test_a_two_layer_translator_trains_decodes_and_exports(tmp_path):
    cfg = make_cfg(tmp_path, "model.layers=2", "model.attention=luong", "train.max_steps=300")
    prepare(cfg)
    summary = translation.run_training(cfg, progress=False)
    assert summary["steps"] == 300
    decoder = translation.load_trained(cfg)
    assert len(decoder.model.encoder_layers) == len(decoder.model.decoder_layers) == 2
    sources = [es for _, es in PAIRS]
    got = [h[0].text for h in decoder.translate(sources, beam_size=1)]
    assert got == [en for en, _ in PAIRS]
    assert [h[0].text for h in decoder.translate(sources, beam_size=3)] == got
    # the export decodes the same with TensorFlow and SentencePiece only
    from seq2seq.inference import ExportedModel

    exported = ExportedModel(translation.run_export(cfg, tmp_path / "models" / "translate"))
    assert [h[0].text for h in exported.runner.translate(sources, beam_size=1)] == got
