"""Pretrained word vectors for a SentencePiece vocabulary (GloVe text format).

A piece that starts a word ("▁Great") takes the vector of the lowercased word ("great"); a
punctuation piece takes its own ("," → ","); word-internal fragments ("ing") and words the
vectors do not know keep a random start, drawn with the pretrained vectors' own scale.
"""

from __future__ import annotations

import bz2
import io
from pathlib import Path

import numpy as np

from seq2seq.data.sources import EMBEDDINGS, DataError, open_member
from seq2seq.data.tokenizer import EOS, Tokenizer

WORD_START = "\u2581"  # SentencePiece's word-boundary mark


def piece_words(tok: Tokenizer) -> dict[int, str]:
    """Piece id → the word whose vector it takes (pieces that take none are left out)."""
    out = {}
    for i in range(EOS + 1, tok.vocab_size):
        piece = tok.sp.id_to_piece(i)
        if piece.startswith(WORD_START) and len(piece) > 1:
            out[i] = piece[1:].lower()
        elif piece and not any(c.isalnum() for c in piece):
            out[i] = piece.lstrip(WORD_START) or piece
    return out


def _open(name_or_path: str, cache: Path):
    if name_or_path in EMBEDDINGS:
        return open_member(EMBEDDINGS[name_or_path], cache)
    path = Path(name_or_path)
    if not path.exists():
        raise DataError(
            f"pretrained embeddings {name_or_path!r}: neither a known name "
            f"({', '.join(EMBEDDINGS)}) nor an existing file"
        )
    return open(path, "rb")


def read_vectors(name_or_path: str, words: set[str], cache: Path = Path("data/cache")):
    """{word: vector} for `words` found in a GloVe-format file (`word v1 … vd` per line,
    optionally .bz2), and the dimension."""
    found: dict[str, np.ndarray] = {}
    dim = None
    with _open(name_or_path, cache) as raw:
        head = raw.peek(3)[:3] if hasattr(raw, "peek") else b""
        stream = bz2.open(raw) if head == b"BZh" or str(name_or_path).endswith(".bz2") else raw
        for n, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8", errors="replace")):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in words:
                continue
            values = rest.split(" ")
            if dim is None:
                dim = len(values)
            if len(values) != dim:
                raise DataError(f"{name_or_path}: line {n + 1} has {len(values)} values, not {dim}")
            try:
                found[word] = np.asarray(values, np.float32)
            except ValueError:
                raise DataError(f"{name_or_path}: line {n + 1} is not `word v1 … v{dim}`") from None
    if dim is None:
        raise DataError(f"{name_or_path}: no vector for any of the {len(words)} vocabulary words")
    return found, dim


def embedding_matrix(
    tok: Tokenizer, name_or_path: str, dim: int, seed: int = 0, cache: Path = Path("data/cache")
) -> tuple[np.ndarray, float]:
    """A (vocab_size, dim) initial embedding matrix and the share of pieces found."""
    words = piece_words(tok)
    vectors, found_dim = read_vectors(name_or_path, set(words.values()), cache)
    if found_dim != dim:
        raise DataError(
            f"{name_or_path} has {found_dim}-dimensional vectors but model.embedding_dim is {dim}"
        )
    known = np.stack(list(vectors.values()))
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, float(known.std()), (tok.vocab_size, dim)).astype(np.float32)
    hits = 0
    for i, word in words.items():
        if word in vectors:
            matrix[i] = vectors[word]
            hits += 1
    return matrix, hits / max(1, tok.vocab_size - EOS - 1)
