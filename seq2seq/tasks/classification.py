"""Classification end to end: tokenizer, labels, model, training, evaluation, baseline, export."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from seq2seq import calibration
from seq2seq import export_format as fmt
from seq2seq.cluster import worker_info
from seq2seq.config import Config
from seq2seq.data import Batches, DataError, Tokenizer, classification_batch, read_split
from seq2seq.data.preparation import manifest_hash, read_test_split
from seq2seq.evaluation import classification_scores
from seq2seq.export import write_version
from seq2seq.files import one_training_per_run, write_atomic
from seq2seq.inference import TextClassifier
from seq2seq.models import Classifier
from seq2seq.publish import Publisher
from seq2seq.training import Evaluation, make_strategy, mean_loss, restore_weights, train

MAX_TOKENS = fmt.MAX_INPUT_TOKENS["classify"]  # longer texts are cut
CALIBRATION_FILE = "calibration.json"  # in the run folder: the fitted temperature
DATASET_LANGUAGES = {"sentiment": "en", "sms_spam": "en"}  # what the server's check expects


def tokenizer_and_labels(cfg: Config, train_if_missing: bool = True) -> tuple[Tokenizer, list]:
    """The run's SentencePiece model and label names (sorted), made from the train split."""
    run = cfg.run_dir
    tok_path, labels_path = run / "tokenizer.spm", run / "labels.json"
    if tok_path.exists() and labels_path.exists():
        return Tokenizer.load(tok_path), json.loads(labels_path.read_text())
    if not train_if_missing:
        raise FileNotFoundError(f"no tokenizer in {run}: train first (make train-classify)")
    rows = read_split(cfg, "train")
    labels = sorted({r[0] for r in rows})
    print(f"training a SentencePiece tokenizer on {len(rows)} texts; labels {labels}")
    tok = Tokenizer.train([r[1] for r in rows], cfg.data.source_vocab_size)
    run.mkdir(parents=True, exist_ok=True)
    tok.save(tok_path)
    write_atomic(labels_path, json.dumps(labels))
    return tok, labels


def encode(rows, tok: Tokenizer, labels: list[str]):
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({r[0] for r in rows} - set(index))
    if unknown:
        raise DataError(f"labels {unknown} do not occur in the training data {labels}")
    ids = tok.encode_batch([r[1] for r in rows])
    return [(i[:MAX_TOKENS] or [fmt.UNK], index[r[0]]) for i, r in zip(ids, rows, strict=True)]


def build_model(cfg: Config, tok: Tokenizer, labels: list[str]) -> Classifier:
    m = cfg.model
    model = Classifier(
        tok.vocab_size,
        len(labels),
        embedding_dim=m.embedding_dim,
        units=m.units,
        layers=m.layers,
        bidirectional=m.bidirectional,
        dropout=m.dropout,
        recurrent_dropout=m.recurrent_dropout,
        bptt_truncation=m.bptt_truncation,
        activation=m.activation,
        recurrent_initializer=m.recurrent_initializer,
        adversarial=m.adversarial,
    )
    model(tf.ones([1, 2], tf.int32))
    return model


def make_batches(examples, cfg: Config, shuffle: bool, shard=(0, 1)) -> Batches:
    return Batches(
        examples,
        cfg.train.batch_size,
        lambda e: len(e[0]),
        classification_batch,
        seed=cfg.train.seed,
        shuffle=shuffle,
        shard=shard,
    )


def class_weight_vector(examples, num_classes: int) -> tf.Tensor:
    counts = np.bincount([e[1] for e in examples], minlength=num_classes).astype(np.float64)
    weights = counts.sum() / (num_classes * np.maximum(counts, 1))
    return tf.constant(weights, tf.float32)


def init_model(cfg: Config, tok: Tokenizer, labels: list[str], strategy) -> Classifier:
    """A fresh Classifier, seeded by `train.seed`."""
    keras.utils.set_random_seed(cfg.train.seed)
    with strategy.scope():
        return build_model(cfg, tok, labels)


