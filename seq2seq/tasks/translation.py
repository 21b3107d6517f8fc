"""Translation end to end: tokenizers, model, training, evaluation, export and translating."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seq2seq import confidence as conf
from seq2seq import export_format as fmt
from seq2seq.answers import ISO_639_1
from seq2seq.cluster import worker_info
from seq2seq.config import Config
from seq2seq.data import Batches, DataError, Tokenizer, read_split, translation_batch
from seq2seq.data.augment import augment_names
from seq2seq.data.preparation import manifest_hash, read_test_split
from seq2seq.evaluation import names_kept, sentence_chrf, translation_scores
from seq2seq.export import write_version
from seq2seq.files import one_training_per_run, write_atomic
from seq2seq.inference import TextTranslator
from seq2seq.language import guess
from seq2seq.models import Translator
from seq2seq.publish import Publisher
from seq2seq.training import Evaluation, make_strategy, mean_loss, restore_weights, train

MAX_TOKENS = fmt.MAX_INPUT_TOKENS["translate"]  # longer sources (and targets) are cut
CONFIDENCE_SAMPLE = 200  # validation sentences an intermediate version's confidence is fitted on


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
    if cfg.data.joint_vocab_size:
        print(f"training one SentencePiece tokenizer for both sides on {len(rows)} pairs")
        src = tgt = Tokenizer.train(
            [r[0] for r in rows] + [r[1] for r in rows],
            cfg.data.joint_vocab_size,
            byte_fallback=True,
        )
    else:
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
    return [(s[:MAX_TOKENS], t[:MAX_TOKENS]) for s, t in zip(src, tgt, strict=True)]


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
        copy=m.copy,
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


def default_decoding(cfg: Config) -> fmt.Decoding:
    """The run's decoding settings (`eval.*`): the defaults of `translate`, and of the export."""
    return fmt.Decoding(cfg.eval.beam_size, cfg.eval.max_length, cfg.eval.length_penalty)


