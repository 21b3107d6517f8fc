"""A training process killed with SIGKILL after a checkpoint resumes to the very weights of a run
that was never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seq2seq.config import load_config
from seq2seq.data import prepare

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [(f"I see {n} cats.", f"Veo {n} gatos.") for n in range(30)]


def _train_cmd(root: Path, run: str) -> tuple[list[str], list[str]]:
    overrides = [
        f"data.dir={root / 'prepared'}",
        f"data.data_file={root / 'pairs.tsv'}",
        "data.valid_fraction=0",
        "data.test_fraction=0",
        f"train.run_dir={root / 'runs'}",
        f"train.run_name={run}",
        "train.max_steps=300",
        "train.checkpoint_every=50",
        "train.eval_every=1000",
        "train.batch_size=4",
        "model.dropout=0.1",  # the dropout draws must resume where they were too
    ]
    cmd = [sys.executable, "-m", "seq2seq", "train", "--preset", "tiny", "--no-progress"]
    for item in overrides:
        cmd += ["--set", item]
    return cmd, overrides


def _summary(out: str) -> dict:
    return json.loads(out[out.index("{") :])


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_rerun_gives_the_uninterrupted_weights(tmp_path):
    (tmp_path / "pairs.tsv").write_text("".join(f"{en}\t{es}\tx\n" for en, es in PAIRS))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd, overrides = _train_cmd(tmp_path, "straight")
    prepare(load_config("translate", "tiny", overrides=overrides))
    straight = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    cmd, _ = _train_cmd(tmp_path, "killed")
    ckpt = tmp_path / "runs" / "translate" / "killed" / "ckpt"
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (ckpt / "checkpoint").exists():  # the first checkpoint is complete
        assert proc.poll() is None, "training ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (ckpt.parent / "summary.json").exists()  # it really was cut short
    saved = (ckpt / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-300"' not in saved

    resumed = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    a, b = _summary(straight.stdout), _summary(resumed.stdout)
    assert a["steps"] == b["steps"] == 300
    assert a["weights_digest"] == b["weights_digest"]
