"""SavedModel export into a TF-Serving-style model repository: `models/<task>/<version>/`.

A version folder holds the SavedModel and `assets.extra/` (SentencePiece model(s) and
`metadata.json`). It is written under a hidden temporary name and renamed into place when
complete, so a reader scanning the repository never sees a half-written version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf


def next_version(repository: Path) -> int:
    versions = [int(p.name) for p in repository.glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def write_version(
    repository: Path,
    model: keras.Model,
    endpoints: dict[str, tuple[Callable, list[tf.TensorSpec]]],
    assets: dict[str, bytes],
    metadata: dict,
    version: int | None = None,
) -> Path:
    """Exports `model` with the given tf.function endpoints as the next numeric version (or as
    `version`, which must not exist yet).

    The folder is written under a temporary name of its own (`.tmp-<random>`: an export running
    beside this one keeps its own) and renamed into place. If another export took the version
    number meanwhile, this one moves on to the next free number; nothing already published is
    touched.
    """
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    if version is not None and (repository / str(version)).exists():
        raise FileExistsError(
            f"{repository / str(version)} already exists; versions are never overwritten"
        )
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=repository))
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        for name, (fn, signature) in endpoints.items():
            archive.add_endpoint(name, fn, input_signature=signature)
        # Serving needs no gradients; without them the loader registers no custom-gradient
        # functions (a global registry that would keep every loaded version alive: memory growth
        # on reload).
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
        archive.write_out(str(tmp / "model"), options=options, verbose=False)
        staged = tmp / "model"
        extra = staged / "assets.extra"
        extra.mkdir()
        for name, data in assets.items():
            (extra / name).write_bytes(data)
        while True:
            number = version or next_version(repository)
            (extra / "metadata.json").write_text(
                json.dumps({**metadata, "version": number}, indent=2, ensure_ascii=False)
            )
            final = repository / str(number)
            try:
                # rename(2) onto a path that exists fails unless it is an empty folder; mkdir
                # first claims the number, so two exports cannot both take it.
                final.mkdir()
            except FileExistsError:
                if version is not None:
                    raise FileExistsError(
                        f"{final} already exists; versions are never overwritten"
                    ) from None
                continue  # another export took this number: the next one
            try:
                staged.replace(final)
            except OSError:
                final.rmdir()  # give the number back
                raise
            return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