@one_training_per_run
def run_training(
    cfg: Config,
    progress: bool = True,
    publish: str | Path | None = None,
    until_first_version: bool = False,
    stop=None,
) -> dict:
    """Trains on the train split, validating (early stopping, best weights) on the valid split.
    `publish`, `until_first_version`: as for translation (seq2seq.publish)."""
    cfg.check_run_dir()
    valid_rows = read_split(cfg, "valid")
    strategy = make_strategy()
    tok, labels = tokenizer_and_labels(cfg)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(cfg.run_dir / "config.json", cfg.to_json() + "\n")
    train_ex = encode(read_split(cfg, "train"), tok, labels)
    valid_ex = encode(valid_rows, tok, labels) if valid_rows else train_ex[:256]
    model = init_model(cfg, tok, labels, strategy)
    classifier = TextClassifier.from_model(model, tok, labels)
    valid_batches = make_batches(valid_ex, cfg, shuffle=False)

    def loss_kwargs(examples) -> dict:
        if cfg.train.class_weights:
            return {"class_weights": class_weight_vector(examples, len(labels))}
        return {}

    def evaluate(model) -> Evaluation:
        loss = mean_loss(model, valid_batches)
        rows = valid_rows or []
        if not rows:
            return Evaluation(loss)
        pred = classifier.probabilities([r[1] for r in rows]).argmax(1)
        truth = [labels.index(r[0]) for r in rows]
        return Evaluation(loss, 100.0 * float(np.mean(pred == np.array(truth))), "accuracy")

    print(
        f"training on {len(train_ex)} texts, validating on {len(valid_ex)}"
        + ("" if valid_rows else " of them (there is no validation split)")
        + f"; labels {labels}; "
        f"vocab {tok.vocab_size}; "
        f"{sum(int(np.prod(v.shape)) for v in model.trainable_variables):,} weights"
    )
    publisher = None
    if publish is not None:

        def export_live(training: dict) -> Path:
            # the temperature of the weights as they are now, fitted on the validation split
            t = 1.0
            if len(valid_rows) >= calibration.MIN_TEXTS:
                truth = np.array([labels.index(r[0]) for r in valid_rows])
                logits = classifier.logits([r[1] for r in valid_rows])
                t = calibration.fit_temperature(logits, truth)
            live = TextClassifier.from_model(model, tok, labels, t)
            return export_version(cfg, live, publish, {}, t, training)

        publisher = Publisher(
            publish, "classify", cfg.run_dir, cfg.train, "accuracy", export_live,
            until_first_version,
        )  # fmt: skip
        if publisher.has_final():
            print(f"{cfg.run_dir} is finished and its final version is in {publish}")
            return {"steps": publisher.status.get("step"), "stop_reason": "finished"}
    summary = train(
        model,
        make_batches(train_ex, cfg, shuffle=True, shard=worker_info()),
        cfg.train,
        cfg.run_dir,
        evaluate=evaluate,
        loss_kwargs=loss_kwargs(train_ex),
        strategy=strategy,
        progress=progress,
        publisher=publisher,
        stop=stop,
    )
    if summary["stop_reason"] == "stopped" or worker_info()[0] != 0:
        return summary  # unfinished (it resumes), or not the chief, which writes the run's files
    summary["calibration"] = calibrate(cfg)
    if publisher is not None:
        rnn = run_evaluation(cfg)["rnn"]
        test = {"accuracy": rnn["accuracy"], "macro_f1": rnn["macro_f1"]}
        path = publisher.final(
            lambda training: run_export(cfg, publish, training),
            summary["best_step"] or summary["steps"],
            summary["best_valid_loss"],
            test,
        )
        summary["final_version"] = int(path.name)
    return summary


def calibrate(cfg: Config) -> dict:
    """Fits the temperature of the trained (best) model on the validation split and writes it
    to the run's calibration.json; returns what it wrote. With fewer than
    `calibration.MIN_TEXTS` validation texts the temperature stays 1 (one number fitted on a
    handful of texts would swing to an extreme)."""
    rows = read_split(cfg, "valid")
    classifier = load_trained(cfg, temperature=1.0)
    if len(rows) < calibration.MIN_TEXTS:
        print(
            f"calibration: {len(rows)} validation texts are too few to fit a temperature "
            f"(fewer than {calibration.MIN_TEXTS}): the probabilities stay as trained"
        )
        result = {"temperature": 1.0, "fitted_on": None, "texts": len(rows)}
    else:
        truth = np.array([classifier.labels.index(r[0]) for r in rows])
        logits = classifier.logits([r[1] for r in rows])
        t = calibration.fit_temperature(logits, truth)
        result = {"fitted_on": "valid", **calibration.summary(logits, truth, t)}
        print(
            f"calibration: temperature {t:.3f} fitted on {len(rows)} validation texts "
            f"(NLL {result['nll_before']:.4f} → {result['nll_after']:.4f}, "
            f"ECE {result['ece_before']:.4f} → {result['ece_after']:.4f})"
        )
    write_atomic(cfg.run_dir / CALIBRATION_FILE, json.dumps(result, indent=2) + "\n")
    return result


