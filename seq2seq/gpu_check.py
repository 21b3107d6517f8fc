"""`make gpu-check`: is this machine's GPU path sound, end to end?

On a machine where TensorFlow sees a GPU it runs, each in its own process so one failure does not
hide the next: the layer's exactness tests (float64 against autodiff, masks, truncation, dropout,
mixed precision) on the GPU, `bench_rnn` (short rounds), a 2-minute training of the default
translator, its export, and a request served with `--device gpu`; then prints a summary and
exits non-zero if any step failed. Without a usable GPU it says why (a CPU-only TensorFlow, or
no device visible) and exits 1 before doing anything.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXACTNESS_TESTS = ["tests/test_bptt.py", "tests/test_layers.py"]


def gpu_problem() -> str | None:
    """Why this machine cannot run the GPU path, or None when TensorFlow sees a GPU."""
    try:
        import tensorflow as tf
    except ImportError:
        return "TensorFlow is not installed: `make install GPU=1` installs its CUDA build"
    if not tf.test.is_built_with_cuda():
        return (
            f"this TensorFlow {tf.__version__} is a CPU-only build (the default install pins "
            f"tensorflow-cpu): `make install GPU=1` replaces it with tensorflow[and-cuda]; "
            f"see docs/gpu.md"
        )
    if not tf.config.list_physical_devices("GPU"):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return (
            f"TensorFlow {tf.__version__} has CUDA support but sees no GPU{hint}: is an NVIDIA "
            f"driver installed (`nvidia-smi`)? TensorFlow's log above says what it could not load"
        )
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], timeout: float) -> tuple[bool, str]:
    print("$", " ".join(cmd), flush=True)
    try:
        done = subprocess.run(cmd, cwd=ROOT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    return done.returncode == 0, f"exit {done.returncode}"


def _serve_one(model_dir: Path) -> tuple[bool, str]:
    """Starts the server on the GPU over `model_dir`, translates one sentence with the client
    CLI (a process of its own: this library does not import the serving side), stops it."""
    port = _free_port()
    cmd = [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--port", str(port)]
    cmd += ["--device", "gpu", "--http-port", "-1"]
    ask = [sys.executable, "-m", "serving.client.cli", "--target", f"127.0.0.1:{port}"]
    ask += ["--timeout", "30", "translate", "Tengo un gato negro."]
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                return False, f"the server exited ({proc.returncode}) before answering"
            out = subprocess.run(ask, cwd=ROOT, capture_output=True, text=True, check=False)
            if out.returncode == 0:
                return True, f"«Tengo un gato negro.» → «{out.stdout.strip()}»"
            if time.time() > deadline:
                return False, f"no answer within 300 s: {out.stderr.strip()}"
            time.sleep(2)  # not listening yet
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> int:
    problem = gpu_problem()
    if problem:
        print(f"gpu-check: no usable GPU here. {problem}", file=sys.stderr)
        return 1
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"gpu-check: TensorFlow {tf.__version__} sees {[g.name for g in gpus]}", flush=True)
    py = sys.executable
    results: list[tuple[str, bool, str, float]] = []

    def step(name, fn):
        t0 = time.perf_counter()
        ok, detail = fn()
        results.append((name, ok, detail, time.perf_counter() - t0))
        return ok

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        runs, models = Path(tmp) / "runs", Path(tmp) / "models"
        common = ["--task", "translate", "--preset", "default"]
        common += ["--set", f"train.run_dir={runs}", "--set", "train.run_name=gpu-check"]
        step(
            "exactness tests on the GPU",
            lambda: _run([py, "-m", "pytest", "-q", "-x", *EXACTNESS_TESTS], 1200),
        )
        step(
            "bench-rnn (short rounds)",
            lambda: _run([py, "-m", "seq2seq.bench_rnn", "--rounds", "5", "--seconds", "2"], 900),
        )
        trained = step(
            "2-minute translation training",
            lambda: _run(
                [py, "-m", "seq2seq", "train", *common, "--set", "train.max_minutes=2"], 900
            ),
        )
        exported = trained and step(
            "export",
            lambda: _run(
                [py, "-m", "seq2seq", "export", *common, "--repository", str(models / "translate")],
                600,
            ),
        )
        if exported:
            step("a request served with --device gpu", lambda: _serve_one(models))

    print("\ngpu-check summary")
    for name, ok, detail, secs in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<36} {secs:7.1f} s  {detail}")
    failed = [r for r in results if not r[1]]
    if failed or len(results) < 5:
        print(f"gpu-check: {len(failed)} step(s) failed, {5 - len(results)} not reached")
        return 1
    print("gpu-check: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
