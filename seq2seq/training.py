"""The custom training loop shared by both tasks, run under a `tf.distribute` strategy.

One step: the model's `compute_loss_sums(batch)` gives (sum of losses, count) on each replica;
the loss is the sum divided by the global count (an all-reduce), the gradients are all-reduced,
clipped by global norm, and applied with Adam (warm-up then cosine decay; AdamW with
`train.weight_decay`). The per-timestep gradient norms of every SimpleRNN come from the same
backward pass (`seq2seq.diagnostics`).

Resumable: the checkpoint holds the weights, the optimizer, the step and the position in the
epoch; batch order is a function of (seed, epoch), so a killed run that is started again
continues exactly where its last checkpoint was. Keras's `fit()` is not used: it is broken under
MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from seq2seq.config import TrainConfig
from seq2seq.data.pipeline import Batches
from seq2seq.diagnostics import GradientNorms
from seq2seq.files import write_atomic


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG lists several workers, else the default."""
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_info() -> tuple[int, int]:
    """(this worker's index, number of workers) from TF_CONFIG; (0, 1) without it."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    workers = len(config.get("cluster", {}).get("worker", [])) or 1
    return int(config.get("task", {}).get("index", 0)), workers


@dataclass
class Evaluation:
    """What one validation pass found: mean loss and an optional task score (higher is better)."""

    loss: float
    score: float | None = None
    score_name: str = ""


def variables_checkpoint(obj) -> tf.train.Checkpoint:
    """A checkpoint of every variable of a Keras model or optimizer, keyed by position.

    Keras 3 keeps sub-layers in plain lists, which TensorFlow's object-graph tracking does not
    follow, so each variable is listed explicitly. Names and paths are not used as keys: they
    carry process-wide counters (`translator_1/…`, `seed_generator_3/…`); the order of
    `variables` is fixed by the architecture, and a different one fails to restore loudly.
    """
    return tf.train.Checkpoint(**{f"v{i:04d}": v for i, v in enumerate(obj.variables)})


def learning_rate_schedule(cfg: TrainConfig):
    warmup = min(cfg.warmup_steps, max(cfg.max_steps - 1, 0))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.learning_rate,
        decay_steps=max(cfg.max_steps - warmup, 1),
        alpha=cfg.min_lr_ratio,
        warmup_target=cfg.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam on the warm-up + cosine schedule; AdamW when `weight_decay` > 0 (each step also
    shrinks every weight by learning rate × weight_decay, apart from the gradient: Loshchilov
    & Hutter 2019)."""
    schedule = learning_rate_schedule(cfg)
    if cfg.weight_decay > 0:
        return keras.optimizers.AdamW(schedule, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(schedule)


def mean_loss(model, batches: Batches, loss_kwargs: dict | None = None) -> float:
    """Mean per-token (or per-example) loss of `model` over every batch, without dropout."""
    total, count = 0.0, 0.0
    fn = tf.function(
        lambda b: model.compute_loss_sums(b, training=False, **(loss_kwargs or {})),
        reduce_retracing=True,
    )
    for batch in batches.iterate(0):
        s, c = fn(tuple(tf.constant(a) for a in batch))
        total += float(s)
        count += float(c)
    return total / max(count, 1.0)


def train(
    model: keras.Model,
    train_batches: Batches,
    cfg: TrainConfig,
    run_dir: Path,
    evaluate: Callable[[keras.Model], Evaluation] | None = None,
    loss_kwargs: dict | None = None,
    strategy: tf.distribute.Strategy | None = None,
    progress: bool = True,
    stop_step: int | None = None,
) -> dict:
    """Trains `model` (already built, created under `strategy.scope()`) and returns a summary.

    Writes `run_dir/ckpt` (resumable, latest two), `run_dir/best` (weights with the best
    validation loss), `run_dir/tb` (TensorBoard) and `run_dir/summary.json`. `stop_step` ends
    training at that step while the learning-rate schedule still spans `cfg.max_steps` (a
    refit that replays the first `stop_step` steps of a longer run).
    """
    last_step = min(cfg.max_steps, stop_step) if stop_step else cfg.max_steps
    strategy = strategy or tf.distribute.get_strategy()
    worker, num_workers = worker_info()
    if len(train_batches) == 0:
        raise ValueError(
            f"no training batches for worker {worker} of {num_workers}: the training split has "
            f"{len(train_batches.examples)} examples, fewer than batch_size × workers"
        )
    chief = worker == 0
    run_dir = Path(run_dir)
    loss_kwargs = loss_kwargs or {}
    variables = model.trainable_variables
    with strategy.scope():
        optimizer = make_optimizer(cfg)
        optimizer.build(variables)
    # Bookkeeping is per worker (identical on all of them), so it lives outside the strategy.
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    position = tf.Variable(0, dtype=tf.int64, trainable=False, name="position")
    best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_loss")
    bad_evals = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_evals")
    elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
    # An early-stopped run is finished: starting it again must not train on past that point.
    stopped_early = tf.Variable(False, trainable=False, name="stopped_early")
    ckpt = tf.train.Checkpoint(
        model=variables_checkpoint(model),
        optimizer=variables_checkpoint(optimizer),
        step=step,
        epoch=epoch,
        position=position,
        best_loss=best_loss,
        bad_evals=bad_evals,
        elapsed=elapsed,
        stopped_early=stopped_early,
    )

    def out_of_time_at_start() -> bool:
        """A run that spent its `max_minutes` is finished (raise the cap to train it on)."""
        return cfg.max_minutes > 0 and float(elapsed) >= cfg.max_minutes * 60

    # Under MultiWorkerMirroredStrategy every worker must save; only the chief keeps its files.
    ckpt_dir = run_dir / "ckpt" if chief else run_dir / f"worker{worker}-tmp" / "ckpt"
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=2)
    best_ckpt = tf.train.Checkpoint(model=variables_checkpoint(model))
    best_dir = run_dir / "best" if chief else run_dir / f"worker{worker}-tmp" / "best"
    best_manager = tf.train.CheckpointManager(best_ckpt, str(best_dir), max_to_keep=1)
    if manager.latest_checkpoint:
        read_checkpoint(
            ckpt, manager.latest_checkpoint, f"remove {ckpt_dir} to train this run from the start"
        ).assert_existing_objects_matched()
        if bool(stopped_early) or int(step) >= last_step or out_of_time_at_start():
            how = (
                "stopped early"
                if bool(stopped_early)
                else ("done" if int(step) >= last_step else "out of time")
            )
            print(f"{manager.latest_checkpoint}: this run is finished ({how} at step {int(step)})")
        else:
            print(
                f"resuming from {manager.latest_checkpoint} at step {int(step)} "
                f"(epoch {int(epoch)}, batch {int(position)})"
            )
    writer = tf.summary.create_file_writer(str(run_dir / "tb")) if chief else None

    def replica_step(batch):
        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape, GradientNorms(tape) as diag:
            loss_sum, count = model.compute_loss_sums(batch, training=True, **loss_kwargs)
            global_count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
            loss = loss_sum / tf.maximum(global_count, 1.0)
        grads, norms = diag.gradient(loss, variables)
        grads = [
            tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
            for g, v in zip(grads, variables, strict=True)
        ]
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads, grad_norm = tf.clip_by_global_norm(grads, cfg.clip_norm)
        global_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss_sum) / tf.maximum(
            global_count, 1.0
        )
        ok = tf.logical_and(tf.math.is_finite(global_loss), tf.math.is_finite(grad_norm))
        # Keras's optimizer sums gradients over replicas once more; these are already the
        # global gradient, so each replica hands it 1/n of it.
        scale = tf.where(ok, 1.0 / ctx.num_replicas_in_sync, 0.0)
        optimizer.apply_gradients(
            [(g * tf.cast(scale, g.dtype), v) for g, v in zip(grads, variables, strict=True)]
        )
        return global_loss, grad_norm, norms

    @tf.function(reduce_retracing=True)
    def train_step(batch):
        loss, grad_norm, norms = strategy.run(replica_step, args=(batch,))
        local = strategy.experimental_local_results
        return local(loss)[0], local(grad_norm)[0], {k: local(v)[0] for k, v in norms.items()}

    start = time.time()
    start_elapsed = float(elapsed)

    def why_stopped(s: int, out_of_time: bool = False) -> str:
        if s >= last_step:
            return "max_steps" if s >= cfg.max_steps else "stop_step"
        if out_of_time:
            return "max_minutes"
        return "early_stopping" if bool(stopped_early) else "max_steps"

    # what a finished run that is started again reports
    stop_reason = why_stopped(int(step), out_of_time_at_start())
    last_eval: Evaluation | None = None
    bar = tqdm(
        total=last_step,
        initial=int(step),
        disable=not (progress and chief),
        unit="step",
        dynamic_ncols=True,
        mininterval=2,
    )
    smoothed = None

    def run_eval() -> bool:
        """Validates, keeps the best weights, and says whether to stop early."""
        nonlocal last_eval
        if evaluate is None:
            return False
        result = evaluate(model)
        last_eval = result
        improved = result.loss < float(best_loss)
        if improved:
            best_loss.assign(result.loss)
            bad_evals.assign(0)
            best_manager.save(checkpoint_number=int(step))
        else:
            bad_evals.assign_add(1)
        if writer:
            with writer.as_default(step=int(step)):
                tf.summary.scalar("valid/loss", result.loss)
                if result.score is not None:
                    tf.summary.scalar(f"valid/{result.score_name}", result.score)
        msg = f"step {int(step)}: valid loss {result.loss:.4f}"
        if result.score is not None:
            msg += f", {result.score_name} {result.score:.2f}"
        bar.write(msg + (" (best)" if improved else ""))
        return cfg.patience > 0 and int(bad_evals) >= cfg.patience

    done = int(step) >= last_step or bool(stopped_early) or out_of_time_at_start()
    while not done:
        for batch in train_batches.iterate(int(epoch), int(position)):
            loss, grad_norm, norms = train_step(tuple(tf.constant(a) for a in batch))
            loss_value = float(loss)
            if not math.isfinite(loss_value) or not math.isfinite(float(grad_norm)):
                bar.close()
                raise TrainingDiverged(
                    f"training diverged at step {int(step) + 1}: loss {loss_value}, gradient "
                    f"norm {float(grad_norm)}. The update was not applied and no checkpoint was "
                    f"written after it; the last good one is {manager.latest_checkpoint}. "
                    f"Lower train.learning_rate or train.clip_norm and run again."
                )
            step.assign_add(1)
            position.assign_add(1)
            smoothed = loss_value if smoothed is None else 0.98 * smoothed + 0.02 * loss_value
            bar.update(1)
            bar.set_postfix(loss=f"{smoothed:.3f}", refresh=False)
            s = int(step)
            if writer and s % cfg.log_every == 0:
                with writer.as_default(step=s):
                    tf.summary.scalar("train/loss", loss_value)
                    tf.summary.scalar("train/grad_norm", grad_norm)
                    tf.summary.scalar("train/learning_rate", optimizer.learning_rate)
                    for name, v in norms.items():
                        v = v.numpy()
                        tf.summary.histogram(f"grad_norm_per_step/{name}", v)
                        tf.summary.scalar(
                            f"grad_norm_first_over_last/{name}", float(v[0] / max(v[-1], 1e-12))
                        )
            elapsed.assign(start_elapsed + time.time() - start)
            out_of_time = cfg.max_minutes > 0 and float(elapsed) >= cfg.max_minutes * 60
            stop_early = False
            if s % cfg.eval_every == 0 or s >= last_step or out_of_time:
                stop_early = run_eval()
            if s % cfg.checkpoint_every == 0:
                manager.save(checkpoint_number=s)
            if s >= last_step or out_of_time or stop_early:
                stopped_early.assign(stop_early)
                stop_reason = why_stopped(s, out_of_time)
                done = True
                break
        else:
            epoch.assign_add(1)
            position.assign(0)
    bar.close()
    manager.save(checkpoint_number=int(step))
    if evaluate is not None and not best_manager.latest_checkpoint:
        best_manager.save(checkpoint_number=int(step))
    best = best_manager.latest_checkpoint if evaluate is not None else None
    summary = {
        "steps": int(step),
        # the step whose weights `best` holds (checkpoints are numbered by step)
        "best_step": int(best.rsplit("-", 1)[1]) if best else None,
        "epochs": int(epoch) + int(position) / max(len(train_batches), 1),
        "examples": len(train_batches.examples),
        "wall_seconds": round(float(elapsed), 1),
        "stop_reason": stop_reason,
        "best_valid_loss": float(best_loss) if math.isfinite(float(best_loss)) else None,
        "last_eval": None if last_eval is None else last_eval.__dict__,
        "workers": num_workers,
        "weights_digest": weights_digest(model),
    }
    if chief:
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def read_checkpoint(checkpoint: tf.train.Checkpoint, path: str, fix: str):
    """`checkpoint.restore(path)`, with a damaged or truncated file reported as a ValueError
    naming it (TensorFlow raises IndexError, DataLossError, … from deep inside)."""
    try:
        return checkpoint.restore(path)
    except (tf.errors.OpError, IndexError, RuntimeError) as err:
        raise ValueError(
            f"checkpoint {path} cannot be read, damaged or incomplete "
            f"({type(err).__name__}: {str(err).strip()[:200]}): {fix}"
        ) from None


def restore_weights(model: keras.Model, run_dir: Path, which: str = "best") -> str:
    """Loads the `best` (or latest `ckpt`) weights of a run into `model`; returns the path."""
    manager_dir = Path(run_dir) / which
    latest = tf.train.latest_checkpoint(str(manager_dir))
    if latest is None:
        raise FileNotFoundError(
            f"no checkpoint in {manager_dir}: train first (make train-translate / train-classify)"
        )
    status = read_checkpoint(
        tf.train.Checkpoint(model=variables_checkpoint(model)),
        latest,
        f"train the run again (remove {run_dir}), or use another train.run_name",
    )
    try:
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as err:
        raise ValueError(
            f"{latest} does not match this model's configuration (was it trained with another "
            f"preset or config?): {str(err)[:300]}"
        ) from err
    return latest


def weights_digest(model: keras.Model) -> str:
    """A short fingerprint of all weights (for logs and tests)."""
    import hashlib

    h = hashlib.sha256()
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:16]
