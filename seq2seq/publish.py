"""Live training: versions exported into a model repository while the run trains, and the run's
progress written beside them (`<repository>/training.json`), read by the server, the client and
the web page.

Under `python -m seq2seq train --publish <repository>` (what `make serve` starts behind the
server):

- a first version after `train.first_export_step` steps, so that the server answers early;
- a new version at each validation whose loss beats every earlier one (the run's best weights
  move there), at least `train.export_every` steps after the previous version;
- at the end of the schedule, the final version: the best weights, with their test scores.

Publishing never changes the training: a validation reads the weights and moves no random state,
so the same seed and schedule end at the same weights whether or not versions were exported on
the way, and whether the run was stopped and resumed.

The status file holds what a reader needs to say how far the run is and whether it is still
improving the model: state, step and schedule, speed, the step of the next validation, the
training loss and validation curves, ‖∂L/∂h_t‖ through time (log10, one column per logged step)
and each exported version's step and scores. It is rewritten whole (atomically) at most every few
seconds and at every validation; curves are thinned to `MAX_POINTS` points.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from seq2seq.export_format import TRAINING_FILE
from seq2seq.files import write_atomic

MAX_POINTS = 400  # points per curve, and heatmap columns, kept in the status file
WRITE_EVERY_SECONDS = 5.0  # progress is written at most this often (validations always)


def _thin(points: list) -> list:
    """Every other point dropped (the last kept) once there are more than MAX_POINTS."""
    if len(points) <= MAX_POINTS:
        return points
    return points[:-1:2] + points[-1:]


class Publisher:
    """What `seq2seq.training.train` tells about the run (`started`, `logged`, `validated`,
    `ended`), turned into versions and the status file. `export(training)` writes a version of
    the model as it is now, with `training` (step, scores) in its metadata, and returns its
    folder; the task provides it."""

    def __init__(
        self,
        repository: str | Path,
        task: str,
        run_dir: Path,
        cfg,  # seq2seq.config.TrainConfig
        score_name: str,
        export: Callable[[dict], Path],
        until_first_version: bool = False,
    ):
        self.repository, self.task, self.cfg = Path(repository), task, cfg
        self.run, self.score_name, self.export = str(run_dir), score_name, export
        self.until_first_version = until_first_version
        self.path = self.repository / TRAINING_FILE
        self.status = self._previous() or self._new()
        self._written = 0.0
        self._rate_from: tuple[int, float] | None = None

    # --- the status file --------------------------------------------------------------------------

    def _new(self) -> dict:
        return {
            "format": 1,
            "task": self.task,
            "run": self.run,
            "versions": [],
            "train_loss": [],
            "validations": [],
            "grad_norms": {"steps": [], "layers": {}},
        }

    def _previous(self) -> dict | None:
        """The status this run left (it is resumed), or None (another run's, or unreadable)."""
        try:
            old = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(old, dict) or old.get("run") != self.run or old.get("format") != 1:
            return None
        return old

    def write(self, force: bool = True) -> None:
        now = time.time()
        if not force and now - self._written < WRITE_EVERY_SECONDS:
            return
        self.status["updated"] = now
        self.repository.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self.status, separators=(",", ":")) + "\n")
        self._written = now

    def _schedule(self, step: int) -> None:
        cfg, s = self.cfg, self.status
        checks = [(step // cfg.eval_every + 1) * cfg.eval_every, cfg.max_steps]
        if not s["versions"] and cfg.first_export_step > step:
            checks.append(cfg.first_export_step)
        s["step"], s["next_check_step"] = step, min(checks)

    # --- what the training loop calls -------------------------------------------------------------

    def started(self, step: int) -> None:
        """The run starts, or resumes at `step`: what was logged after `step` is dropped (a
        process killed after its last checkpoint trains those steps again)."""
        s = self.status
        s["train_loss"] = [p for p in s["train_loss"] if p[0] <= step]
        s["validations"] = [v for v in s["validations"] if v["step"] <= step]
        norms = s["grad_norms"]
        keep = [i for i, t in enumerate(norms["steps"]) if t <= step]
        norms["steps"] = [norms["steps"][i] for i in keep]
        norms["layers"] = {k: [v[i] for i in keep] for k, v in norms["layers"].items()}
        s.update(
            state="training",
            message="",
            pid=os.getpid(),
            host=socket.gethostname(),
            max_steps=self.cfg.max_steps,
            eval_every=self.cfg.eval_every,
            first_export_step=self.cfg.first_export_step,
            score_name=self.score_name,
            steps_per_second=None,
        )
        self._schedule(step)
        self._rate_from = (step, time.time())
        self.write()

    def logged(self, step: int, loss: float, norms: dict[str, np.ndarray]) -> None:
        """A logged training step: the loss and each SimpleRNN's ‖∂L/∂h_t‖ (one batch)."""
        s = self.status
        if math.isfinite(loss):
            s["train_loss"] = _thin([*s["train_loss"], [step, round(loss, 4)]])
        grid = s["grad_norms"]
        grid["steps"].append(step)
        for name, values in norms.items():
            column = np.log10(np.maximum(np.asarray(values, np.float64), 1e-12))
            grid["layers"].setdefault(name, [[] for _ in grid["steps"][:-1]])
            grid["layers"][name].append([round(float(v), 3) for v in column])
        for columns in grid["layers"].values():  # a layer this step did not report
            if len(columns) < len(grid["steps"]):
                columns.append([])
        if len(grid["steps"]) > MAX_POINTS:
            grid["steps"] = _thin(grid["steps"])
            grid["layers"] = {k: _thin(v) for k, v in grid["layers"].items()}
        now = time.time()
        if self._rate_from and step > self._rate_from[0] and now > self._rate_from[1]:
            rate = (step - self._rate_from[0]) / (now - self._rate_from[1])
            old = s.get("steps_per_second")
            s["steps_per_second"] = round(rate if old is None else 0.7 * old + 0.3 * rate, 3)
        self._rate_from = (step, now)
        self._schedule(step)
        self.write(force=False)

    def wants_validation(self, step: int) -> bool:
        """A validation outside `eval_every`: the one that gives the first version."""
        return not self.status["versions"] and step == self.cfg.first_export_step

    def validated(self, step: int, loss: float, score: float | None, improved: bool) -> None:
        """A validation; exports a version if it is due (see the module's docstring)."""
        s = self.status
        entry = {"step": step, "loss": round(loss, 4), "score": score}
        s["validations"] = _thin([*s["validations"], entry])
        last = s["versions"][-1]["step"] if s["versions"] else None
        if step >= self.cfg.max_steps:
            due = False  # the schedule's end: the final version comes next (best, evaluated)
        elif last is None:
            due = step >= self.cfg.first_export_step
        else:
            every = self.cfg.export_every
            due = improved and step > last and (every == 0 or step - last >= every)
        if due:
            self._export(step, loss, score, final=False)
        self._schedule(step)
        self.write()

    def _export(self, step, loss, score, final: bool, test=None, export=None) -> Path:
        training = {
            "run": self.run,
            "step": step,
            "max_steps": self.cfg.max_steps,
            "final": final,
            "valid_loss": loss,
            "score_name": self.score_name,
            "valid_score": score,
        }
        path = (export or self.export)(training)
        entry = {"version": int(path.name), **training, "time": round(time.time(), 1)}
        entry.pop("run")
        if test:
            entry["test"] = test
        self.status["versions"].append(entry)
        return path

    def paused(self) -> bool:
        """`--until-first-version`: the run has its first version, and stops for now."""
        return self.until_first_version and bool(self.status["versions"])

    def has_final(self) -> bool:
        return any(v.get("final") for v in self.status["versions"])

    def ended(self, state: str, step: int, message: str = "") -> None:
        """The process stops training: `stopped` (a signal; it resumes), `paused`, `finished`
        (the schedule is done) or `failed`."""
        self._schedule(step)
        self.status.update(state=state, message=message, steps_per_second=None)
        self.write()

    def score_at(self, step: int):
        """The validation score logged at `step` (None if none was)."""
        found = [v["score"] for v in self.status["validations"] if v["step"] == step]
        return found[-1] if found else None

    def final(self, export: Callable[[dict], Path], step: int, loss, test: dict) -> Path:
        """Exports the final version: `export` writes the run's best weights (from step `step`,
        validation loss `loss`) with `test`, their test scores; the run is marked finished."""
        path = self._export(step, loss, self.score_at(step), True, test, export)
        self.ended("finished", int(self.status.get("step", step)))
        return path


def set_state(repository: str | Path, task: str, run_dir: Path, state: str, message: str) -> None:
    """Records a run's state from outside the training process (`make serve`'s launcher:
    "queued" before its training starts, "failed" when the process died), keeping what the run
    wrote (its curves and versions) when the status file is this run's."""
    status = Publisher(repository, task, run_dir, None, "", lambda _: Path()).status
    status.update(state=state, message=message, updated=time.time())
    if state != "training":
        status["steps_per_second"] = None
    Path(repository).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(repository) / TRAINING_FILE, json.dumps(status, separators=(",", ":")) + "\n")
