"""A run's small files are replaced in one step: a failed write leaves the old file whole."""

import errno
import os

import pytest

from seq2seq import files
from seq2seq.files import write_atomic


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
