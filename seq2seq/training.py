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

Read it in parts: `make_train_step` (the step), `RunState` and `RunCheckpoints` (checkpoint and
resume), `Validation` (the evaluation hook: best weights, early stopping), `TensorBoardLog`, and
`train`, the loop that ties them together.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from seq2seq.cluster import num_workers, worker_info
from seq2seq.config import TrainConfig
from seq2seq.data.pipeline import Batches
from seq2seq.diagnostics import GradientNorms
from seq2seq.files import write_atomic


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


def make_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG lists several workers, else the default."""
    if num_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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
    fn = getattr(model, "_seq2seq_mean_loss", None) if not loss_kwargs else None
    if fn is None:  # traced once per model (a validation every few hundred steps reuses it)
        fn = tf.function(
            lambda b: model.compute_loss_sums(b, training=False, **(loss_kwargs or {})),
            reduce_retracing=True,
        )
        if not loss_kwargs:
            model._seq2seq_mean_loss = fn
    for batch in batches.iterate(0):
        s, c = fn(tuple(tf.constant(a) for a in batch))
        total += float(s)
        count += float(c)
    return total / max(count, 1.0)


class RunState:
    """Everything a resumed run needs besides the weights: the step, the position in the batch
    order, early-stopping counters and the wall time spent. Per worker (identical on all of
    them), so it lives outside the strategy; saved in every checkpoint."""

    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.position = tf.Variable(0, dtype=tf.int64, trainable=False, name="position")
        self.best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False, name="best_loss")
        self.bad_evals = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_evals")
        self.elapsed = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="elapsed_seconds")
        # An early-stopped run is finished: starting it again must not train on past that point.
        self.stopped_early = tf.Variable(False, trainable=False, name="stopped_early")

    def variables(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "best_loss": self.best_loss,
            "bad_evals": self.bad_evals,
            "elapsed": self.elapsed,
            "stopped_early": self.stopped_early,
        }

    def out_of_time(self, cfg: TrainConfig) -> bool:
        """The run has spent its `max_minutes` (raise the cap to train it on)."""
        return cfg.max_minutes > 0 and float(self.elapsed) >= cfg.max_minutes * 60

    def finished(self, cfg: TrainConfig) -> bool:
        return int(self.step) >= cfg.max_steps or bool(self.stopped_early) or self.out_of_time(cfg)

    def stop_reason(self, cfg: TrainConfig) -> str:
        if not self.finished(cfg):
            return "stopped"  # a signal, or --until-first-version: it resumes
        if int(self.step) >= cfg.max_steps:
            return "max_steps"
        if self.out_of_time(cfg):
            return "max_minutes"
        return "early_stopping" if bool(self.stopped_early) else "max_steps"


class RunCheckpoints:
    """`run_dir/ckpt` (resumable: weights, optimizer, RunState; the latest two) and `run_dir/best`
    (the weights with the best validation loss). Under MultiWorkerMirroredStrategy every worker
    must save; only the chief's files are kept in the run folder."""

    def __init__(self, model, optimizer, state: RunState, run_dir: Path, worker: int):
        home = run_dir if worker == 0 else run_dir / f"worker{worker}-tmp"
        self.ckpt_dir = home / "ckpt"
        resumable = tf.train.Checkpoint(
            model=variables_checkpoint(model),
            optimizer=variables_checkpoint(optimizer),
            **state.variables(),
        )
        self.latest = tf.train.CheckpointManager(resumable, str(self.ckpt_dir), max_to_keep=2)
        best = tf.train.Checkpoint(model=variables_checkpoint(model))
        self.best = tf.train.CheckpointManager(best, str(home / "best"), max_to_keep=1)

    def resume(self, state: RunState, cfg: TrainConfig) -> None:
        """Restores the latest checkpoint, if any, and says where the run stands."""
        path = self.latest.latest_checkpoint
        if not path:
            return
        fix = f"remove {self.ckpt_dir} to train this run from the start"
        read_checkpoint(self.latest.checkpoint, path, fix).assert_existing_objects_matched()
        step = int(state.step)
        if state.finished(cfg):
            how = "stopped early" if bool(state.stopped_early) else "done"
            how = "out of time" if how == "done" and step < cfg.max_steps else how
            print(f"{path}: this run is finished ({how} at step {step})")
        else:
            print(
                f"resuming from {path} at step {step} "
                f"(epoch {int(state.epoch)}, batch {int(state.position)})"
            )

    def save(self, step: int) -> None:
        self.latest.save(checkpoint_number=step)

    def save_best(self, step: int) -> None:
        self.best.save(checkpoint_number=step)

    def best_step(self) -> int | None:
        """The step whose weights `best` holds (checkpoints are numbered by step)."""
        path = self.best.latest_checkpoint
        return int(path.rsplit("-", 1)[1]) if path else None


