"""Data: pinned corpora, preparation and splits, SentencePiece tokenizers, batching.

The names below are imported from their modules on first use (PEP 562), so importing one
module of the package (the server's `seq2seq.data.tokenizer`) does not pull in the others:
corpus preparation, sources and batching are training-side code.
"""

from __future__ import annotations

import importlib

_HOME = {
    "Batches": "pipeline",
    "classification_batch": "pipeline",
    "pad": "pipeline",
    "translation_batch": "pipeline",
    "normalize": "preparation",
    "prepare": "preparation",
    "read_split": "preparation",
    "SOURCES": "sources",
    "DataError": "sources",
    "EOS": "tokenizer",
    "PAD": "tokenizer",
    "SOS": "tokenizer",
    "UNK": "tokenizer",
    "Tokenizer": "tokenizer",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # once: later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