@one_training_per_run
def run_training(
    cfg: Config,
    progress: bool = True,
    publish: str | Path | None = None,
    until_first_version: bool = False,
    stop=None,
) -> dict:
    """Trains (resuming the run's checkpoint). `publish`: a model repository that gets versions
    as the run improves and, at the end, the final one with its test scores (seq2seq.publish);
    `until_first_version`: stop, resumable, once a first version is there."""
    cfg.check_run_dir()
    strategy = make_strategy()
    src_tok, tgt_tok = tokenizers(cfg)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(cfg.run_dir / "config.json", cfg.to_json() + "\n")
    train_rows = read_split(cfg, "train")
    if cfg.train.name_augmentation:
        before = len(train_rows)
        train_rows = augment_names(train_rows, cfg.train.name_augmentation, cfg.train.seed)
        print(f"name augmentation: {len(train_rows) - before} pairs with made-up names added")
    train_ex = encode_pairs(train_rows, src_tok, tgt_tok)
    valid_rows = read_split(cfg, "valid")
    valid_ex = encode_pairs(valid_rows, src_tok, tgt_tok) if valid_rows else train_ex[:256]
    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        model = build_model(cfg, src_tok, tgt_tok)
    translator = TextTranslator.from_model(model, src_tok, tgt_tok, default_decoding(cfg))
    valid_batches = make_batches(valid_ex, cfg, shuffle=False)
    # The corpus is sorted by length: sample the whole split, not its (very short) head, for a
    # BLEU that means something.
    probe_rows = valid_rows[:: max(1, len(valid_rows) // 300)][:300]

    def evaluate(model) -> Evaluation:
        loss = mean_loss(model, valid_batches)
        if not probe_rows:
            return Evaluation(loss)
        hyps = translator.translate([r[0] for r in probe_rows], beam_size=1)
        bleu = translation_scores([h[0].text for h in hyps], [[r[1]] for r in probe_rows])["bleu"]
        return Evaluation(loss, bleu, "bleu_greedy")

    print(
        f"training on {len(train_ex)} pairs, validating on {len(valid_ex)}"
        + ("" if valid_rows else " of them (there is no validation split)")
        + f"; "
        f"vocab {src_tok.vocab_size}/{tgt_tok.vocab_size}; "
        f"{sum(int(np.prod(v.shape)) for v in model.trainable_variables):,} weights"
    )
    shard = worker_info()
    publisher = None
    if publish is not None:
        publisher = Publisher(
            publish,
            "translate",
            cfg.run_dir,
            cfg.train,
            "bleu_greedy",
            lambda training: export_version(cfg, translator, publish, {}, training),
            until_first_version,
        )
        if publisher.has_final():
            print(f"{cfg.run_dir} is finished and its final version is in {publish}")
            return {"steps": publisher.status.get("step"), "stop_reason": "finished"}
    summary = train(
        model,
        make_batches(train_ex, cfg, shuffle=True, shard=shard),
        cfg.train,
        cfg.run_dir,
        evaluate=evaluate,
        loss_kwargs={"label_smoothing": cfg.train.label_smoothing},
        strategy=strategy,
        progress=progress,
        publisher=publisher,
        stop=stop,
    )
    if publisher is not None and summary["stop_reason"] != "stopped" and worker_info()[0] == 0:
        scores = run_evaluation(cfg, progress=progress)
        test = {k: scores[k][m] for k in ("greedy", "beam") for m in ("bleu",)}
        test = {f"{k}_bleu": v for k, v in test.items()}
        test["beam_names_kept"] = scores["beam"]["names_kept"]
        path = publisher.final(
            lambda training: run_export(cfg, publish, training),
            summary["best_step"] or summary["steps"],
            summary["best_valid_loss"],
            test,
        )
        summary["final_version"] = int(path.name)
    return summary


def load_trained(cfg: Config, which: str = "best") -> TextTranslator:
    """The trained translator (its best weights, or its latest checkpoint: `which="ckpt"`)."""
    cfg.check_run_dir(loading=True)
    src_tok, tgt_tok = tokenizers(cfg, train_if_missing=False)
    model = build_model(cfg, src_tok, tgt_tok)
    restore_weights(model, cfg.run_dir, which)
    return TextTranslator.from_model(model, src_tok, tgt_tok, default_decoding(cfg))


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
        line_refs = [fmt.normalize(c) for c in cols[1:] if c.strip()]  # empty columns: none
        if not cols[0].strip() or not line_refs:
            raise DataError(f"{path}:{lineno}: an empty source or no reference")
        sources.append(fmt.normalize(cols[0]))
        refs.append(line_refs)
    if not sources:
        raise DataError(f"{path}: no sentences to evaluate (the file is empty)")
    return sources, refs


def confidence_rows(translator: TextTranslator, sources: list[str], refs: list[list[str]]):
    """Each sentence's confidence features and chrF, decoded as the server decodes (the
    model's default search, with alignment when it has attention), and the hypotheses."""
    decoding = translator.defaults
    hyps = [
        h[0]
        for h in translator.run(sources, decoding, alignment=translator.has_alignment, pieces=True)
    ]
    alpha = decoding.canonical().length_penalty
    rows = [
        conf.features(h.source_tokens, h.target_tokens, h.alignment, h.score, alpha) for h in hyps
    ]
    return rows, sentence_chrf([h.text for h in hyps], refs), hyps


def fit_confidence(
    cfg: Config, translator: TextTranslator, sample: int | None = None
) -> conf.ConfidenceModel | None:
    """The confidence model of `translator`, fitted on the validation split (`sample`: on
    that many of its sentences, spread over it); None without a validation split."""
    rows = read_split(cfg, "valid")
    if sample is not None:
        rows = rows[:: max(1, len(rows) // sample)][:sample]
    if len(rows) < 20:
        return None
    features, chrf, _ = confidence_rows(translator, [r[0] for r in rows], [[r[1]] for r in rows])
    return conf.fit(features, chrf, f"validation split ({len(rows)} sentences)")


def run_evaluation(cfg: Config, decoders=("greedy", "beam"), progress: bool = True) -> dict:
    if cfg.eval.eval_file:
        sources, refs = read_eval_file(cfg.eval.eval_file)
        where = cfg.eval.eval_file
    else:
        rows = read_test_split(cfg)
        sources, refs, where = [r[0] for r in rows], [[r[1]] for r in rows], "test split"
    translator = load_trained(cfg)
    results = {"evaluated_on": where, "direction": cfg.data.direction}
    predictions = {}
    for name in decoders:
        k = 1 if name == "greedy" else cfg.eval.beam_size
        start = time.time()
        hyps = [h[0] for h in translator.translate(sources, beam_size=k, progress=progress)]
        scores = translation_scores([h.text for h in hyps], refs)
        scores["decode_seconds"] = round(time.time() - start, 1)
        scores["beam_size"] = k
        names = names_kept(sources, refs, [h.text for h in hyps])
        scores["names_kept"], scores["names_test"] = names["kept"], names
        results[name] = scores
        predictions[name] = hyps
        kept = "–" if names["kept"] is None else f"{100 * names['kept']:.1f}%"
        print(
            f"{name:>6} (beam {k}): BLEU {scores['bleu']:.2f}  chrF {scores['chrf']:.2f}  "
            f"names kept {kept} ({names['tokens']} in {names['sentences']} sentences)  "
            f"on {len(sources)} sentences of the {where}"
        )
    results["examples"] = [
        {"source": s, "reference": r[0], "hypothesis": h.text}
        for s, r, h in list(zip(sources, refs, hyps, strict=True))[:10]
    ]
    source_language = ISO_639_1.get(languages(cfg)[0])
    if source_language:
        flagged = [s for s in sources if not guess(s, source_language).looks_expected]
        results["language_check"] = {
            "language": source_language,
            "sentences": len(sources),
            "flagged": len(flagged),
            "examples": flagged[:10],
        }
        print(
            f"language check: {len(flagged)} of {len(sources)} sentences flagged "
            f"not_source_language ({100 * len(flagged) / max(1, len(sources)):.2f}%)"
        )
    model = fit_confidence(cfg, translator)
    if model is not None:
        features, chrf, _ = confidence_rows(translator, sources, refs)
        report = conf.report(model, features, chrf)
        results["confidence"] = {"model": model.to_dict(), "test": report}
        print(
            f"confidence (P(chrF ≥ {conf.ACCEPTABLE_CHRF:.0f}), fitted on {model.fitted_on}): "
            f"AUROC {report['auroc']:.3f} (chrF ≥ {conf.ACCEPTABLE_CHRF:.0f} against < "
            f"{conf.POOR_CHRF:.0f}), ECE {report['ece']:.3f}; {100 * report['low_share']:.1f}% "
            f"flagged low_confidence, {100 * report['acceptable_share']:.1f}% acceptable"
        )
    write_atomic(cfg.run_dir / "eval.json", json.dumps(results, indent=2, ensure_ascii=False))
    for name, hyps in predictions.items():
        lines = (
            json.dumps({"source": s, "hypothesis": h.text, "score": h.score}, ensure_ascii=False)
            for s, h in zip(sources, hyps, strict=True)
        )
        write_atomic(cfg.run_dir / f"predictions-{name}.jsonl", "".join(f"{x}\n" for x in lines))
    return results


def run_export(
    cfg: Config, repository: str | Path = "models/translate", training: dict | None = None
) -> Path:
    """Exports the run's best weights with their test scores (eval.json) as the repository's
    next version; `training`: the live run's record of them (seq2seq.publish)."""
    translator = load_trained(cfg)
    eval_path = cfg.run_dir / "eval.json"
    scores = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    scores.pop("examples", None)
    return export_version(cfg, translator, repository, scores, training)


def export_version(
    cfg: Config,
    translator: TextTranslator,
    repository: str | Path,
    scores: dict,
    training: dict | None = None,
) -> Path:
    """`translator`'s model as the repository's next version, with `scores` (test split) and
    `training` (the step and validation scores of a live run) in its metadata."""
    extra = {"training": training} if training else {}
    scores = dict(scores)
    evaluated = scores.pop("confidence", None) or {}
    fitted = evaluated.get("model")
    if fitted is not None and "test" in evaluated:
        fitted = {**fitted, "test": evaluated["test"]}
    if fitted is None:  # a live run's intermediate version: fitted on part of the split
        model = fit_confidence(cfg, translator, CONFIDENCE_SAMPLE)
        fitted = model.to_dict() if model is not None else None
    if fitted is not None:
        extra["confidence"] = fitted
    src_lang, tgt_lang = languages(cfg)
    metadata = fmt.translation_metadata(
        src_lang,
        tgt_lang,
        translator.source.vocab_size,
        translator.target.vocab_size,
        translator.defaults,
        translator.has_alignment,
        config=cfg.to_dict(),
        data_manifest_sha256=manifest_hash(cfg)
        if (cfg.data_dir / "manifest.json").exists()
        else None,
        eval=scores,
        **extra,
    )
    path = write_version(
        Path(repository),
        translator.model,
        translator.model.serving_functions(),
        {
            fmt.SOURCE_SPM: translator.source.model_proto,
            fmt.TARGET_SPM: translator.target.model_proto,
        },
        metadata,
    )
    print(f"exported {path}")
    return path
