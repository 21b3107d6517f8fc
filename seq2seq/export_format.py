"""The export format, defined once: what an exported version holds and how text goes in and out.

Imported by the export (`seq2seq.export`, the task modules), by loading (`seq2seq.inference`),
by training data preparation and by the server. No TensorFlow and no Keras here: the server and
the benchmark read these rules without importing the training code.

A version folder `models/<task>/<version>/` holds a SavedModel with the signatures named below
and `assets.extra/`: SentencePiece model(s), `labels.json` (classification) and
`metadata.json` (the keys `translation_metadata` / `classification_metadata` write).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

# --- tasks: one model repository folder each (models/<task>/<version>/), one Task in the proto ---
TASKS = ("translate", "classify")

# --- token ids: every SentencePiece model of the project is trained with these ---------------
PAD, UNK, SOS, EOS = 0, 1, 2, 3
SPECIAL_IDS = {"pad": PAD, "unk": UNK, "sos": SOS, "eos": EOS}

# --- inputs: the longest input a model reads (longer ones are cut) ---------------------------
MAX_INPUT_TOKENS = {"translate": 200, "classify": 256}

# --- files ------------------------------------------------------------------------------------
ASSETS = "assets.extra"
METADATA_FILE = "metadata.json"
# Beside the versions, written by a run training live into the repository (seq2seq.publish):
# its progress and exported versions, read by the server.
TRAINING_FILE = "training.json"
SOURCE_SPM, TARGET_SPM = "source.spm", "target.spm"  # translation
TOKENIZER_SPM, LABELS_FILE = "tokenizer.spm", "labels.json"  # classification

# --- SavedModel signatures and their outputs ---------------------------------------------------
GREEDY, BEAM, CLASSIFY = "translate_greedy", "translate_beam", "classify"
# with attention only: the same search, also returning the attention over the source pieces
GREEDY_ALIGNED, BEAM_ALIGNED = "translate_greedy_aligned", "translate_beam_aligned"
SIGNATURES = {
    GREEDY: "(source_ids int32 [B,S], max_length int32) -> ids [B,L], lengths [B], scores [B]",
    BEAM: "(source_ids int32 [B,S], beam_size int32, max_length int32, length_penalty float32) "
    "-> ids [B,K,L], lengths [B,K], scores [B,K]",
    GREEDY_ALIGNED: "as translate_greedy, and alignment float32 [B,L,S]: row t the attention "
    "over the source pieces (reading order) when token t was chosen",
    BEAM_ALIGNED: "as translate_beam, and alignment float32 [B,K,L,S]: each hypothesis's rows",
    CLASSIFY: "(token_ids int32 [B,T]) -> probabilities float32 [B,C] in the order of `labels` "
    "(calibrated: softmax of logits / temperature), logits float32 [B,C]",
}

# --- decoding defaults: config `eval.*` starts from these; an export records its own ----------
DEFAULT_BEAM_SIZE = 5
DEFAULT_MAX_LENGTH = 48
DEFAULT_LENGTH_PENALTY = 0.6


class TextError(ValueError):
    """A text that no model should be given (blank, or holding control characters)."""


def normalize(text: str) -> str:
    """Unicode NFC and single spaces; strips the ends. Training data and requests alike."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def check_text(text, where: str = "text") -> str:
    """`text` normalised, or TextError naming `where` when it is not usable plain text."""
    if not isinstance(text, str):
        raise TextError(f"{where} is not a string")
    if not text.strip():
        raise TextError(f"{where} is empty or only whitespace")
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cs") and c not in "\t\n\r":
            raise TextError(f"{where} contains control character U+{ord(c):04X}; send plain text")
    return normalize(text)


def pad(rows: Sequence[Sequence[int]], dtype=np.int32) -> np.ndarray:
    """Right-pads integer rows with PAD to the longest row: (len(rows), max(1, longest))."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), PAD, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def input_ids(rows: Sequence[Sequence[int]], limit: int) -> np.ndarray:
    """Token-id rows as a model reads them: cut to `limit` tokens, an empty row as one UNK,
    PAD-padded."""
    return pad([list(r[:limit]) or [UNK] for r in rows])


def output_ids(ids) -> list[int]:
    """A decoded row's text tokens: up to the first EOS, without special ids."""
    ids = [int(i) for i in ids]
    if EOS in ids:
        ids = ids[: ids.index(EOS)]
    return [i for i in ids if i > EOS]


