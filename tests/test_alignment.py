"""Alignment: the attention behind each output piece, from the decoder through the export, the
server, the client and both CLIs."""

import json
import textwrap

import numpy as np
import pytest
from fresh import run_blocked
from servers import PAIRS, Server, same_numerics_config, translate_overrides

from seq2seq import export_format as fmt
from seq2seq.__main__ import main
from seq2seq.config import load_config
from seq2seq.data import prepare
from seq2seq.inference import ExportedModel, NoAlignment
from seq2seq.tasks import translation
from serving.client import Client, ServingError

SOURCES = [es for _, es in PAIRS] + ["El perro come pan."]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A tiny translator without attention, exported."""
    root = tmp_path_factory.mktemp("plain")
    overrides = [o for o in translate_overrides(root) if not o.startswith("model.attention")]
    cfg = load_config("translate", "tiny", overrides=[*overrides, "model.attention=none"])
    prepare(cfg)
    translation.run_training(cfg, progress=False)
    return translation.load_trained(cfg), translation.run_export(cfg, root / "models" / "translate")


@pytest.fixture(scope="module")
def luong(models):
    """The serving tests' tiny translator with Luong attention: its run and its export."""
    cfg = load_config("translate", "tiny", overrides=translate_overrides(models.parent))
    return translation.load_trained(cfg), models / "translate" / "1"


def teacher_forced(translator, source: str, produced: list[int]) -> np.ndarray:
    """The attention of the teacher-forced decoder reading `<sos> + produced[:-1]`."""
    src = fmt.input_ids([translator.source.encode(source)], 200)
    dec = np.array([[fmt.SOS, *produced[:-1]]], np.int32)
    return translator.model.attention_weights(src, dec).numpy()[0]


def check_shapes(h):
    assert len(h.alignment) == len(h.target_tokens) > 0
    assert all(len(row) == len(h.source_tokens) for row in h.alignment)
    np.testing.assert_allclose([sum(row) for row in h.alignment], 1.0, atol=1e-5)
    assert all(w >= 0 for row in h.alignment for w in row)


def test_greedy_alignment_is_the_teacher_forced_attention_of_its_output(luong):
    translator, _ = luong
    hyps = translator.translate(SOURCES, beam_size=1, alignment=True)
    for source, (h,) in zip(SOURCES, hyps, strict=True):
        check_shapes(h)
        assert list(h.source_tokens) == translator.source.sp.id_to_piece(
            translator.source.encode(source)
        )
        assert h.target_tokens[-1] == "<eos>"
        assert h.text == translator.target.sp.decode_pieces(list(h.target_tokens[:-1]))
        produced = translator.target.sp.piece_to_id(list(h.target_tokens[:-1])) + [fmt.EOS]
        want = teacher_forced(translator, source, produced)
        np.testing.assert_allclose(h.alignment, want[:, : len(h.source_tokens)], atol=1e-5)
    # the same outputs and scores as without alignment
    plain = translator.translate(SOURCES, beam_size=1)
    assert [(h[0].text, h[0].score) for h in hyps] == [(h[0].text, h[0].score) for h in plain]


def test_beam_alignment_belongs_to_each_returned_hypothesis(luong):
    translator, _ = luong
    hyps = translator.translate(SOURCES[:3], beam_size=3, n_best=3, alignment=True)
    for source, n_best in zip(SOURCES, hyps, strict=False):
        assert len({h.text for h in n_best}) == 3
        for h in n_best:
            check_shapes(h)
            pieces = [p for p in h.target_tokens if p != "<eos>"]
            produced = translator.target.sp.piece_to_id(pieces)
            produced += [fmt.EOS] if h.target_tokens[-1] == "<eos>" else []
            want = teacher_forced(translator, source, produced)
            np.testing.assert_allclose(h.alignment, want[:, : len(h.source_tokens)], atol=1e-5)
    # beam 1 is greedy search, alignment included
    one = translator.run(SOURCES, fmt.Decoding(1, 20, 0.0), alignment=True)
    beam_one = translator.functions[fmt.BEAM_ALIGNED](
        fmt.input_ids(translator.source.encode_batch(SOURCES), 200), 1, 20, 0.0
    )
    for i, (h,) in enumerate(one):  # the batch above is in the order given
        got = beam_one["alignment"].numpy()[i, 0, : len(h.target_tokens), : len(h.source_tokens)]
        np.testing.assert_allclose(got, h.alignment, atol=1e-6)


def test_word_alignment_merges_pieces_into_words():
    rows = [[0.1, 0.6, 0.3], [0.2, 0.1, 0.7], [0.9, 0.05, 0.05], [0.3, 0.3, 0.4]]
    got = fmt.word_alignment(["▁la", "▁ca", "sa"], ["▁the", "▁ho", "use", "<eos>"], rows)
    # "house" = rows 1 + 2 → la 1.1, casa 0.9: "la"; "the" → casa (0.6 + 0.3)
    assert got == [("the", "casa"), ("house", "la")]
    assert fmt.word_alignment([], ["▁a"], [[]]) == []


