"""`make report`: a self-contained HTML page of a run's curves, gradient norms through time and
(translation) attention or (classification) calibration."""

import base64
import re

from servers import classify_overrides, translate_overrides

from seq2seq.__main__ import main
from seq2seq.config import load_config
from seq2seq.report import build_report, read_logs, step_norms
from seq2seq.tasks import classification


def figures(page: str) -> tuple[list[bytes], list[str]]:
    images = [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([^']+)'", page)]
    captions = re.findall(r"<figcaption>Figure \d+\. (.*?)</figcaption>", page, re.S)
    return images, captions


def test_translation_report_has_every_figure_and_needs_no_network(models):
    cfg = load_config("translate", "tiny", overrides=translate_overrides(models.parent))
    path = build_report(cfg, progress=False)
    assert path == cfg.run_dir / "report.html"
    page = path.read_text()
    images, captions = figures(page)
    assert len(images) == len(captions) == 5
    assert all(png.startswith(b"\x89PNG") and len(png) > 5000 for png in images)
    assert captions[0].startswith("Training: loss")
    assert captions[1].startswith("‖∂L/∂h_t‖ (log scale) for every SimpleRNN")
    assert captions[2].startswith("The seeds&#x27; lesson on the trained model")
    assert "truncated BPTT" in captions[2]
    assert captions[3].startswith("Attention (greedy decoding) for 6")
    assert captions[4].startswith("Corpus BLEU (greedy decoding)")
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched when it opens
    files = sorted((cfg.run_dir / "report").glob("figure-*.png"))
    assert [f.read_bytes() for f in files] == images
    # the logs behind figure 2: one vector per logged step for each SimpleRNN, t in order
    logs = read_logs(cfg.run_dir)
    by_t = logs["grad_norm_by_t/encoder_0"]
    assert [s for s, _ in by_t] == list(range(20, 241, 20))  # the tiny preset logs every 20
    assert all(v.ndim == 1 and len(v) >= 3 and (v > 0).all() for _, v in by_t)


def test_truncation_zeroes_the_gradient_beyond_k_steps_and_the_switch_is_undone(models):
    # the classifier's loss reads only the last state: truncated into chunks of k steps from
    # the start, only the last chunk still gets a gradient (the translator's attention reaches
    # every encoder step directly, so it would not show this)
    cfg = load_config("classify", "tiny", overrides=classify_overrides(models.parent))
    classifier = classification.load_trained(cfg)
    model = classifier.model
    from seq2seq.data import classification_batch

    rows = [("pos", "a good film and a good story 3")]
    batch = classification_batch(classification.encode(rows, classifier.tokenizer, ["neg", "pos"]))
    full = step_norms(model, batch, {})
    steps = len(full["forward_0"])
    assert steps > 6 and (full["forward_0"] > 0).all()
    for k in (1, 3):
        cut = step_norms(model, batch, {"truncation": k})["forward_0"]
        last_chunk = (steps - 1) // k * k
        assert (cut[last_chunk:] > 0).all() and (cut[:last_chunk] == 0).all(), (k, cut)
        assert cut[-1] == full["forward_0"][-1]  # the last step is the same either way
    switched = step_norms(model, batch, {"switch_activation": True})
    assert not all((switched[k] == full[k]).all() for k in full)
    again = step_norms(model, batch, {})
    assert all((again[k] == full[k]).all() for k in full)  # the model is left as it was


def test_classification_report_from_the_cli_and_clear_errors(models, tmp_path, capsys):
    overrides = classify_overrides(models.parent)
    argv = ["report", "--task", "classify", "--preset", "tiny", "--no-progress"]
    argv += [a for o in overrides for a in ("--set", o)]
    assert main(argv) == 0
    cfg = load_config("classify", "tiny", overrides=overrides)
    images, captions = figures((cfg.run_dir / "report.html").read_text())
    assert len(images) == 4
    assert captions[3].startswith("Classification on") and "reliability diagram" in captions[3]
    capsys.readouterr()
    assert main([*argv, "--set", "train.run_name=no-such-run"]) == 2
    err = capsys.readouterr().err
    assert "no run at" in err and "train it first (make train-classify)" in err
    (cfg.run_dir.parent / "unfinished").mkdir()
    assert main([*argv, "--set", "train.run_name=unfinished"]) == 2
    assert "has not finished training (no summary.json)" in capsys.readouterr().err
