"""Writing a run's small files (tokenizer, labels, config, summary, scores) so that a crash or a
full disk mid-write leaves the previous file whole: write a hidden sibling, then rename it over
the old one (rename(2) is atomic within a folder)."""

from __future__ import annotations

import os
import tempfile
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