def test_a_model_without_attention_says_so(plain):
    translator, export = plain
    assert not translator.has_alignment and translator.translate(["Veo el gato."])
    with pytest.raises(NoAlignment, match="has no attention"):
        translator.translate(["Veo el gato."], alignment=True)
    meta = json.loads((export / "assets.extra" / "metadata.json").read_text())
    assert meta["alignment"] is False and fmt.GREEDY_ALIGNED not in meta["signatures"]
    with pytest.raises(NoAlignment):
        ExportedModel(export).runner.translate(["Veo el gato."], alignment=True)
    with Server(export.parent.parent) as srv, Client(srv.target, timeout=60) as client:
        assert client.translate(["Veo el gato."])[0].text
        with pytest.raises(ServingError) as err:
            client.translate(["Veo el gato."], return_alignment=True)
    assert err.value.code.name == "FAILED_PRECONDITION"
    assert "has no attention" in err.value.details


FRESH = textwrap.dedent(
    """
    import json
    import sentencepiece as spm
    import tensorflow as tf

    path, texts = sys.argv[1], json.loads(sys.argv[2])
    model = tf.saved_model.load(path)
    sp = spm.SentencePieceProcessor(model_file=path + "/assets.extra/source.spm")
    ids = sp.encode(texts)
    width = max(map(len, ids))
    batch = tf.constant([row + [0] * (width - len(row)) for row in ids], tf.int32)
    greedy = model.translate_greedy_aligned(batch, tf.constant(20))
    beam = model.translate_beam_aligned(batch, tf.constant(3), tf.constant(20), tf.constant(0.6))
    assert "seq2seq" not in sys.modules
    print(json.dumps({
        "greedy": greedy["alignment"].numpy().tolist(),
        "greedy_ids": greedy["ids"].numpy().tolist(),
        "beam": beam["alignment"].numpy().tolist(),
        "lengths": [len(r) for r in ids],
    }))
    """
)


def test_alignment_survives_export_in_a_process_without_project_code(luong):
    translator, export = luong
    texts = SOURCES[:4]
    proc = run_blocked(FRESH, str(export), json.dumps(texts))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    here = translator.translate(texts, beam_size=1, alignment=True, batch_size=None)
    for i, (h,) in enumerate(here):
        n, s = len(h.target_tokens), out["lengths"][i]
        assert s == len(h.source_tokens)
        got = np.array(out["greedy"][i])[:n, :s]
        np.testing.assert_allclose(got, h.alignment, atol=1e-5)
        np.testing.assert_allclose(np.array(out["beam"][i])[0, :n, :s].sum(axis=1), 1, atol=1e-5)


def test_alignment_over_grpc_the_client_and_both_clis(luong, models, capsys):
    translator, export = luong
    want = translator.translate(SOURCES[:2], beam_size=2, n_best=2, alignment=True)
    with (
        Server(models, *same_numerics_config(models.parent)) as srv,
        Client(srv.target, timeout=60) as client,
    ):
        got = client.translate(SOURCES[:2], beam_size=2, n_best=2, return_alignment=True)
        for w_hyps, g in zip(want, got, strict=True):
            for w, h in zip(w_hyps, g.hypotheses, strict=True):
                assert (h.text, h.source_tokens, h.target_tokens) == (
                    w.text,
                    list(w.source_tokens),
                    list(w.target_tokens),
                )
                np.testing.assert_allclose(h.alignment, w.alignment, atol=1e-6)
                assert h.word_alignment == [tuple(p) for p in w.word_alignment]
        assert not client.translate(SOURCES[:1])[0].hypotheses[0].alignment  # off by default
        from serving.client.cli import main as client_main

        capsys.readouterr()
        argv = ["--target", srv.target, "translate", "--alignment", "--beam-size", "1"]
        assert client_main([*argv, "Veo el gato."]) == 0
        shown = capsys.readouterr().out
    best = translator.translate(["Veo el gato."], beam_size=1, alignment=True)[0][0]
    lines = shown.splitlines()
    assert lines[0].startswith("I see the cat. (")
    assert lines[1].split() == list(best.source_tokens)  # the header: source pieces
    assert [line.split()[0] for line in lines[2 : 2 + len(best.target_tokens)]] == list(
        best.target_tokens
    )
    assert "words: I←" in shown
    # python -m seq2seq translate --alignment --json, from the export
    assert main(["translate", "--model", str(export), "--json", "--alignment", "Veo el gato."]) == 0
    row = json.loads(capsys.readouterr().out)["hypotheses"][0]
    assert row["target_tokens"] == list(best.target_tokens)
    np.testing.assert_allclose(row["alignment"], best.alignment, atol=1e-6)
