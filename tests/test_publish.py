"""Live training's bookkeeping (seq2seq.publish) and the server's side of it: when a version is
exported, what the status file keeps across a resume, what the server reads from it
(serving.server.learning), and which intermediate versions are pruned (VersionManager.prune)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from seq2seq import export_format as fmt
from seq2seq.config import TrainConfig
from seq2seq.publish import MAX_POINTS, Publisher, set_state
from serving.server.errors import ModelUnavailable
from serving.server.learning import TrainingStatus
from serving.server.manager import VersionManager


class Exports:
    """A stand-in for a task's export: writes a version folder with the metadata a real export
    has (saved_model.pb and assets.extra/metadata.json), records what it was given."""

    def __init__(self, repository: Path, task: str = "translate"):
        self.repository, self.task, self.calls = repository, task, []

    def __call__(self, training: dict) -> Path:
        self.calls.append(training)
        return write_version(self.repository, {"task": self.task, "training": training})


def write_version(repository: Path, metadata: dict) -> Path:
    number = max(fmt.versions(repository), default=0) + 1
    path = repository / str(number)
    (path / fmt.ASSETS).mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    (path / fmt.ASSETS / fmt.METADATA_FILE).write_text(json.dumps(metadata))
    return path


def publisher(tmp_path, exports=None, **train) -> tuple[Publisher, Exports]:
    cfg = TrainConfig(**{"max_steps": 1000, "eval_every": 200, "first_export_step": 50} | train)
    exports = exports or Exports(tmp_path / "repo")
    repo, run = tmp_path / "repo", tmp_path / "run"
    return Publisher(repo, "translate", run, cfg, "bleu", exports), exports


def test_versions_are_exported_first_early_then_when_the_loss_improves(tmp_path):
    pub, exports = publisher(tmp_path, export_every=400)
    pub.started(0)
    assert not pub.wants_validation(40) and pub.wants_validation(50)
    pub.validated(50, 3.0, 1.0, improved=True)  # the first version
    assert not pub.wants_validation(50)  # it has one now
    pub.validated(200, 2.5, 5.0, improved=True)  # better, but only 150 steps after the last
    pub.validated(400, 2.6, 6.0, improved=False)  # 350 steps on, not better
    pub.validated(600, 2.0, 9.0, improved=True)  # better and 550 on: exported
    pub.validated(1000, 1.5, 12.0, improved=True)  # the schedule's end: the final comes next
    assert [c["step"] for c in exports.calls] == [50, 600]
    assert [v["version"] for v in pub.status["versions"]] == [1, 2]
    assert exports.calls[1] | {"run": None} == {
        "run": None,
        "step": 600,
        "max_steps": 1000,
        "final": False,
        "valid_loss": 2.0,
        "score_name": "bleu",
        "valid_score": 9.0,
    }
    path = pub.final(exports, 1000, 1.5, {"beam_bleu": 13.0})
    assert path.name == "3" and pub.status["state"] == "finished" and pub.has_final()
    last = pub.status["versions"][-1]
    assert (last["final"], last["valid_score"], last["test"]) == (True, 12.0, {"beam_bleu": 13.0})
    written = json.loads((tmp_path / "repo" / fmt.TRAINING_FILE).read_text())
    assert written["versions"] == pub.status["versions"] and written["state"] == "finished"


def test_every_improving_validation_is_exported_with_export_every_0(tmp_path):
    pub, exports = publisher(tmp_path, first_export_step=0)
    pub.started(0)
    for step, improved in ((200, True), (400, False), (600, True), (800, True)):
        pub.validated(step, 1.0, None, improved)
    assert [c["step"] for c in exports.calls] == [200, 600, 800]


def test_until_first_version_pauses_once_there_is_one(tmp_path):
    pub, _ = publisher(tmp_path)
    pub.until_first_version = True
    pub.started(0)
    assert not pub.paused()
    pub.validated(50, 3.0, None, improved=True)
    assert pub.paused()
    pub.ended("paused", 50)
    assert json.loads(pub.path.read_text())["state"] == "paused"


def test_a_resumed_run_keeps_its_curves_up_to_its_checkpoint(tmp_path):
    pub, exports = publisher(tmp_path)
    pub.started(0)
    for step in range(20, 420, 20):
        pub.logged(step, 5.0 - step / 100, {"encoder_0": np.array([1e-3, 1e-1, 10.0])})
    pub.validated(50, 3.0, 1.0, improved=True)
    pub.validated(200, 2.0, 4.0, improved=True)
    pub.validated(400, 1.8, 5.0, improved=True)
    assert len(exports.calls) == 3
    # killed after step 400; its last checkpoint was at 300: what came after is trained again
    again, _ = publisher(tmp_path, exports)
    again.started(300)
    s = again.status
    assert s["train_loss"][-1][0] == 300 and [v["step"] for v in s["validations"]] == [50, 200]
    assert s["grad_norms"]["steps"][-1] == 300
    assert s["grad_norms"]["layers"]["encoder_0"][0] == [-3.0, -1.0, 1.0]  # log10
    assert len(s["versions"]) == 3  # versions are on disk: they stay
    assert s["state"] == "training" and s["pid"] == os.getpid() and s["next_check_step"] == 400
    # another run's status is not taken over
    other = Publisher(tmp_path / "repo", "translate", tmp_path / "x", TrainConfig(), "", exports)
    assert other.status["versions"] == []


def test_curves_are_thinned_and_layers_stay_aligned(tmp_path):
    pub, _ = publisher(tmp_path, max_steps=100_000)
    pub.started(0)
    for step in range(1, 2 * MAX_POINTS + 10):
        norms = {"encoder_0": np.ones(3)} | ({"decoder_0": np.ones(2)} if step > 5 else {})
        pub.logged(step, 1.0, norms)
    grid = pub.status["grad_norms"]
    assert len(pub.status["train_loss"]) <= MAX_POINTS + 1
    assert len(grid["steps"]) <= MAX_POINTS + 1 and grid["steps"][-1] == 2 * MAX_POINTS + 9
    assert all(len(c) == len(grid["steps"]) for c in grid["layers"].values())
    assert grid["layers"]["decoder_0"][0] == []  # not reported at the first steps


def test_the_server_reads_state_progress_and_when_a_version_is_expected(tmp_path):
    pub, _ = publisher(tmp_path)
    reader = TrainingStatus(tmp_path / "repo")
    assert reader.summary() is None and reader.expected() == ""
    set_state(tmp_path / "repo", "translate", tmp_path / "run", "queued", "after the classifier")
    assert reader.summary()["state"] == "queued" and reader.summary()["improving"]
    assert "queued (after the classifier)" in reader.expected()
    pub, _ = publisher(tmp_path)
    pub.started(0)
    pub.logged(20, 4.0, {})
    pub.status["steps_per_second"] = 2.0
    pub.write()
    s = reader.summary()
    assert (s["state"], s["step"], s["total_steps"], s["next_check_step"]) == (
        "training",
        20,
        1000,
        50,
    )
    assert 10 <= s["next_check_seconds"] <= 15  # 30 steps at 2 steps/s, less the time since
    assert "the first version is expected in about 1" in reader.expected()
    assert "(at step 50)" in reader.expected()
    # the process named is gone (kill -9): no longer training
    pub.status["pid"] = _dead_pid()
    pub.write()
    assert reader.summary()["state"] == "interrupted" and not reader.summary()["improving"]
    assert "`make serve` resumes it" in reader.expected()
    full = reader.full()
    assert full["train_loss"] == [[20, 4.0]] and "grad_norms" in full
    # another host's status: alive while it is rewritten
    pub.status.update(host="elsewhere", pid=1)
    pub.write()
    assert reader.summary()["state"] == "training"
    (tmp_path / "repo" / fmt.TRAINING_FILE).write_text("{not json")
    assert reader.summary() is None


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_task_without_a_version_says_when_one_is_expected(tmp_path):
    models = tmp_path / "models"
    manager = VersionManager(models, load=lambda path, task: pytest.fail("nothing to load"))
    with pytest.raises(ModelUnavailable, match=r"export one into"):
        manager.acquire("translate")
    set_state(models / "translate", "translate", tmp_path / "run", "queued", "its turn comes")
    with pytest.raises(ModelUnavailable, match=r"no translate model is loaded yet: its training"):
        manager.acquire("translate")


class Loaded:
    def __init__(self, path: Path, task: str):
        self.version, self.task = int(path.name), task

    def release(self) -> None:
        pass


def test_pruning_keeps_the_newest_labelled_served_final_and_hand_made_versions(tmp_path):
    models = tmp_path / "models"
    repo = models / "translate"
    write_version(repo, {"task": "translate"})  # v1: exported by hand
    for step in range(2, 9):  # v2..v8: intermediate versions of a live run
        write_version(repo, {"task": "translate", "training": {"step": step, "final": False}})
    write_version(repo, {"task": "translate", "training": {"step": 9, "final": True}})  # v9
    time.sleep(0.01)
    manager = VersionManager(
        models,
        labels={"translate": {"stable": 3}},
        load=Loaded,
        keep_intermediate=2,
    )
    assert manager.served_versions()["translate"] == [9, 3]
    assert manager.prune("translate") == [2, 4, 5, 6]
    assert fmt.versions(repo) == [1, 3, 7, 8, 9]
    assert not [p for p in repo.iterdir() if p.name.startswith(".deleting")]
    assert manager.prune("translate") == []  # nothing more to do
    assert VersionManager(models, load=Loaded, keep_intermediate=0).prune("translate") == []
