"""Files and folders replaced in one step, and one training at a time per run folder.

A run's small files (tokenizer, labels, config, summary, scores) and the prepared splits are
replaced so that a crash or a full disk mid-write leaves the previous ones whole: write a hidden
sibling, then rename it over the old (rename(2) is atomic within a folder). A training holds an
advisory lock on its run folder, which the kernel drops with the process (no stale lock after a
crash)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from seq2seq.cluster import worker_info


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


def replace_folder(staged: Path, target: Path) -> None:
    """Moves the complete folder `staged` to `target` (a sibling), replacing what is there.

    rename(2) cannot replace a folder that has files, so the old one is first moved aside under
    a name of its own, and put back if the new one cannot go in. If another process puts a
    folder at `target` in between, this goes round again: the last to finish wins.
    """
    for _ in range(10):
        old = _move_aside(target)
        try:
            staged.replace(target)
        except OSError:
            if target.exists():  # another process published in between
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                continue
            if old is not None:
                old.replace(target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"could not move {staged} to {target}: other processes keep replacing it")


def _move_aside(folder: Path) -> Path | None:
    """Renames `folder` to a fresh hidden name beside it; None if there is no such folder."""
    if not folder.exists():
        return None
    aside = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
    try:
        folder.replace(aside)  # onto the empty folder mkdtemp made
    except FileNotFoundError:  # another process moved it first
        aside.rmdir()
        return None
    return aside


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
        if worker_info()[0] != 0:
            return run_training(cfg, *args, **kwargs)
        with run_lock(cfg.run_dir):
            return run_training(cfg, *args, **kwargs)

    return locked
