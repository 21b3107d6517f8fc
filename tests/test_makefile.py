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


def test_make_serve_exports_again_when_the_exported_versions_are_gone(tmp_path):
    """`make serve` trains/exports a task only if it has no model: its marker file says a model
    was exported, but a marker whose versions were all deleted no longer counts."""
    import os
    import time

    (tmp_path / ".venv").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    time.sleep(0.01)
    (tmp_path / ".venv" / ".installed").write_text("")
    data = ["translate/tatoeba_spa_eng", "classify/sentiment"]
    for corpus in data:
        (tmp_path / "data" / "prepared" / corpus).mkdir(parents=True)
        (tmp_path / "data" / "prepared" / corpus / "manifest.json").write_text("{}")
    later = time.time() + 5
    for task, marker in (("translate", ".ready-default"), ("classify", ".ready-default-sentiment")):
        (tmp_path / "models" / task).mkdir(parents=True)
        (tmp_path / "models" / task / marker).write_text("")
        os.utime(tmp_path / "models" / task / marker, (later, later))

    def planned() -> str:
        out = subprocess.run(
            ["make", "-n", "--no-print-directory", "-f", str(ROOT / "Makefile"), "serve"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout

    # markers, but no version of either task: both are trained (resumed) and exported again
    plan = planned()
    assert "--repository models/translate" in plan and "--repository models/classify" in plan
    # a complete version of the translator: only the classifier is exported again
    (tmp_path / "models" / "translate" / "3").mkdir()
    (tmp_path / "models" / "translate" / "3" / "saved_model.pb").write_text("")
    plan = planned()
    assert "--repository models/translate" not in plan
    assert "--repository models/classify" in plan
    assert " ".join(plan.split()).endswith("python -m serving --model-dir models --http-port 8080")
    # both have a version: nothing is trained, the server starts
    (tmp_path / "models" / "classify" / "1").mkdir()
    (tmp_path / "models" / "classify" / "1" / "saved_model.pb").write_text("")
    plan = planned()
    assert " train " not in plan and "--repository" not in plan
    assert " ".join(plan.split()).endswith("python -m serving --model-dir models --http-port 8080")


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
