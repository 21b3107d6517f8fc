"""A run's small files are replaced in one step (a failed write leaves the old file whole), and
one training at a time writes into a run folder."""

import errno
import os
import subprocess
import sys

import pytest

from seq2seq import files
from seq2seq.config import load_config
from seq2seq.files import RunInUse, run_lock, write_atomic
from seq2seq.tasks import classification, translation


def test_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text("old")
    write_atomic(path, '{"accuracy": 0.8}\n')
    assert path.read_text() == '{"accuracy": 0.8}\n'
    write_atomic(path, b"\x00\x01bytes")
    assert path.read_bytes() == b"\x00\x01bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]


def test_a_disk_that_fills_mid_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("the previous summary\n")
    real_fdopen = os.fdopen

    class HalfWritten:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: HalfWritten(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, "a new summary that does not fit\n")
    assert path.read_text() == "the previous summary\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # the partial copy is gone


HOLD = """
import sys, time
from seq2seq.files import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("task", ["translate", "classify"])
def test_a_second_training_of_a_run_is_refused_and_a_dead_ones_lock_is_gone(tmp_path, task):
    cfg = load_config(task, "tiny", overrides=[f"train.run_dir={tmp_path / 'runs'}"])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(cfg.run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        module = translation if task == "translate" else classification
        with pytest.raises(RunInUse) as err:
            module.run_training(cfg)
        assert str(err.value).startswith(f"{cfg.run_dir} is being trained by process {holder.pid}")
        assert [p.name for p in cfg.run_dir.iterdir()] == [".lock"]  # nothing else written
    finally:
        holder.kill()  # as a crash would: no cleanup runs
        holder.wait()
    with run_lock(cfg.run_dir):  # the kernel dropped the dead process's lock
        assert (cfg.run_dir / ".lock").read_text() == f"process {os.getpid()}\n"
