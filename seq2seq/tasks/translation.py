"""Translation end to end: tokenizers, model, training, evaluation, export and translating."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from seq2seq.cluster import worker_info
from seq2seq.config import Config
from seq2seq.data import Batches, DataError, Tokenizer, pad, read_split, translation_batch
from seq2seq.data.prepare import manifest_hash, normalize, read_test_split
from seq2seq.decoding import beam_search, greedy_decode
from seq2seq.evaluation import translation_scores
from seq2seq.export import write_version
from seq2seq.files import one_training_per_run, write_atomic
from seq2seq.models import Translator
from seq2seq.training import Evaluation, make_strategy, mean_loss, restore_weights, train

MAX_SOURCE_TOKENS = 200  # longer inputs are cut (documented limit of the exported model too)


def languages(cfg: Config) -> tuple[str, str]:
    src, tgt = cfg.data.direction.split("-")
    return src, tgt


def tokenizers(cfg: Config, train_if_missing: bool = True) -> tuple[Tokenizer, Tokenizer]:
    """The run's (source, target) SentencePiece models, trained on the train split if absent."""
    run = cfg.run_dir
    paths = run / "source.spm", run / "target.spm"
    if all(p.exists() for p in paths):
        return Tokenizer.load(paths[0]), Tokenizer.load(paths[1])
    if not train_if_missing:
        raise FileNotFoundError(f"no tokenizers in {run}: train first (make train-translate)")
    rows = read_split(cfg, "train")
    print(f"training SentencePiece tokenizers on {len(rows)} pairs")
    src = Tokenizer.train([r[0] for r in rows], cfg.data.source_vocab_size)
    tgt = Tokenizer.train([r[1] for r in rows], cfg.data.target_vocab_size)
    run.mkdir(parents=True, exist_ok=True)
    src.save(paths[0])
    tgt.save(paths[1])
    return src, tgt


def encode_pairs(rows, src_tok: Tokenizer, tgt_tok: Tokenizer):
    src = src_tok.encode_batch([r[0] for r in rows])
    tgt = tgt_tok.encode_batch([r[1] for r in rows])
    return [(s[:MAX_SOURCE_TOKENS], t[:MAX_SOURCE_TOKENS]) for s, t in zip(src, tgt, strict=True)]


def build_model(cfg: Config, src_tok: Tokenizer, tgt_tok: Tokenizer) -> Translator:
    m = cfg.model
    model = Translator(
        src_tok.vocab_size,
        tgt_tok.vocab_size,
        embedding_dim=m.embedding_dim,
        units=m.units,
        layers=m.layers,
        attention=m.attention,
        reverse_source=m.reverse_source,
        dropout=m.dropout,
        recurrent_dropout=m.recurrent_dropout,
        bptt_truncation=m.bptt_truncation,
        attention_scale=m.attention_scale,
    )
    model((tf.ones([1, 2], tf.int32), tf.ones([1, 2], tf.int32)))  # create the weights
    return model


def make_batches(examples, cfg: Config, shuffle: bool, shard=(0, 1)) -> Batches:
    return Batches(
        examples,
        cfg.train.batch_size,
        lambda e: 1000 * len(e[0]) + len(e[1]),
        translation_batch,
        seed=cfg.train.seed,
        shuffle=shuffle,
        shard=shard,
    )