def produced_ids(ids) -> list[int]:
    """A decoded row's tokens as produced, one per decoding step: up to and including the
    first EOS (the steps an alignment has rows for)."""
    ids = [int(i) for i in ids]
    return ids[: ids.index(EOS) + 1] if EOS in ids else [i for i in ids if i != PAD]


EOS_PIECE = "<eos>"  # how the EOS token is shown among the output pieces
BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # a byte-fallback piece


def pieces_text(pieces: Sequence[str]) -> str:
    """The text pieces spell: "▁" is a space, runs of byte pieces are decoded as UTF-8, and
    bytes that make no character (a cut-off sequence) are dropped."""
    data = bytearray()
    for p in pieces:
        byte = BYTE_PIECE.match(p)
        data += bytes([int(byte.group(1), 16)]) if byte else p.replace("\u2581", " ").encode()
    return data.decode("utf-8", errors="ignore")


def word_alignment(
    source_pieces: list[str], target_pieces: list[str], rows: list[list[float]]
) -> list[tuple[str, str]]:
    """(output word, the source word it attends to most) for each output word: pieces are
    merged into words (a SentencePiece word starts with "▁") by summing their weights."""

    def words(pieces):
        spans: list[list[int]] = []
        for i, p in enumerate(pieces):
            if p == EOS_PIECE:
                continue
            if p.startswith("\u2581") or not spans:
                spans.append([])
            spans[-1].append(i)
        return [pieces_text([pieces[i] for i in s]).strip() for s in spans], spans

    source_words, source_spans = words(source_pieces)
    target_words, target_spans = words(target_pieces)
    if not source_words:
        return []
    out = []
    for word, span in zip(target_words, target_spans, strict=True):
        mass = [sum(rows[t][s] for t in span for s in cols) for cols in source_spans]
        out.append((word, source_words[max(range(len(mass)), key=mass.__getitem__)]))
    return out


