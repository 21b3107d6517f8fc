"""SavedModel export into a TF-Serving-style model repository: `models/<task>/<version>/`.

A version folder holds the SavedModel and `assets.extra/` (SentencePiece model(s) and
`metadata.json`). It is written under a hidden temporary name and renamed into place when
complete, so a reader scanning the repository never sees a half-written version.
"""

from __future__ import annotations

import json
import shutil
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
    """Exports `model` with the given tf.function endpoints as the next numeric version."""
    repository = Path(repository)
    repository.mkdir(parents=True, exist_ok=True)
    version = version or next_version(repository)
    final = repository / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are never overwritten")
    tmp = repository / f".tmp-{version}"
    if tmp.exists():
        shutil.rmtree(tmp)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, signature) in endpoints.items():
        archive.add_endpoint(name, fn, input_signature=signature)
    # Serving needs no gradients; without them the loader registers no custom-gradient functions
    # (a global registry that would keep every loaded version alive: memory growth on reload).
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    archive.write_out(str(tmp), options=options, verbose=False)
    extra = tmp / "assets.extra"
    extra.mkdir()
    for name, data in assets.items():
        (extra / name).write_bytes(data)
    metadata = {**metadata, "version": version}
    (extra / "metadata.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    tmp.replace(final)
    return final
