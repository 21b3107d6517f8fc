"""Data: pinned corpora, preparation and splits, SentencePiece tokenizers, batching."""

from seq2seq.data.pipeline import Batches, classification_batch, pad, translation_batch
from seq2seq.data.prepare import normalize, prepare, read_split
from seq2seq.data.sources import SOURCES, DataError
from seq2seq.data.tokenizer import EOS, PAD, SOS, UNK, Tokenizer

__all__ = [
    "Batches",
    "DataError",
    "EOS",
    "PAD",
    "SOS",
    "SOURCES",
    "Tokenizer",
    "UNK",
    "classification_batch",
    "normalize",
    "pad",
    "prepare",
    "read_split",
    "translation_batch",
]