class Decoder:
    """Batched text → text translation with a Translator and its tokenizers."""

    def __init__(self, model: Translator, src_tok: Tokenizer, tgt_tok: Tokenizer):
        self.model, self.src_tok, self.tgt_tok = model, src_tok, tgt_tok
        ids = tf.TensorSpec([None, None], tf.int32)
        scalar = tf.TensorSpec([], tf.int32)
        self._greedy = tf.function(
            lambda s, n: greedy_decode(model, s, n), input_signature=[ids, scalar]
        )
        self._beam = tf.function(
            lambda s, k, n, a: beam_search(model, s, k, n, a),
            input_signature=[ids, scalar, scalar, tf.TensorSpec([], tf.float32)],
        )

    def translate(
        self,
        texts: list[str],
        beam_size: int = 1,
        max_length: int = 48,
        length_penalty: float = 0.6,
        batch_size: int = 64,
        n_best: int = 1,
        progress: bool = False,
    ) -> list[list[tuple[str, float]]]:
        """For each text, the n best (translation, score) pairs, best first.

        `beam_size` 1 decodes greedily; `n_best` may not exceed it. Out-of-range settings raise
        ValueError rather than being quietly replaced.
        """
        for name, value in (
            ("beam_size", beam_size),
            ("n_best", n_best),
            ("max_length", max_length),
            ("batch_size", batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {value!r}")
        if n_best > beam_size:
            raise ValueError(f"n_best ({n_best}) must not exceed beam_size ({beam_size})")
        if not length_penalty >= 0:
            raise ValueError(f"length_penalty must be ≥ 0, got {length_penalty!r}")
        out: list[list[tuple[str, float]]] = []
        order = np.argsort([len(t) for t in texts])  # similar lengths batch together
        results: dict[int, list[tuple[str, float]]] = {}
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        for chunk in tqdm(chunks, desc="translating", disable=not progress, unit=" batch"):
            src = pad(
                [self.src_tok.encode(normalize(texts[i]))[:MAX_SOURCE_TOKENS] or [1] for i in chunk]
            )
            if beam_size == 1:
                ids, _, scores = self._greedy(src, max_length)
                ids, scores = ids.numpy()[:, None], scores.numpy()[:, None]
            else:
                ids, _, scores = self._beam(src, beam_size, max_length, length_penalty)
                ids, scores = ids.numpy(), scores.numpy()
            for row, i in enumerate(chunk):
                results[int(i)] = [
                    (self.tgt_tok.decode(ids[row, j]), float(scores[row, j]))
                    for j in range(min(n_best, ids.shape[1]))
                ]
        out = [results[i] for i in range(len(texts))]
        return out


@one_training_per_run
def run_training(cfg: Config, progress: bool = True) -> dict:
    cfg.check_run_dir()
    strategy = make_strategy()
    src_tok, tgt_tok = tokenizers(cfg)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(cfg.run_dir / "config.json", cfg.to_json() + "\n")
    train_ex = encode_pairs(read_split(cfg, "train"), src_tok, tgt_tok)
    valid_rows = read_split(cfg, "valid")
    valid_ex = encode_pairs(valid_rows, src_tok, tgt_tok) if valid_rows else train_ex[:256]
    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        model = build_model(cfg, src_tok, tgt_tok)
    decoder = Decoder(model, src_tok, tgt_tok)
    valid_batches = make_batches(valid_ex, cfg, shuffle=False)
    # The corpus is sorted by length: sample the whole split, not its (very short) head, for a
    # BLEU that means something.
    probe_rows = valid_rows[:: max(1, len(valid_rows) // 300)][:300]

    def evaluate(model) -> Evaluation:
        loss = mean_loss(model, valid_batches)
        if not probe_rows:
            return Evaluation(loss)
        hyps = decoder.translate(
            [r[0] for r in probe_rows], beam_size=1, max_length=cfg.eval.max_length
        )
        bleu = translation_scores([h[0][0] for h in hyps], [[r[1]] for r in probe_rows])["bleu"]
        return Evaluation(loss, bleu, "bleu_greedy")

    print(
        f"training on {len(train_ex)} pairs, validating on {len(valid_ex)}"
        + ("" if valid_rows else " of them (there is no validation split)")
        + f"; "
        f"vocab {src_tok.vocab_size}/{tgt_tok.vocab_size}; "
        f"{sum(int(np.prod(v.shape)) for v in model.trainable_variables):,} weights"
    )
    shard = worker_info()
    summary = train(
        model,
        make_batches(train_ex, cfg, shuffle=True, shard=shard),
        cfg.train,
        cfg.run_dir,
        evaluate=evaluate,
        loss_kwargs={"label_smoothing": cfg.train.label_smoothing},
        strategy=strategy,
        progress=progress,
    )
    return summary


def load_trained(cfg: Config, which: str = "best") -> Decoder:
    cfg.check_run_dir(loading=True)
    src_tok, tgt_tok = tokenizers(cfg, train_if_missing=False)
    model = build_model(cfg, src_tok, tgt_tok)
    restore_weights(model, cfg.run_dir, which)
    return Decoder(model, src_tok, tgt_tok)


def read_eval_file(path: str) -> tuple[list[str], list[list[str]]]:
    """A TSV of `source<TAB>reference[<TAB>reference…]`."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"eval file not found: {path}")
    sources, refs = [], []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < 2:
            raise DataError(f"{path}:{lineno}: expected 'source<TAB>reference[<TAB>…]'")
        line_refs = [normalize(c) for c in cols[1:] if c.strip()]  # empty columns: none
        if not cols[0].strip() or not line_refs:
            raise DataError(f"{path}:{lineno}: an empty source or no reference")
        sources.append(normalize(cols[0]))
        refs.append(line_refs)
    if not sources:
        raise DataError(f"{path}: no sentences to evaluate (the file is empty)")
    return sources, refs


def run_evaluation(cfg: Config, decoders=("greedy", "beam")) -> dict:
    if cfg.eval.eval_file:
        sources, refs = read_eval_file(cfg.eval.eval_file)
        where = cfg.eval.eval_file
    else:
        rows = read_test_split(cfg)
        sources, refs, where = [r[0] for r in rows], [[r[1]] for r in rows], "test split"
    decoder = load_trained(cfg)
    results = {"evaluated_on": where, "direction": cfg.data.direction}
    for name in decoders:
        k = 1 if name == "greedy" else cfg.eval.beam_size
        start = time.time()
        hyps = decoder.translate(
            sources,
            beam_size=k,
            max_length=cfg.eval.max_length,
            length_penalty=cfg.eval.length_penalty,
            progress=True,
        )
        scores = translation_scores([h[0][0] for h in hyps], refs)
        scores["decode_seconds"] = round(time.time() - start, 1)
        scores["beam_size"] = k
        results[name] = scores
        print(
            f"{name:>6} (beam {k}): BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  "
            f"on {len(sources)} sentences of the {where}"
        )
    results["examples"] = [
        {"source": s, "reference": r[0], "hypothesis": h[0][0]}
        for s, r, h in list(zip(sources, refs, hyps, strict=True))[:10]
    ]
    write_atomic(cfg.run_dir / "eval.json", json.dumps(results, indent=2, ensure_ascii=False))
    return results


def run_export(cfg: Config, repository: str | Path = "models/translate") -> Path:
    decoder = load_trained(cfg)
    model = decoder.model
    ids = tf.TensorSpec([None, None], tf.int32, name="source_ids")
    scalar_i = tf.TensorSpec([], tf.int32)

    def greedy(source_ids, max_length):
        out, lengths, scores = greedy_decode(model, source_ids, max_length)
        return {"ids": out, "lengths": lengths, "scores": scores}

    def beam(source_ids, beam_size, max_length, length_penalty):
        out, lengths, scores = beam_search(model, source_ids, beam_size, max_length, length_penalty)
        return {"ids": out, "lengths": lengths, "scores": scores}

    eval_path = cfg.run_dir / "eval.json"
    scores = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    scores.pop("examples", None)
    src_lang, tgt_lang = languages(cfg)
    metadata = {
        "task": "translate",
        "source_language": src_lang,
        "target_language": tgt_lang,
        "source_vocab_size": decoder.src_tok.vocab_size,
        "target_vocab_size": decoder.tgt_tok.vocab_size,
        "special_ids": {"pad": 0, "unk": 1, "sos": 2, "eos": 3},
        "max_source_tokens": MAX_SOURCE_TOKENS,
        "default_max_length": cfg.eval.max_length,
        "default_length_penalty": cfg.eval.length_penalty,
        "config": cfg.to_dict(),
        "data_manifest_sha256": manifest_hash(cfg)
        if (cfg.data_dir / "manifest.json").exists()
        else None,
        "eval": scores,
        "signatures": {
            "translate_greedy": "(source_ids int32 [B,S], max_length int32) -> ids [B,L], "
            "lengths [B], scores [B]",
            "translate_beam": "(source_ids int32 [B,S], beam_size int32, max_length int32, "
            "length_penalty float32) -> ids [B,K,L], lengths [B,K], "
            "scores [B,K]",
        },
    }
    path = write_version(
        Path(repository),
        model,
        {
            "translate_greedy": (greedy, [ids, scalar_i]),
            "translate_beam": (beam, [ids, scalar_i, scalar_i, tf.TensorSpec([], tf.float32)]),
        },
        {"source.spm": decoder.src_tok.model_proto, "target.spm": decoder.tgt_tok.model_proto},
        metadata,
    )
    print(f"exported {path}")
    return path
