"""A run folder's safety: its small files (tokenizer, labels, config, summary, scores) are
replaced in one step, so that a crash or a full disk mid-write leaves the previous file whole
(write a hidden sibling, then rename it over the old one: rename(2) is atomic within a folder);
and one training at a time writes into it (an advisory lock the kernel drops with the process,
so a crashed training leaves no stale lock)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Replaces `path` with `data` (str is written as UTF-8) in one step."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunInUse(RuntimeError):
    """Another process is training in this run folder."""


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    """Holds `run_dir/.lock` while the block runs; if another process holds it, RunInUse names
    that process at once. (On a file system without locks the block runs unlocked.)"""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunInUse(
                f"{run_dir} is being trained by {holder}: wait for it to finish, stop it, or "
                "train under another train.run_name"
            ) from None
        except OSError:  # no locking here (some network file systems): nothing to hold
            yield
            return
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def one_training_per_run(run_training: Callable) -> Callable:
    """For a task's `run_training(cfg, …)`: the run folder is locked while it trains, so a
    second training of the same run (another shell, a second `make train-…`) is refused at once
    instead of interleaving its checkpoints with the first's. Only the chief locks: under
    MultiWorkerMirroredStrategy the other workers share the folder by design."""

    @functools.wraps(run_training)
    def locked(cfg, *args, **kwargs):
        from seq2seq.training import worker_info  # (imports TensorFlow)

        if worker_info()[0] != 0:
            return run_training(cfg, *args, **kwargs)
        with run_lock(cfg.run_dir):
            return run_training(cfg, *args, **kwargs)

    return locked
