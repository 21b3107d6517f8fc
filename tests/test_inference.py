"""One inference path: evaluation, the CLI (from the run and from the export) and the server give
the same outputs and the same scores for the same texts."""

import copy
import json

import numpy as np
import pytest
from servers import PAIRS, Server, classify_overrides, same_numerics_config, translate_overrides

from seq2seq import export_format as fmt
from seq2seq.__main__ import main
from seq2seq.config import load_config
from seq2seq.inference import ExportedModel
from seq2seq.tasks import classification, translation
from serving.client import Client

# the training sources, one unseen sentence, and one with spacing the normalisation removes
SOURCES = [es for _, es in PAIRS] + ["El perro come pan.", "  Veo   el gato y el perro. "]
TEXTS = ["a good film 3", "a bad film 7", "a good bad film", "  a   film 99 "]


@pytest.fixture(scope="module")
def server(models):
    srv = Server(models, *same_numerics_config(models.parent))
    yield srv
    srv.stop()


def cli_json(capsys, argv: list[str]) -> list[dict]:
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def sets(overrides: list[str]) -> list[str]:
    return ["--preset", "tiny"] + [a for o in overrides for a in ("--set", o)]


def as_f32(values) -> list:
    return [np.float32(v) for v in values]


def test_translations_and_scores_agree_across_evaluation_cli_and_server(
    models, server, tmp_path, capsys
):
    root = models.parent
    overrides = translate_overrides(root)
    cfg = copy.deepcopy(load_config("translate", "tiny", overrides=overrides))
    eval_file = tmp_path / "eval.tsv"
    eval_file.write_text("".join(f"{s}\treference\n" for s in SOURCES))
    cfg.eval.eval_file = str(eval_file)
    translation.run_evaluation(cfg)
    export = models / "translate" / "1"
    beam = cfg.eval.beam_size
    assert beam > 1 and ExportedModel(export).runner.defaults.beam_size == beam
    outputs = {}
    with Client(server.target, timeout=60) as client:
        for name, k in (("greedy", 1), ("beam", beam)):
            rows = (cfg.run_dir / f"predictions-{name}.jsonl").read_text().splitlines()
            evaluated = [json.loads(r) for r in rows]
            assert [e["source"] for e in evaluated] == [fmt.normalize(s) for s in SOURCES]
            want = outputs[name] = [e["hypothesis"] for e in evaluated]
            assert want[: len(PAIRS)] == [en for en, _ in PAIRS]  # the tiny model learnt them
            want_scores = as_f32(e["score"] for e in evaluated)
            assert all(s < 0 for s in want_scores)
            args = ["translate", "--json", "--beam-size", str(k), *SOURCES]
            for where in (sets(overrides), ["--model", str(export)]):
                got = [r["hypotheses"][0] for r in cli_json(capsys, args[:4] + where + args[4:])]
                assert [h["text"] for h in got] == want, where
                assert as_f32(h["score"] for h in got) == want_scores, where
            served = client.translate(SOURCES, beam_size=k)
            assert [r.text for r in served] == want
            assert as_f32(r.score for r in served) == want_scores
        # left out, the decoding is the model's: the one its evaluation used, in its metadata
        meta = {m["task"]: m for m in client.metadata()["models"]}["translate"]
        assert meta["default_beam_size"] == beam == 3
        assert meta["default_max_length"] == cfg.eval.max_length == 32
        assert meta["default_length_penalty"] == pytest.approx(cfg.eval.length_penalty)
        assert [r.text for r in client.translate(SOURCES)] == outputs["beam"]
    got = cli_json(capsys, ["translate", "--json", "--model", str(export), *SOURCES])
    assert [r["hypotheses"][0]["text"] for r in got] == outputs["beam"]


def test_classifications_and_probabilities_agree_across_evaluation_cli_and_server(
    models, server, tmp_path, capsys
):
    root = models.parent
    overrides = classify_overrides(root)
    cfg = copy.deepcopy(load_config("classify", "tiny", overrides=overrides))
    eval_file = tmp_path / "eval.tsv"
    eval_file.write_text("".join(f"pos\t{t}\n" for t in TEXTS))
    cfg.eval.eval_file = str(eval_file)
    classification.run_evaluation(cfg)
    rows = (cfg.run_dir / "predictions.jsonl").read_text().splitlines()
    evaluated = [json.loads(r) for r in rows]
    assert [e["text"] for e in evaluated] == [fmt.normalize(t) for t in TEXTS]
    assert [e["label"] for e in evaluated][:2] == ["pos", "neg"]
    want = [as_f32(e["probabilities"]) for e in evaluated]
    args = ["classify", "--json", *TEXTS]
    for where in (sets(overrides), ["--model", str(models / "classify" / "1")]):
        got = cli_json(capsys, args[:2] + where + args[2:])
        assert [g["label"] for g in got] == [e["label"] for e in evaluated], where
        assert [as_f32(g["probabilities"].values()) for g in got] == want, where
    with Client(server.target, timeout=60) as client:
        served = client.classify(TEXTS)
    assert [r.label for r in served] == [e["label"] for e in evaluated]
    assert [as_f32(r.probabilities.values()) for r in served] == want