def fitted_temperature(cfg: Config) -> float | None:
    """The run's fitted temperature; None when it has not been fitted (runs from before)."""
    path = cfg.run_dir / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        t = float(json.loads(path.read_text())["temperature"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{path} is damaged ({err}): delete it, and `make eval-classify` fits it again"
        ) from None
    if not t > 0:
        raise DataError(f"{path}: the temperature must be > 0, got {t}")
    return t


def load_trained(
    cfg: Config, which: str = "best", temperature: float | None = None
) -> TextClassifier:
    """The trained classifier: its best weights, or its latest checkpoint (`which="ckpt"`),
    with the run's fitted temperature (or `temperature`; 1 if none was fitted)."""
    cfg.check_run_dir(loading=True)
    tok, labels = tokenizer_and_labels(cfg, train_if_missing=False)
    model = build_model(cfg, tok, labels)
    restore_weights(model, cfg.run_dir, which)
    if temperature is None:
        temperature = fitted_temperature(cfg) or 1.0
    return TextClassifier.from_model(model, tok, labels, temperature)


def read_eval_file(path: str) -> list[tuple[str, str]]:
    """A TSV of `label<TAB>text`; a first line `label<TAB>text` (as in the prepared splits) is
    a header and skipped."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"eval file not found: {path}")
    rows = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t", 1)
        if len(cols) != 2:
            raise DataError(f"{path}:{lineno}: expected 'label<TAB>text'")
        if not rows and [c.strip().lower() for c in cols] == ["label", "text"]:
            continue  # header
        if not cols[0].strip() or not cols[1].strip():
            raise DataError(f"{path}:{lineno}: an empty label or text")
        rows.append((cols[0].strip(), fmt.normalize(cols[1])))
    if not rows:
        raise DataError(f"{path}: no examples to evaluate (the file is empty)")
    return rows


def baseline_scores(cfg: Config, rows, labels: list[str]) -> dict:
    """TF-IDF (word 1-2 grams) + logistic regression trained on what the RNN was trained on:
    the train split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train_rows = read_split(cfg, "train")
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x = vec.fit_transform([r[1] for r in train_rows])
    clf = LogisticRegression(
        max_iter=2000, C=4.0, class_weight="balanced" if cfg.train.class_weights else None
    )
    clf.fit(x, [labels.index(r[0]) for r in train_rows])
    pred = clf.predict(vec.transform([r[1] for r in rows]))
    return classification_scores([labels.index(r[0]) for r in rows], [int(p) for p in pred], labels)


def calibrated_temperature(cfg: Config) -> float:
    """The run's temperature, fitted now if the run was trained before calibration existed."""
    t = fitted_temperature(cfg)
    if t is None:
        print("this run has no fitted temperature (trained before calibration): fitting it now")
        t = calibrate(cfg)["temperature"]
    return t


def run_evaluation(cfg: Config) -> dict:
    if cfg.eval.eval_file:
        rows, where = read_eval_file(cfg.eval.eval_file), cfg.eval.eval_file
    else:
        rows, where = read_test_split(cfg), "test split"
    t = calibrated_temperature(cfg)
    classifier = load_trained(cfg, temperature=t)
    labels = classifier.labels
    unknown = sorted({r[0] for r in rows} - set(labels))
    if unknown:
        raise DataError(f"{where}: labels {unknown} are not among the model's {labels}")
    start = time.time()
    truth = np.array([labels.index(r[0]) for r in rows])
    texts = [r[1] for r in rows]
    # calibrated probabilities, bit for bit what the export returns, and the logits before
    probs, logits = classifier.run(texts, ("probabilities", "logits"))
    rnn = classification_scores(truth.tolist(), [int(i) for i in probs.argmax(1)], labels)
    rnn["seconds"] = round(time.time() - start, 1)
    rnn["calibration"] = calibration.summary(logits, truth, t)
    results = {
        "evaluated_on": where,
        "dataset": cfg.corpus,
        "trained_on": "train",
        "rnn": rnn,
    }
    try:
        results["baseline_tfidf_logreg"] = baseline_scores(cfg, rows, labels)
    except ImportError:
        results["baseline_tfidf_logreg"] = None  # scikit-learn is a dev-only dependency
    print(
        f"{'model':<22} {'accuracy':>9} {'macro-F1':>9}   on {len(rows)} texts of the {where} "
        "(both trained on the train split)"
    )
    for name, r in (
        ("SimpleRNN (ours)", rnn),
        ("TF-IDF + logreg", results["baseline_tfidf_logreg"]),
    ):
        if r:
            print(f"{name:<22} {100 * r['accuracy']:8.2f}% {r['macro_f1']:9.4f}")
    print(_per_class_table(rnn, labels))
    c = rnn["calibration"]
    print(
        f"calibration: temperature {t:.3f} (fitted on the validation split); on the {where}, "
        f"ECE ({c['ece_bins']} bins) {c['ece_before']:.4f} → {c['ece_after']:.4f}, "
        f"NLL {c['nll_before']:.4f} → {c['nll_after']:.4f}"
    )
    write_atomic(cfg.run_dir / "eval.json", json.dumps(results, indent=2))
    lines = (
        json.dumps(
            {"text": r[1], "label": labels[int(p.argmax())], "probabilities": p.tolist()},
            ensure_ascii=False,
        )
        for r, p in zip(rows, probs, strict=True)
    )
    write_atomic(cfg.run_dir / "predictions.jsonl", "".join(f"{x}\n" for x in lines))
    return results


def _per_class_table(scores: dict, labels: list[str]) -> str:
    """The RNN's per-class precision/recall/F1/support and its confusion matrix, as text."""
    w = max(5, *(len(name) for name in labels))  # the label column
    c = max(6, *(len(name) for name in labels))  # a confusion-matrix column
    lines = [
        "SimpleRNN (ours) per class:",
        f"  {'label':<{w}} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>9}",
    ]
    for name in labels:
        r = scores["per_class"][name]
        lines.append(
            f"  {name:<{w}} {r['precision']:9.4f} {r['recall']:9.4f} {r['f1']:9.4f} "
            f"{r['support']:9d}"
        )
    lines.append("confusion matrix (rows: true label, columns: predicted label):")
    lines.append(f"  {'':<{w}}" + "".join(f" {name:>{c}}" for name in labels))
    matrix = scores["confusion_matrix"]["rows_true_cols_predicted"]
    for name, row in zip(labels, matrix, strict=True):
        lines.append(f"  {name:<{w}}" + "".join(f" {n:>{c}d}" for n in row))
    return "\n".join(lines)


def run_export(
    cfg: Config, repository: str | Path = "models/classify", training: dict | None = None
) -> Path:
    """Exports the run's best weights, calibrated, with their test scores (eval.json) as the
    repository's next version; `training`: the live run's record of them (seq2seq.publish)."""
    t = calibrated_temperature(cfg)
    classifier = load_trained(cfg, temperature=t)
    eval_path = cfg.run_dir / "eval.json"
    scores = json.loads(eval_path.read_text()) if eval_path.exists() else {}
    return export_version(cfg, classifier, repository, scores, t, training)


def export_version(
    cfg: Config,
    classifier: TextClassifier,
    repository: str | Path,
    scores: dict,
    temperature: float,
    training: dict | None = None,
) -> Path:
    """`classifier`'s model as the repository's next version, with `scores` (test split) and
    `training` (the step and validation scores of a live run) in its metadata."""
    t = temperature
    extra = {"training": training} if training else {}
    language = cfg.data.language or (
        "" if cfg.data.data_file else DATASET_LANGUAGES.get(cfg.data.dataset, "")
    )
    metadata = fmt.classification_metadata(
        classifier.labels,
        classifier.tokenizer.vocab_size,
        dataset=cfg.corpus,
        source_language=language,
        config=cfg.to_dict(),
        data_manifest_sha256=manifest_hash(cfg)
        if (cfg.data_dir / "manifest.json").exists()
        else None,
        eval=scores,
        temperature=t,
        **extra,
    )
    path = write_version(
        Path(repository),
        classifier.model,
        classifier.model.serving_functions(t),
        {
            fmt.TOKENIZER_SPM: classifier.tokenizer.model_proto,
            fmt.LABELS_FILE: json.dumps(classifier.labels).encode(),
        },
        metadata,
    )
    print(f"exported {path}")
    return path
