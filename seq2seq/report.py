"""`make report`: one self-contained HTML page of pictures of what a trained run learnt.

From the run's TensorBoard logs: loss, learning rate, gradient norm, validation score, and
‖∂L/∂h_t‖ for every SimpleRNN as a heatmap of time step t × training step. From the trained
model on validation data: ‖∂L/∂h_t‖ against t at the end of training, with full BPTT, with
truncation k = 5 and 10, and with the activation switched (tanh ↔ relu) — vanishing and
exploding gradients seen, not only read about. Translation adds attention heatmaps and BLEU by
source length; classification a confusion matrix, accuracy by length and a reliability diagram.
Images are PNGs embedded in the page: it opens in any browser, offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from seq2seq import calibration  # noqa: E402
from seq2seq.config import Config  # noqa: E402
from seq2seq.data import DataError, read_split  # noqa: E402
from seq2seq.diagnostics import GradientNorms  # noqa: E402
from seq2seq.files import write_atomic  # noqa: E402
from seq2seq.layers import SimpleRNN  # noqa: E402

BUCKETS = (0, 5, 10, 15, 20, 30, 1000)  # length buckets in pieces


class Figure:
    """A captioned PNG."""

    def __init__(self, fig, caption: str):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.png = buf.getvalue()
        self.caption = caption


def read_logs(run_dir: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """Every summary in `run_dir/tb`, by tag: [(step, value)], steps ascending (a resumed run's
    later value of a step wins)."""
    found: dict[str, dict[int, np.ndarray]] = {}
    for path in sorted((run_dir / "tb").glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("tensor"):
                    array = tf.make_ndarray(value.tensor)
                else:
                    array = np.array(value.simple_value)
                found.setdefault(value.tag, {})[int(event.step)] = array
    return {tag: sorted(steps.items()) for tag, steps in found.items()}


def _series(logs, tag):
    points = logs.get(tag, [])
    return [s for s, _ in points], [float(v) for _, v in points]


def training_curves(logs, score_name: str) -> Figure:
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    steps, loss = _series(logs, "train/loss")
    axes[0].plot(steps, loss, label="training", lw=1)
    steps, loss = _series(logs, "valid/loss")
    axes[0].plot(steps, loss, "o-", label="validation")
    axes[0].set(title="loss", xlabel="step")
    axes[0].legend()
    for ax, tag, title in (
        (axes[1], "train/learning_rate", "learning rate"),
        (axes[2], "train/grad_norm", "global gradient norm (before clipping)"),
        (axes[3], f"valid/{score_name}", f"validation {score_name}"),
    ):
        steps, values = _series(logs, tag)
        ax.plot(steps, values, "o-" if tag.startswith("valid") else "-", lw=1)
        ax.set(title=title, xlabel="step")
    return Figure(
        fig,
        "Training: loss (training batches and validation), learning rate, the global gradient "
        f"norm before clipping, and validation {score_name}, against training steps.",
    )


def gradient_heatmaps(logs) -> Figure | None:
    names = sorted(t.split("/", 1)[1] for t in logs if t.startswith("grad_norm_by_t/"))
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        points = logs[f"grad_norm_by_t/{name}"]
        width = max(len(v) for _, v in points)
        grid = np.full((width, len(points)), np.nan)
        for j, (_, v) in enumerate(points):
            grid[: len(v), j] = np.log10(np.maximum(v, 1e-12))
        image = ax.imshow(
            grid,
            aspect="auto",
            origin="lower",
            cmap="magma",
            extent=(points[0][0], points[-1][0], 0.5, width + 0.5),
        )
        ax.set(title=name, xlabel="training step", ylabel="time step t")
        fig.colorbar(image, ax=ax, label="log10 ‖∂L/∂h_t‖")
    fig.tight_layout()
    return Figure(
        fig,
        "‖∂L/∂h_t‖ (log scale) for every SimpleRNN, time step t up the side, training step "
        "across, from the training logs (one batch each; batches differ in length, so the top "
        "rows are often empty; a layer called twice in a step, e.g. by adversarial training, "
        "appears twice, the second with _1).",
    )


def _rnn_layers(model) -> list[SimpleRNN]:
    return [layer for layer in model._flatten_layers() if isinstance(layer, SimpleRNN)]


def step_norms(model, batch, variant: dict) -> dict[str, np.ndarray]:
    """‖∂L/∂h_t‖ per SimpleRNN on `batch`, with `variant`'s settings swapped in for the call
    (`truncation`: bptt_truncation of every layer; `switch_activation`: tanh ↔ relu)."""
    layers = _rnn_layers(model)
    saved = [(layer.bptt_truncation, layer.cell.activation) for layer in layers]
    try:
        for layer in layers:
            if "truncation" in variant:
                layer.bptt_truncation = variant["truncation"]
            if variant.get("switch_activation"):
                layer.cell.activation = "relu" if layer.cell.activation == "tanh" else "tanh"
        with tf.GradientTape() as tape, GradientNorms(tape) as norms:
            total, count = model.compute_loss_sums(batch, training=False)
            loss = total / count
        _, per_step = norms.gradient(loss, model.trainable_variables)
        return {name: v.numpy() for name, v in per_step.items()}
    finally:
        for layer, (k, activation) in zip(layers, saved, strict=True):
            layer.bptt_truncation, layer.cell.activation = k, activation


def gradient_curves(model, batch, activation: str) -> Figure:
    other = "relu" if activation == "tanh" else "tanh"
    variants = [
        ("full BPTT", {}),
        ("truncated, k = 10", {"truncation": 10}),
        ("truncated, k = 5", {"truncation": 5}),
        (f"activation switched to {other}", {"switch_activation": True}),
    ]
    results = [(label, step_norms(model, batch, v)) for label, v in variants]
    names = list(results[0][1])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for label, norms in results:
            v = norms[name]
            ax.semilogy(np.arange(1, len(v) + 1), np.maximum(v, 1e-30), label=label)
        ax.set(title=name, xlabel="time step t", ylabel="‖∂L/∂h_t‖ (batch mean)")
        ax.legend(fontsize=7)
    return Figure(
        fig,
        f"The seeds' lesson on the trained model: ‖∂L/∂h_t‖ against t for every SimpleRNN, on "
        f"{int(batch[0].shape[0])} validation examples of {int(batch[0].shape[1])} steps — "
        "full BPTT, truncated BPTT (chunks of k steps from the start; no gradient crosses a "
        "chunk boundary, so a step gets only what reaches it within its chunk or directly), "
        f"and the trained weights run with {other} instead of {activation}. Exact zeros are "
        "drawn at the bottom.",
    )


def _bucket(n: int) -> str:
    for lo, hi in zip(BUCKETS, BUCKETS[1:], strict=False):
        if lo < n <= hi:
            return f"{lo + 1}–{hi}" if hi < 1000 else f">{lo}"
    return "0"


def _bars(ax, labels, values, counts, title, ylabel):
    ax.bar(range(len(labels)), values, color="#4C72B0")
    ax.set_xticks(range(len(labels)), [f"{b}\n({n})" for b, n in zip(labels, counts, strict=True)])
    ax.set(title=title, ylabel=ylabel, xlabel="length in pieces (examples)")


def attention_grid(translator, sources: list[str]) -> Figure:
    hyps = translator.translate(sources, beam_size=1, alignment=True)
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    for ax, source, (h,) in zip(axes.flat, sources, hyps, strict=False):
        ax.imshow(np.array(h.alignment), cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(h.source_tokens)), h.source_tokens, rotation=70, fontsize=8)
        ax.set_yticks(range(len(h.target_tokens)), h.target_tokens, fontsize=8)
        ax.set_title(f"{source}\n→ {h.text}", fontsize=8)
    for ax in list(axes.flat)[len(sources) :]:
        ax.axis("off")
    return Figure(
        fig,
        f"Attention (greedy decoding) for {len(sources)} validation sentences: row = output "
        "piece, column = source piece it was chosen from; darker = more weight.",
    )


def bleu_by_length(translator, rows) -> Figure:
    from seq2seq.evaluation import translation_scores

    hyps = [h[0].text for h in translator.translate([r[0] for r in rows], beam_size=1)]
    lengths = [len(p) for p in translator.source.encode_batch([r[0] for r in rows])]
    labels, values, counts = [], [], []
    for b in dict.fromkeys(_bucket(n) for n in sorted(lengths)):
        idx = [i for i, n in enumerate(lengths) if _bucket(n) == b]
        score = translation_scores([hyps[i] for i in idx], [[rows[i][1]] for i in idx])["bleu"]
        labels.append(b)
        values.append(score)
        counts.append(len(idx))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    _bars(ax, labels, values, counts, "BLEU by source length (greedy)", "BLEU")
    return Figure(fig, "Corpus BLEU (greedy decoding) of the validation pairs, by source length.")


def classification_figures(classifier, rows) -> list[Figure]:
    texts = [r[1] for r in rows]
    labels = classifier.labels
    truth = np.array([labels.index(r[0]) for r in rows])
    probs = classifier.probabilities(texts)
    pred = probs.argmax(1)
    n = len(labels)
    matrix = np.zeros((n, n), int)
    for t, p in zip(truth, pred, strict=True):
        matrix[t, p] += 1
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    ax = axes[0]
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            dark = matrix[i, j] > matrix.max() / 2
            color = "white" if dark else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=10, color=color)
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set(title="confusion matrix", xlabel="predicted", ylabel="true")
    lengths = [len(p) for p in classifier.tokenizer.encode_batch(texts)]
    names, acc, counts = [], [], []
    for b in dict.fromkeys(_bucket(n) for n in sorted(lengths)):
        idx = [i for i, m in enumerate(lengths) if _bucket(m) == b]
        names.append(b)
        acc.append(100 * float(np.mean(pred[idx] == truth[idx])))
        counts.append(len(idx))
    _bars(axes[1], names, acc, counts, "accuracy by length", "accuracy %")
    ax = axes[2]
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    t = classifier.temperature
    logits = classifier.logits(texts)
    curves = [("before calibration", calibration.softmax(logits))]
    if t != 1.0:
        curves.append((f"temperature {t:.2f}", calibration.softmax(logits, t)))
    for name, p in curves:
        centers, observed, _ = calibration.reliability(p, truth)
        ece = calibration.expected_calibration_error(p, truth)
        ax.plot(centers, observed, "o-", label=f"{name} (ECE {ece:.3f})")
    ax.set(
        title="reliability",
        xlabel="predicted probability of the predicted label",
        ylabel="observed accuracy",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend()
    return [
        Figure(
            fig,
            f"Classification on {len(rows)} validation texts: confusion matrix (rows: true "
            "label), accuracy by text length, and a reliability diagram (confidence in "
            f"{calibration.ECE_BINS} bins against how often the model is right, before and "
            "after temperature scaling; ECE = the mean gap, weighted by bin size).",
        )
    ]


def _page(title: str, facts: list[str], figures: list[Figure], notes: list[str]) -> str:
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
        "padding:0 1em;color:#222}figure{margin:2em 0}img{max-width:100%}"
        "figcaption{color:#444;font-size:.95em;margin-top:.4em}"
        "li{margin:.2em 0}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><ul>",
        *(f"<li>{html.escape(f)}</li>" for f in facts),
        "</ul>",
        *(f"<p><em>{html.escape(n)}</em></p>" for n in notes),
    ]
    for i, f in enumerate(figures, 1):
        data = base64.b64encode(f.png).decode()
        parts.append(
            f"<figure><img alt='figure {i}' src='data:image/png;base64,{data}'>"
            f"<figcaption>Figure {i}. {html.escape(f.caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _sample_batch(examples, make_batch, size=64):
    """`size` examples of typical-to-long length (the 70th–95th length percentile)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    lo, hi = int(0.70 * len(order)), max(int(0.95 * len(order)), 1)
    pick = order[lo:hi] or order
    step = max(1, len(pick) // size)
    return make_batch([examples[i] for i in pick[::step][:size]])


def build_report(cfg: Config, progress: bool = True) -> Path:
    """Writes `run_dir/report.html` (and its figures as `run_dir/report/figure-<n>.png`);
    returns the page's path."""
    run = cfg.run_dir
    if not run.is_dir():
        runs = ", ".join(sorted(p.name for p in run.parent.glob("*") if p.is_dir())) or "none"
        raise DataError(
            f"no run at {run}: train it first (make train-{cfg.task}), or name an existing run "
            f"with RUN= (runs in {run.parent}: {runs})"
        )
    if not (run / "summary.json").exists():
        raise DataError(
            f"{run} has not finished training (no summary.json): let make train-{cfg.task} finish, "
            "then run make report again"
        )
    start = time.time()
    summary = json.loads((run / "summary.json").read_text())
    logs = read_logs(run)
    figures: list[Figure] = []
    notes: list[str] = []
    valid = read_split(cfg, "valid")
    split = "validation"
    if not valid:
        valid, split = read_split(cfg, "train"), "training (the run has no validation split)"
    steps = ["curves", "gradients", "model", "task"]
    bar = tqdm(total=len(steps), desc="report", disable=not progress, unit=" part")
    score = "bleu_greedy" if cfg.task == "translate" else "accuracy"
    figures.append(training_curves(logs, score))
    bar.update()
    heat = gradient_heatmaps(logs)
    if heat is None:
        notes.append(
            "This run's logs hold no per-step gradient norms (it was trained before they were "
            "logged): retrain it for the heatmap of t × training step."
        )
    else:
        figures.append(heat)
    bar.update()
    if cfg.task == "translate":
        from seq2seq.tasks import translation as task

        translator = task.load_trained(cfg)
        model = translator.model
        examples = task.encode_pairs(valid, translator.source, translator.target)
        from seq2seq.data import translation_batch

        batch = _sample_batch(examples, translation_batch)
        activation = "tanh"
    else:
        from seq2seq.data import classification_batch
        from seq2seq.tasks import classification as task

        classifier = task.load_trained(cfg)
        model = classifier.model
        examples = task.encode(valid, classifier.tokenizer, classifier.labels)
        batch = _sample_batch(examples, classification_batch)
        activation = cfg.model.activation
    figures.append(gradient_curves(model, batch, activation))
    bar.update()
    if cfg.task == "translate":
        if translator.has_alignment:
            picks = valid[:: max(1, len(valid) // 6)][:6]
            figures.append(attention_grid(translator, [r[0] for r in picks]))
        else:
            notes.append("This translator has no attention (model.attention: none): no alignments.")
        figures.append(bleu_by_length(translator, valid))
    else:
        figures.extend(classification_figures(classifier, valid))
    bar.update()
    bar.close()
    facts = [
        f"run: {run}",
        f"task: {cfg.task}; preset {cfg.preset}; trained {summary.get('steps')} steps "
        f"(best at step {summary.get('best_step')})",
        f"model data: the {split} split, {len(valid)} examples",
        f"built {time.strftime('%Y-%m-%d %H:%M')} in {time.time() - start:.0f} s",
    ]
    page = _page(f"seq2seq report: {run.name}", facts, figures, notes)
    path = run / "report.html"
    write_atomic(path, page)
    folder = run / "report"  # the same figures as files, for slides and docs
    folder.mkdir(exist_ok=True)
    for old in folder.glob("figure-*.png"):
        old.unlink()
    for i, f in enumerate(figures, 1):
        write_atomic(folder / f"figure-{i}.png", f.png)
    return path