@dataclass(frozen=True)
class Decoding:
    """How to decode: beam width (1: greedy search), longest output, GNMT length penalty.

    Out-of-range settings raise ValueError rather than being quietly replaced.
    """

    beam_size: int = DEFAULT_BEAM_SIZE
    max_length: int = DEFAULT_MAX_LENGTH
    length_penalty: float = DEFAULT_LENGTH_PENALTY

    def __post_init__(self):
        for name in ("beam_size", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        alpha = self.length_penalty
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
            raise ValueError(f"length_penalty must be a number ≥ 0, got {alpha!r}")
        if not 0 <= alpha < float("inf"):
            raise ValueError(f"length_penalty must be a number ≥ 0, got {alpha!r}")
        object.__setattr__(self, "length_penalty", float(alpha))

    @property
    def greedy(self) -> bool:
        """Beam size 1 is greedy search (the `translate_greedy` signature)."""
        return self.beam_size == 1

    def canonical(self) -> Decoding:
        """The same search with what cannot change its results zeroed: greedy search has no
        length penalty. Equal canonical decodings give equal outputs (the server batches
        requests together by it)."""
        return replace(self, length_penalty=0.0) if self.greedy else self

    def override(self, beam_size=None, max_length=None, length_penalty=None) -> Decoding:
        """These settings with the given ones in their place (None: keep this one's)."""
        return Decoding(
            self.beam_size if beam_size is None else beam_size,
            self.max_length if max_length is None else max_length,
            self.length_penalty if length_penalty is None else length_penalty,
        )


# --- metadata.json ------------------------------------------------------------------------------


def translation_metadata(
    source_language: str,
    target_language: str,
    source_vocab_size: int,
    target_vocab_size: int,
    decoding: Decoding,
    alignment: bool,
    **extra,
) -> dict:
    """metadata.json of a translation export (`extra`: config, eval scores, data hash…);
    `alignment`: the model has attention, and the `_aligned` signatures."""
    names = (GREEDY, BEAM, GREEDY_ALIGNED, BEAM_ALIGNED) if alignment else (GREEDY, BEAM)
    return {
        "task": "translate",
        "source_language": source_language,
        "target_language": target_language,
        "source_vocab_size": source_vocab_size,
        "target_vocab_size": target_vocab_size,
        "special_ids": SPECIAL_IDS,
        "max_input_tokens": MAX_INPUT_TOKENS["translate"],
        "default_beam_size": decoding.beam_size,
        "default_max_length": decoding.max_length,
        "default_length_penalty": decoding.length_penalty,
        "alignment": alignment,
        "signatures": {k: SIGNATURES[k] for k in names},
        **extra,
    }


def classification_metadata(labels: list[str], vocab_size: int, **extra) -> dict:
    """metadata.json of a classification export."""
    return {
        "task": "classify",
        "labels": list(labels),
        "vocab_size": vocab_size,
        "special_ids": SPECIAL_IDS,
        "max_input_tokens": MAX_INPUT_TOKENS["classify"],
        "signatures": {CLASSIFY: SIGNATURES[CLASSIFY]},
        **extra,
    }


def max_input_tokens(metadata: dict) -> int:
    """The export's input limit (older exports named it max_source_tokens / max_tokens)."""
    for key in ("max_input_tokens", "max_source_tokens", "max_tokens"):
        if key in metadata:
            return int(metadata[key])
    return MAX_INPUT_TOKENS[metadata["task"]]


def default_decoding(metadata: dict) -> Decoding:
    """The decoding an export was evaluated with (older exports: the project defaults)."""
    return Decoding(
        int(metadata.get("default_beam_size", DEFAULT_BEAM_SIZE)),
        int(metadata.get("default_max_length", DEFAULT_MAX_LENGTH)),
        float(metadata.get("default_length_penalty", DEFAULT_LENGTH_PENALTY)),
    )


def describe(metadata: dict, version: int) -> dict:
    """What the server reports about an export (GetModelMetadata), from its metadata."""
    m = metadata
    scores = {}
    ev = m.get("eval") or {}
    for key in ("beam", "greedy"):
        if isinstance(ev.get(key), dict):
            scores.update(
                {
                    f"{key}_{k}": float(v)
                    for k, v in ev[key].items()
                    if k in ("bleu", "chrf", "names_kept") and v is not None
                }
            )
    if isinstance(ev.get("rnn"), dict):
        scores.update({k: float(ev["rnn"][k]) for k in ("accuracy", "macro_f1")})
        calibration = ev["rnn"].get("calibration")
        if isinstance(calibration, dict) and "ece_after" in calibration:
            scores["ece"] = float(calibration["ece_after"])
    decoding = default_decoding(m) if m["task"] == "translate" else None
    training = m.get("training") if isinstance(m.get("training"), dict) else {}
    return {
        "task": m["task"],
        "version": version,
        "source_language": m.get("source_language", ""),
        "target_language": m.get("target_language", ""),
        "labels": m.get("labels", []),
        "source_vocab_size": int(m.get("source_vocab_size", m.get("vocab_size", 0))),
        "target_vocab_size": int(m.get("target_vocab_size", 0)),
        "eval_scores": scores,
        "dataset": m.get("dataset") or m.get("config", {}).get("data", {}).get("dataset", ""),
        "default_beam_size": decoding.beam_size if decoding else 0,
        "default_max_length": decoding.max_length if decoding else 0,
        "default_length_penalty": decoding.length_penalty if decoding else 0.0,
        "trained_steps": int(training.get("step") or 0),
        "intermediate": training.get("final") is False,
    }


# --- a model repository: <repository>/<version>/ -------------------------------------------------


def versions(repository: Path) -> list[int]:
    """The complete numeric versions in a repository, oldest first.

    A version is a folder named by a number holding saved_model.pb and
    assets.extra/metadata.json; anything else (e.g. `.tmp-7`, still being written) is skipped.
    """
    repository = Path(repository)
    if not repository.is_dir():
        return []
    found = []
    for p in repository.iterdir():
        if (
            p.name.isdigit()
            and (p / "saved_model.pb").exists()
            and (p / ASSETS / METADATA_FILE).exists()
        ):
            found.append(int(p.name))
    return sorted(found)
