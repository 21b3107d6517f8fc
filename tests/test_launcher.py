"""`make serve`'s launcher decides what still trains from what the model repository holds (the
whole flow runs in tests/test_live.py), and a training stopped by a signal writes a checkpoint
at the step it reached and resumes from there."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from servers import ROOT, toy_corpora, wait_for

from serving.launcher import Launcher, main, needs_training


def version(repo: Path, number: int, training: dict | None) -> None:
    path = repo / str(number)
    (path / "assets.extra").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"")
    meta = {"task": repo.name} | ({"training": training} if training else {})
    (path / "assets.extra" / "metadata.json").write_text(json.dumps(meta))


def launcher(model_dir: Path) -> Launcher:
    args = type("Args", (), {})()
    args.model_dir, args.preset, args.dataset = str(model_dir), "tiny", "sentiment"
    args.config, args.overrides = None, []
    return Launcher(args, [])


def test_what_trains_follows_the_repository(tmp_path):
    models = tmp_path / "models"
    # nothing yet: both to their first versions, then both to the end
    assert launcher(models).plan() == [
        ("classify", True),
        ("translate", True),
        ("classify", False),
        ("translate", False),
    ]
    # the translator has an intermediate version (a run stopped or killed mid-way): it resumes
    # to the end; the classifier's newest is final: done
    version(models / "translate", 1, {"step": 200, "final": False})
    version(models / "classify", 1, {"step": 125, "final": False})
    version(models / "classify", 2, {"step": 1500, "final": True})
    assert launcher(models).plan() == [("translate", False)]
    assert needs_training(models / "translate") and not needs_training(models / "classify")
    # a version exported by hand (make export-translate) is served as it is
    version(models / "translate", 2, None)
    assert launcher(models).plan() == []
    # an unreadable newest version is not ours to judge either
    version(models / "translate", 3, {"step": 1, "final": False})
    (models / "translate" / "3" / "assets.extra" / "metadata.json").write_text("{broken")
    assert not needs_training(models / "translate")


def test_the_training_command_carries_the_options(tmp_path):
    lau = launcher(tmp_path / "models")
    lau.args.overrides = ["train.seed=3", "translate:train.max_steps=9", "classify:model.units=8"]
    cmd = lau.train_command("classify", until_first=True)
    assert cmd[1:] == [
        "-m", "seq2seq", "train", "--task", "classify", "--preset", "tiny", "--no-progress",
        "--set", "train.seed=3", "--set", "model.units=8", "--dataset", "sentiment",
        "--publish", str(tmp_path / "models" / "classify"), "--until-first-version",
    ]  # fmt: skip
    cmd = lau.train_command("translate", until_first=False)
    assert "--until-first-version" not in cmd
    assert cmd[cmd.index("--set") :][:4] == ["--set", "train.seed=3", "--set", "train.max_steps=9"]
    assert lau.config("translate").train.max_steps == 9 and lau.config("classify").model.units == 8


def test_a_bad_setting_is_refused_before_anything_starts(tmp_path, capsys):
    code = main(["--model-dir", str(tmp_path), "--preset", "nosuch", "--", "--port", "1"])
    assert code == 2 and "nosuch" in capsys.readouterr().err
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
def test_sigterm_stops_a_training_at_the_step_reached_and_it_resumes_there(tmp_path):
    """`python -m seq2seq train` under SIGTERM: the step under way finishes, a checkpoint is
    written at it, the process exits 143 with the run unfinished, and starting it again resumes
    from that step to the end of the schedule."""
    root = toy_corpora(tmp_path)
    cmd = [sys.executable, "-m", "seq2seq", "train", "--task", "translate", "--preset", "tiny"]
    cmd += ["--no-progress", "--set", f"data.dir={root / 'data' / 'prepared'}"]
    cmd += ["--set", f"train.run_dir={root / 'runs'}", "--set", "train.max_steps=100000"]
    cmd += ["--set", "train.checkpoint_every=100000", "--set", "train.log_every=50"]
    cmd += ["--set", "train.eval_every=100000", "--publish", str(root / "models" / "translate")]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    status = root / "models" / "translate" / "training.json"

    def step() -> int:
        try:
            return json.loads(status.read_text()).get("step", 0)
        except (OSError, ValueError):
            return 0

    wait_for(lambda: step() >= 50 or proc.poll() is not None, 300, what="step 50")
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    stopped = int(out.rsplit("stopped by a signal at step ", 1)[1].split(";")[0])
    assert stopped >= 50
    ckpt = root / "runs" / "translate" / "tiny-none" / "ckpt"
    assert (ckpt / f"ckpt-{stopped}.index").exists()  # written at the step reached
    assert not (ckpt.parent / "summary.json").exists()  # the run is not finished
    assert json.loads(status.read_text())["state"] == "stopped"
    again = [c if c != "train.max_steps=100000" else f"train.max_steps={stopped + 20}" for c in cmd]
    out = subprocess.run(again, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"resuming from {ckpt}/ckpt-{stopped} at step {stopped}" in out.stdout
    summary = json.loads((ckpt.parent / "summary.json").read_text())
    assert summary["steps"] == stopped + 20
