"""The NaN guard: a step whose loss or gradients are not finite changes nothing — weights,
Adam's moments and step count stay bit-identical — on one device and on two workers; training
stops at `train.max_bad_steps` such steps, with the step and the last good checkpoint named."""

import hashlib
import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from workers import run_workers

from seq2seq.config import TrainConfig
from seq2seq.layers import SimpleRNN
from seq2seq.training import make_optimizer, make_train_step

ROOT = Path(__file__).resolve().parents[1]


class Tiny(keras.Model):
    """A SimpleRNN regressor with the `compute_loss_sums` the training step calls."""

    def __init__(self):
        super().__init__()
        self.rnn = SimpleRNN(4, return_sequences=True, seed=1)
        self.head = keras.layers.Dense(1)

    def call(self, x, training=False):
        return self.head(self.rnn(x, training=training))[..., 0]

    def compute_loss_sums(self, batch, training=False):
        x, y = batch
        pred = self(x, training=training)
        return tf.reduce_sum(tf.square(pred - y)), tf.cast(tf.size(y), tf.float32)


def batch(seed=0, nan=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    if nan:
        x[1, 2, 0] = np.nan  # one poisoned feature
    return tf.constant(x), tf.constant(rng.normal(size=(3, 5)).astype("float32"))


def snapshot(model, optimizer) -> dict:
    return {v.path: np.array(v.numpy()).tobytes() for v in [*model.variables, *optimizer.variables]}


def digest(model, optimizer) -> str:
    h = hashlib.sha256()
    for _, raw in sorted(snapshot(model, optimizer).items()):
        h.update(raw)
    return h.hexdigest()[:16]


def test_a_nan_batch_leaves_weights_and_optimizer_bit_identical():
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    cfg = TrainConfig(learning_rate=0.01, warmup_steps=0, max_steps=10)
    model = Tiny()
    model(batch()[0])
    optimizer = make_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, cfg, strategy, {})
    step(batch(1))  # a good step first: Adam's moments are non-zero
    before = snapshot(model, optimizer)
    loss, grad_norm, _ = step(batch(2, nan=True))
    assert np.isnan(float(loss)) and np.isnan(float(grad_norm))
    after = snapshot(model, optimizer)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert changed == []  # weights, moments, the iteration count: all bit-identical
    assert int(optimizer.iterations) == 1
    loss, _, _ = step(batch(3))  # and the next good batch trains as usual
    assert np.isfinite(float(loss)) and int(optimizer.iterations) == 2
    assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)
    assert snapshot(model, optimizer) != before


@pytest.mark.slow
def test_two_workers_skip_the_step_together_when_one_batch_is_nan():
    """Only worker 0's batch is poisoned; the all-reduced check makes both skip the update."""
    script = [sys.executable, str(ROOT / "tests" / "nan_guard_worker.py")]
    outs = [
        json.loads(out.strip().splitlines()[-1])
        for out in run_workers(lambda index: script, timeout=240, cwd=ROOT)
    ]
    for o in outs:
        good, bad, after = o["losses"]
        assert np.isfinite(good) and np.isnan(bad) and np.isfinite(after)
        d0, d1, d2, d3 = o["digests"]
        assert d0 != d1  # the good step trained
        assert d2 == d1  # the poisoned step changed nothing, bit for bit
        assert d3 != d2  # and training went on
    assert outs[0]["digests"] == outs[1]["digests"]  # the workers stayed in lockstep


def test_training_stops_at_max_bad_steps(tmp_path, monkeypatch, capsys):
    """A run whose every loss is NaN stops at once by default, after skipping k-1 bad steps
    with train.max_bad_steps=k; no checkpoint is written after the bad steps."""
    from seq2seq.config import load_config
    from seq2seq.data import prepare
    from seq2seq.models.classifier import Classifier
    from seq2seq.tasks import classification
    from seq2seq.training import TrainingDiverged

    rows = [(f"good film number {i}", "pos") for i in range(20)]
    rows += [(f"bad film number {i}", "neg") for i in range(20)]
    data = tmp_path / "reviews.tsv"
    data.write_text("".join(f"{label}\t{text}\n" for text, label in rows))
    common = [
        f"data.dir={tmp_path / 'prepared'}",
        f"data.data_file={data}",
        f"train.run_dir={tmp_path / 'runs'}",
        "train.max_steps=5",
        "train.batch_size=8",
        "train.checkpoint_every=100",
        "train.eval_every=100",
    ]
    original = Classifier.compute_loss_sums

    def poisoned(self, batch, **kwargs):
        loss, count = original(self, batch, **kwargs)
        return loss * float("nan"), count

    monkeypatch.setattr(Classifier, "compute_loss_sums", poisoned)
    cfg = load_config("classify", "tiny", overrides=common)
    prepare(cfg)
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1: loss nan"):
        classification.run_training(cfg, progress=False)
    cfg = load_config("classify", "tiny", overrides=[*common, "train.max_bad_steps=3"])
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1: loss nan") as err:
        classification.run_training(cfg, progress=False)
    assert "The update was not applied" in str(err.value)
    out = capsys.readouterr()
    skipped = (out.out + out.err).count("skipped a non-finite update at step 1: loss nan")
    assert skipped == 2  # the first two were skipped (2 of 3), the third stopped the run
