"""`make gpu-check` on a machine without a usable GPU says why and fails before doing anything."""

import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    bool(tf.config.list_physical_devices("GPU")),
    reason="this machine has a GPU: run make gpu-check",
)
def test_gpu_check_refuses_a_machine_without_a_gpu():
    out = subprocess.run(
        [sys.executable, "-m", "seq2seq.gpu_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "gpu-check: no usable GPU here." in out.stderr
    if not tf.test.is_built_with_cuda():
        assert "CPU-only build" in out.stderr and "make install GPU=1" in out.stderr
    else:
        assert "sees no GPU" in out.stderr
    assert "$ " not in out.stdout  # nothing was run


def test_gpu_problem_names_the_cpu_only_build(monkeypatch):
    from seq2seq import gpu_check

    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: False)
    assert "CPU-only build" in gpu_check.gpu_problem()
    monkeypatch.setattr(tf.test, "is_built_with_cuda", lambda: True)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    problem = gpu_check.gpu_problem()
    assert "sees no GPU (CUDA_VISIBLE_DEVICES='')" in problem and "nvidia-smi" in problem
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
    assert gpu_check.gpu_problem() is None