def make_train_step(model, optimizer, cfg: TrainConfig, strategy, loss_kwargs: dict):
    """The compiled step: (batch) → (global loss, global gradient norm, per-timestep norms).

    On each replica: the model's loss sums, divided by the global count (an all-reduce), and the
    gradients, all-reduced, so every replica and worker holds the same global gradient. Then,
    outside the replicas: the check, before the clipping (which would turn a NaN norm into NaN
    gradients). If the loss or the gradients' global norm is not finite, no update is applied at
    all — weights, optimizer moments and its step count stay bit-identical — on every worker
    alike (the values checked are the all-reduced ones), and the caller decides whether to go on
    (`train.max_bad_steps`). Otherwise the clipped gradient is applied. The update runs in the
    cross-replica context because it is conditional: a collective inside a `tf.cond` on a
    replica is not allowed, and none is needed, the gradient being global already.
    """
    variables = model.trainable_variables

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
        global_loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss_sum) / tf.maximum(
            global_count, 1.0
        )
        return global_loss, grads, norms

    @tf.function(reduce_retracing=True)
    def train_step(batch):
        loss, grads, norms = strategy.run(replica_step, args=(batch,))

        def local(value):  # every replica holds the same (all-reduced) value
            return strategy.experimental_local_results(value)[0]

        loss, grads = local(loss), [local(g) for g in grads]
        grad_norm = tf.linalg.global_norm(grads)
        ok = tf.logical_and(tf.math.is_finite(loss), tf.math.is_finite(grad_norm))

        def apply():
            clipped, _ = tf.clip_by_global_norm(grads, cfg.clip_norm, use_norm=grad_norm)
            optimizer.apply_gradients(zip(clipped, variables, strict=True))
            return tf.constant(True)

        tf.cond(ok, apply, lambda: tf.constant(False))
        return loss, grad_norm, {k: local(v) for k, v in norms.items()}

    return train_step


class Validation:
    """The evaluation hook: runs `evaluate(model)`, keeps the best weights, counts evaluations
    without improvement and says when to stop early (`train.patience`)."""

    def __init__(self, evaluate, state: RunState, checkpoints: RunCheckpoints, log, bar, publisher):
        self.evaluate, self.state, self.checkpoints = evaluate, state, checkpoints
        self.log, self.bar, self.publisher = log, bar, publisher
        self.last: Evaluation | None = None

    def __call__(self, model, patience: int) -> bool:
        if self.evaluate is None:
            return False
        result = self.last = self.evaluate(model)
        step, state = int(self.state.step), self.state
        improved = result.loss < float(state.best_loss)
        if improved:
            state.best_loss.assign(result.loss)
            state.bad_evals.assign(0)
            self.checkpoints.save_best(step)
        else:
            state.bad_evals.assign_add(1)
        self.log.validation(step, result)
        msg = f"step {step}: valid loss {result.loss:.4f}"
        if result.score is not None:
            msg += f", {result.score_name} {result.score:.2f}"
        self.bar.write(msg + (" (best)" if improved else ""))
        if self.publisher is not None:
            self.publisher.validated(step, result.loss, result.score, improved)
        return patience > 0 and int(state.bad_evals) >= patience


class TensorBoardLog:
    """Scalars and histograms in `run_dir/tb` (chief only): training loss, gradient norm,
    learning rate and per-timestep ‖∂L/∂h_t‖ of every SimpleRNN; validation loss and score."""

    def __init__(self, run_dir: Path, chief: bool):
        self.writer = tf.summary.create_file_writer(str(run_dir / "tb")) if chief else None

    def training(self, step: int, loss: float, grad_norm, learning_rate, norms: dict) -> None:
        if not self.writer:
            return
        with self.writer.as_default(step=step):
            tf.summary.scalar("train/loss", loss)
            tf.summary.scalar("train/grad_norm", grad_norm)
            tf.summary.scalar("train/learning_rate", learning_rate)
            for name, v in norms.items():
                v = v.numpy()
                tf.summary.histogram(f"grad_norm_per_step/{name}", v)
                # the vector itself, t in order (the report's heatmap of t × training step)
                tf.summary.write(f"grad_norm_by_t/{name}", v)
                tf.summary.scalar(
                    f"grad_norm_first_over_last/{name}", float(v[0] / max(v[-1], 1e-12))
                )

    def validation(self, step: int, result: Evaluation) -> None:
        if not self.writer:
            return
        with self.writer.as_default(step=step):
            tf.summary.scalar("valid/loss", result.loss)
            if result.score is not None:
                tf.summary.scalar(f"valid/{result.score_name}", result.score)


