"""Pretrained word vectors mapped onto a SentencePiece vocabulary."""

import bz2

import numpy as np
import pytest

from seq2seq.data import DataError, Tokenizer
from seq2seq.data.embeddings import embedding_matrix, piece_words, read_vectors

TEXTS = [
    f"The {noun} is {adj} , {adv} ."
    for noun in ("movie", "film", "cast", "plot", "story", "ending")
    for adj in ("great", "bad", "dull", "fine", "long", "short")
    for adv in ("sadly", "truly", "really", "mostly")
] * 3
VECTORS = {
    "the": [0.1, 0.2, 0.3],
    "movie": [1.0, 0.0, -1.0],
    "great": [0.5, 0.5, 0.5],
    "bad": [-0.5, -0.5, -0.5],
    ",": [0.0, 0.9, 0.0],
    "unused": [9.0, 9.0, 9.0],
}


def write_glove(path, vectors, compress):
    text = "".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items())
    if compress:
        path.write_bytes(bz2.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS, vocab_size=60, model_type="word")  # whole-word pieces


@pytest.mark.parametrize("compress", [False, True])
def test_word_pieces_take_their_lowercased_word_vectors(tok, tmp_path, compress):
    path = write_glove(tmp_path / ("v.txt.bz2" if compress else "v.txt"), VECTORS, compress)
    matrix, share = embedding_matrix(tok, str(path), 3, seed=1)
    assert matrix.shape == (tok.vocab_size, 3)
    words = piece_words(tok)
    hits = 0
    for i, word in words.items():
        if word in VECTORS:
            np.testing.assert_allclose(matrix[i], VECTORS[word], rtol=1e-6)
            hits += 1
    assert (
        tok.sp.piece_to_id("\u2581The") in words and words[tok.sp.piece_to_id("\u2581The")] == "the"
    )
    assert hits >= 4 and share == pytest.approx(hits / (tok.vocab_size - 4))
    # Pieces without a vector start random, at the pretrained vectors' scale.
    others = [i for i in range(4, tok.vocab_size) if words.get(i) not in VECTORS]
    assert others and 0.05 < matrix[others].std() < 5.0


def test_bad_vector_files_fail_clearly(tok, tmp_path):
    path = write_glove(tmp_path / "v.txt", VECTORS, False)
    with pytest.raises(DataError, match="3-dimensional vectors but model.embedding_dim is 8"):
        embedding_matrix(tok, str(path), 8)
    ragged = tmp_path / "ragged.txt"
    ragged.write_text("the 0.1 0.2 0.3\ngreat 0.5 0.5\n")
    with pytest.raises(DataError, match="line 2 has 2 values, not 3"):
        read_vectors(str(ragged), {"the", "great"})
    words = tmp_path / "words.txt"
    words.write_text("the a b c\n")
    with pytest.raises(DataError, match="line 1 is not"):
        read_vectors(str(words), {"the"})
    with pytest.raises(DataError, match="no vector for any"):
        read_vectors(str(path), {"zebra"})
    with pytest.raises(DataError, match="neither a known name"):
        read_vectors(str(tmp_path / "missing.txt"), {"the"})
