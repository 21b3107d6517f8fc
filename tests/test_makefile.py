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
