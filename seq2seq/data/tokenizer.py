"""SentencePiece tokenizers with the project's fixed special ids (seq2seq.export_format)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from unicodedata import normalize

import sentencepiece as spm

from seq2seq.export_format import EOS, EOS_PIECE, PAD, SOS, UNK, output_ids
from seq2seq.files import write_atomic

__all__ = ["EOS", "PAD", "SOS", "UNK", "Tokenizer"]

REPLACEMENT = "\ufffd"  # what SentencePiece writes for bytes that are no UTF-8 character


class Tokenizer:
    """A trained SentencePiece model: text ↔ ids.

    Example:
        >>> tok = Tokenizer.train(["hola mundo", "adiós mundo"] * 50, vocab_size=20)
        >>> tok.decode(tok.encode("hola mundo"))
        'hola mundo'
    """

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        for name, want in (("pad", PAD), ("unk", UNK), ("bos", SOS), ("eos", EOS)):
            got = getattr(self.sp, f"{name}_id")()
            if got != want:
                raise ValueError(f"tokenizer {name} id is {got}, expected {want}")

    @classmethod
    def train(
        cls,
        sentences: Iterable[str],
        vocab_size: int,
        model_type: str = "unigram",
        byte_fallback: bool = False,
    ):
        """Trains on `sentences`.

        A vocabulary larger than the text supports is shrunk to fit; one smaller than the
        text's distinct characters (every one is kept) is raised to fit, with a note. With
        `byte_fallback`, a character the vocabulary lacks is spelled as its UTF-8 bytes (256
        byte pieces join the vocabulary) instead of becoming <unk>, so any text round-trips.
        """
        sentences = list(sentences)
        if not sentences:
            raise ValueError("cannot train a tokenizer on no sentences")
        chars = {c for s in sentences for c in normalize("NFKC", s) if not c.isspace()}
        needed = len(chars) + 5 + (256 if byte_fallback else 0)  # + specials, ▁, bytes
        if vocab_size < needed:
            print(
                f"tokenizer: vocabulary size {vocab_size} raised to {needed}: the text has "
                f"{len(chars)} distinct characters"
            )
            vocab_size = needed
        buf = io.BytesIO()
        kwargs = dict(
            sentence_iterator=iter(sentences),
            model_writer=buf,
            model_type=model_type,
            pad_id=PAD,
            unk_id=UNK,
            bos_id=SOS,
            eos_id=EOS,
            character_coverage=1.0,
            normalization_rule_name="nmt_nfkc",
            minloglevel=2,
            num_threads=2,
            hard_vocab_limit=False,
            split_digits=True,
            byte_fallback=byte_fallback,
        )
        spm.SentencePieceTrainer.train(vocab_size=vocab_size, **kwargs)
        return cls(buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        try:
            return cls(Path(path).read_bytes())
        except RuntimeError as err:  # sentencepiece's parse failure
            raise ValueError(
                f"{path} is not a SentencePiece model (damaged or overwritten?): {err}"
            ) from None

    def save(self, path: str | Path) -> None:
        write_atomic(path, self.model_proto)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        # SentencePiece's list encoding goes through a thread pool that costs ~60-80 µs per
        # call, where one short text encodes in ~2.5 µs: below a few hundred texts (every
        # served request and batch) one call per text is faster; above, the pool wins.
        if len(texts) < 128:
            return [self.sp.encode(t) for t in texts]
        return self.sp.encode(texts)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The pieces of `ids`, EOS shown as "<eos>" (alignments label their rows with them)."""
        return [EOS_PIECE if int(i) == EOS else self.sp.id_to_piece(int(i)) for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of decoded ids: up to the first EOS, special ids left out. With byte fallback a
        model may write bytes that are no UTF-8 character (half an emoji): SentencePiece turns
        each into U+FFFD; they are dropped, never shown."""
        text = self.sp.decode(output_ids(ids))
        return " ".join(text.replace(REPLACEMENT, "").split()) if REPLACEMENT in text else text