def train(
    model: keras.Model,
    train_batches: Batches,
    cfg: TrainConfig,
    run_dir: Path,
    evaluate: Callable[[keras.Model], Evaluation] | None = None,
    loss_kwargs: dict | None = None,
    strategy: tf.distribute.Strategy | None = None,
    progress: bool = True,
    publisher=None,
    stop: Callable[[], bool] | None = None,
) -> dict:
    """Trains `model` (already built, created under `strategy.scope()`) and returns a summary.

    Writes `run_dir/ckpt` (resumable, latest two), `run_dir/best` (weights with the best
    validation loss), `run_dir/tb` (TensorBoard) and, once the run has ended,
    `run_dir/summary.json`. `publisher` (seq2seq.publish.Publisher): versions and status into
    a model repository as the run goes. `stop()` true (a signal came): a checkpoint at the step
    reached, and the run returns unfinished (stop_reason "stopped"); it resumes from there.
    """
    strategy = strategy or tf.distribute.get_strategy()
    worker, workers = worker_info()
    if len(train_batches) == 0:
        raise ValueError(
            f"no training batches for worker {worker} of {workers}: the training split has "
            f"{len(train_batches.examples)} examples, fewer than batch_size × workers"
        )
    run_dir = Path(run_dir)
    with strategy.scope():
        optimizer = make_optimizer(cfg)
        optimizer.build(model.trainable_variables)
    state = RunState()
    checkpoints = RunCheckpoints(model, optimizer, state, run_dir, worker)
    checkpoints.resume(state, cfg)
    train_step = make_train_step(model, optimizer, cfg, strategy, loss_kwargs or {})
    log = TensorBoardLog(run_dir, chief=worker == 0)
    bar = tqdm(
        total=cfg.max_steps,
        initial=int(state.step),
        disable=not (progress and worker == 0),
        unit="step",
        dynamic_ncols=True,
        mininterval=2,
    )
    validate = Validation(evaluate, state, checkpoints, log, bar, publisher)
    start, start_elapsed, smoothed = time.time(), float(state.elapsed), None
    bad_steps = 0  # non-finite steps skipped in this process
    if publisher is not None and worker == 0:
        publisher.started(int(state.step))
    else:
        publisher = None

    def halt() -> bool:
        return bool(stop and stop()) or bool(publisher and publisher.paused())

    while not state.finished(cfg) and not halt():
        for batch in train_batches.iterate(int(state.epoch), int(state.position)):
            loss, grad_norm, norms = train_step(tuple(tf.constant(a) for a in batch))
            loss_value = float(loss)
            if not math.isfinite(loss_value) or not math.isfinite(float(grad_norm)):
                bad_steps += 1
                where = f"at step {int(state.step) + 1}: loss {loss_value}, gradient norm "
                where += f"{float(grad_norm)}"
                if bad_steps >= cfg.max_bad_steps:
                    bar.close()
                    raise TrainingDiverged(
                        f"training diverged {where}. The update was not applied and no "
                        f"checkpoint was written after it; the last good one is "
                        f"{checkpoints.latest.latest_checkpoint}. Lower train.learning_rate or "
                        f"train.clip_norm and run again."
                    )
                bar.write(
                    f"skipped a non-finite update {where} ({bad_steps} of "
                    f"train.max_bad_steps={cfg.max_bad_steps}); going on with the next batch"
                )
                state.position.assign_add(1)
                continue
            state.step.assign_add(1)
            state.position.assign_add(1)
            s = int(state.step)
            smoothed = loss_value if smoothed is None else 0.98 * smoothed + 0.02 * loss_value
            bar.update(1)
            bar.set_postfix(loss=f"{smoothed:.3f}", refresh=False)
            if s % cfg.log_every == 0:
                log.training(s, loss_value, grad_norm, optimizer.learning_rate, norms)
                if publisher is not None:
                    publisher.logged(s, loss_value, {k: v.numpy() for k, v in norms.items()})
            state.elapsed.assign(start_elapsed + time.time() - start)
            last = s >= cfg.max_steps or state.out_of_time(cfg)
            check = s % cfg.eval_every == 0 or last
            check = check or (publisher is not None and publisher.wants_validation(s))
            stop_early = check and validate(model, cfg.patience)
            if s % cfg.checkpoint_every == 0:
                checkpoints.save(s)
            if last or stop_early or halt():
                state.stopped_early.assign(stop_early)
                break
        else:
            state.epoch.assign_add(1)
            state.position.assign(0)
    bar.close()
    checkpoints.save(int(state.step))
    finished = state.finished(cfg)
    if finished and evaluate is not None and checkpoints.best_step() is None:
        checkpoints.save_best(int(state.step))  # no validation ran: the last weights are best
    summary = _summary(model, state, cfg, train_batches, checkpoints, validate, workers)
    if worker == 0 and finished:
        write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    if publisher is not None and not finished:
        publisher.ended("paused" if publisher.paused() else "stopped", int(state.step))
    return summary


def _summary(model, state, cfg, train_batches, checkpoints, validate, workers) -> dict:
    """What `summary.json` holds about a finished (or resumed-and-finished) training."""
    best_loss = float(state.best_loss)
    return {
        "steps": int(state.step),
        "best_step": checkpoints.best_step() if validate.evaluate is not None else None,
        "epochs": int(state.epoch) + int(state.position) / max(len(train_batches), 1),
        "examples": len(train_batches.examples),
        "wall_seconds": round(float(state.elapsed), 1),
        "stop_reason": state.stop_reason(cfg),
        "best_valid_loss": best_loss if math.isfinite(best_loss) else None,
        "last_eval": None if validate.last is None else validate.last.__dict__,
        "workers": workers,
        "weights_digest": weights_digest(model),
    }


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
