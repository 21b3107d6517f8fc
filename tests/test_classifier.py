"""Classifier: the many-to-one head, training on a toy rule, export with labels, bad data."""

import copy
import io
import json
import shutil
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from fresh import run_blocked

from seq2seq.config import ConfigError, load_config
from seq2seq.data import DataError, prepare, read_split
from seq2seq.models import Classifier
from seq2seq.tasks import classification
from seq2seq.training import weights_digest

WORDS = ["red", "blue", "green", "cat", "dog", "tree", "house", "river", "stone", "cloud"]
TOY_LABELS = ["no", "yes", "maybe"]


def toy_rows(n=120, seed=0):
    """Three labels: 'yes' iff the text contains 'cat', 'maybe' iff it contains 'dog'."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = list(rng.choice(WORDS[:3] + WORDS[5:], size=rng.integers(2, 7)))
        label = TOY_LABELS[i % 3]
        if label == "yes":
            words.insert(int(rng.integers(0, len(words) + 1)), "cat")
        elif label == "maybe":
            words.insert(int(rng.integers(0, len(words) + 1)), "dog")
        rows.append((label, " ".join(words) + f" {i}"))
    return rows


def toy_rule(text):
    """The label `toy_rows` gives a text."""
    words = text.split()
    return "yes" if "cat" in words else "maybe" if "dog" in words else "no"


def make_cfg(root, rows, *extra):
    data = root / "toy.tsv"
    data.write_text("".join(f"{label}\t{text}\n" for label, text in rows))
    return load_config(
        "classify",
        "tiny",
        overrides=[
            f"data.dir={root / 'prepared'}",
            f"train.run_dir={root / 'runs'}",
            f"data.data_file={data}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    cfg = make_cfg(root, toy_rows(), "train.max_steps=300", "model.bidirectional=true")
    prepare(cfg)
    summary = classification.run_training(cfg, progress=False)
    return cfg, summary, classification.load_trained(cfg)


@pytest.mark.parametrize("kind", ["tanh", "irnn"])
def test_many_to_one_head_reads_the_last_real_step(kind):
    irnn = dict(activation="relu", recurrent_initializer="identity") if kind == "irnn" else {}
    model = Classifier(20, 3, embedding_dim=8, units=8, layers=2, bidirectional=True, **irnn)
    ids = tf.constant([[4, 5, 6, 7], [8, 9, 0, 0]], tf.int32)
    padded = tf.pad(ids, [[0, 0], [0, 5]])
    np.testing.assert_allclose(model(padded), model(ids), atol=1e-6)
    # the second row alone, unpadded, gives the same logits as in the padded batch
    np.testing.assert_allclose(model(ids[1:, :2])[0], model(ids)[1], atol=1e-6)
    # and the last real token matters
    changed = tf.constant([[4, 5, 6, 7], [8, 10, 0, 0]], tf.int32)
    assert not np.allclose(model(changed)[1], model(ids)[1])


def test_tiny_model_learns_a_toy_rule_to_full_training_accuracy(trained):
    cfg, summary, _ = trained
    predictor = classification.load_trained(cfg, "ckpt")  # the final weights, not the best
    rows = read_split(cfg, "train")
    predicted = [label for label, _ in predictor.classify([text for _, text in rows])]
    assert predicted == [label for label, _ in rows]
    assert predictor.labels == ["maybe", "no", "yes"]


def test_evaluation_reports_metrics_and_baseline(trained, capsys):
    cfg, _, _ = trained
    capsys.readouterr()
    results = classification.run_evaluation(cfg)
    rnn = results["rnn"]
    printed = capsys.readouterr().out.splitlines()
    labels = rnn["confusion_matrix"]["labels"]
    at = printed.index("SimpleRNN (ours) per class:")
    for i, name in enumerate(labels):  # per-class precision/recall/F1/support, as in the JSON
        r = rnn["per_class"][name]
        want = [name, *(f"{r[k]:.4f}" for k in ("precision", "recall", "f1")), str(r["support"])]
        assert printed[at + 2 + i].split() == want
        row = rnn["confusion_matrix"]["rows_true_cols_predicted"][i]
        assert printed[at + 4 + len(labels) + i].split() == [name, *map(str, row)]
    assert set(rnn) >= {"accuracy", "macro_f1", "per_class", "confusion_matrix"}
    matrix = np.array(rnn["confusion_matrix"]["rows_true_cols_predicted"])
    assert matrix.sum() == len(read_split(cfg, "test"))
    assert rnn["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-4)
    assert results["baseline_tfidf_logreg"]["accuracy"] > 0.5


FRESH = textwrap.dedent(
    """
    import json
    import sentencepiece as spm
    import tensorflow as tf

    path, texts = sys.argv[1], json.loads(sys.argv[2])
    model = tf.saved_model.load(path)
    sp = spm.SentencePieceProcessor(model_file=path + "/assets.extra/tokenizer.spm")
    ids = sp.encode(texts)
    width = max(map(len, ids))
    batch = tf.constant([row + [0] * (width - len(row)) for row in ids], tf.int32)
    probs = model.classify(batch)["probabilities"].numpy()
    labels = json.load(open(path + "/assets.extra/labels.json"))
    meta = json.load(open(path + "/assets.extra/metadata.json"))
    assert "seq2seq" not in sys.modules
    print(json.dumps({"probs": probs.tolist(), "labels": labels, "meta_labels": meta["labels"]}))
    """
)


def test_export_keeps_labels_and_probabilities_in_a_fresh_process(trained, tmp_path):
    cfg, _, predictor = trained
    path = classification.run_export(cfg, tmp_path / "models" / "classify")
    texts = ["red cat tree", "dog river", "blue stone cloud green"]
    proc = run_blocked(FRESH, str(path), json.dumps(texts))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["labels"] == out["meta_labels"] == ["maybe", "no", "yes"]
    np.testing.assert_allclose(out["probs"], predictor.probabilities(texts), atol=1e-5)


def test_export_cli_errors_and_classify_from_the_export(trained, tmp_path, capsys, monkeypatch):
    from seq2seq.__main__ import main

    cfg, _, predictor = trained
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    sets = [f"data.dir={cfg.data.dir}", f"train.run_dir={cfg.train.run_dir}"]
    sets += [f"data.data_file={cfg.data.data_file}", "model.bidirectional=true"]
    argv = ["export", "--task", "classify", "--preset", "tiny"]
    argv += [a for s in sets for a in ("--set", s)]
    assert main([*argv, "--repository", str(blocker / "models")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Not a directory" in err
    assert blocker.read_text() == "not a folder"
    assert main([*argv, "--repository", str(tmp_path / "models")]) == 0
    assert (tmp_path / "models" / "1" / "saved_model.pb").is_file()
    capsys.readouterr()
    # `python -m seq2seq classify --model` answers from the export, as the server does: the
    # same labels as the trained model in process (what a briefly trained model says of unseen
    # texts differs between hosts' numerics, so the two paths are compared, not a guess)
    texts = ["red cat tree 7", "dog river 8", "blue stone green 9"]  # shaped like the data
    assert main(["classify", "--model", str(tmp_path / "models" / "1"), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = predictor.classify(texts)
    assert [line.split("\t")[0] for line in lines] == [label for label, _ in expected]
    for line, (_, probs) in zip(lines, expected, strict=True):  # probabilities, 3 decimals
        shown = dict(pair.split("=") for pair in line.split("\t")[1].split())
        assert shown.keys() == probs.keys()
        assert all(abs(float(shown[k]) - p) <= 0.0005 + 1e-6 for k, p in probs.items()), line
    assert main(["classify", "--model", str(tmp_path / "models"), "red"]) == 2
    assert "not an exported model" in capsys.readouterr().err
    # a blank text is refused, as the server refuses it, not classified
    assert main(["classify", "--model", str(tmp_path / "models" / "1"), "red", " "]) == 2
    assert capsys.readouterr().err == "error: text 2 is empty or only whitespace\n"

    def stdin(data: bytes):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))

    stdin(b"\n   \n")
    assert main(["classify", "--model", str(tmp_path / "models" / "1")]) == 2
    assert capsys.readouterr().err.startswith("error: no texts given")
    stdin(b"red cat tree 7\r\n\r\nblue stone green 9\n")  # blank lines skipped, CRLF too
    assert main(["classify", "--model", str(tmp_path / "models" / "1")]) == 0
    got = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert got == [expected[0][0], expected[2][0]]
    stdin(b"red cat tree\n\xff\xfe stone\n")  # not UTF-8: refused, not classified
    assert main(["classify", "--model", str(tmp_path / "models" / "1")]) == 2
    assert capsys.readouterr().err == "error: standard input line 2 is not valid UTF-8\n"


def test_exports_beside_each_other_never_touch_one_another(trained, tmp_path, monkeypatch):
    import seq2seq.export

    cfg, _, _ = trained
    repo = tmp_path / "models"
    # another export is still writing, in a hidden folder of its own
    busy = repo / ".tmp-1"
    busy.mkdir(parents=True)
    (busy / "saved_model.pb").write_bytes(b"half written")
    # ... and publishes version 1 between this export's choice of number and its rename
    original = seq2seq.export.next_version

    def racing(repository):
        number = original(repository)
        if number == 1:
            (repository / "1").mkdir()
            (repository / "1" / "theirs").write_text("published by the other export")
        return number

    monkeypatch.setattr(seq2seq.export, "next_version", racing)
    path = classification.run_export(cfg, repo)
    assert path == repo / "2"
    meta = json.loads((path / "assets.extra" / "metadata.json").read_text())
    assert meta["version"] == 2 and (path / "saved_model.pb").is_file()
    assert (repo / "1" / "theirs").read_text() == "published by the other export"
    assert (busy / "saved_model.pb").read_bytes() == b"half written"
    assert sorted(p.name for p in repo.iterdir()) == [".tmp-1", "1", "2"]  # nothing left over
    assert classification.run_export(cfg, repo) == repo / "3"


def test_a_run_is_loaded_only_with_the_model_settings_it_was_trained_with(trained):
    cfg, _, predictor = trained
    other = copy.deepcopy(cfg)
    other.model.units = cfg.model.units * 2
    with pytest.raises(ConfigError, match=rf"model.units {cfg.model.units} → {other.model.units}"):
        classification.load_trained(other)
    with pytest.raises(ConfigError, match="train.run_name=<new name>"):
        classification.run_training(other, progress=False)  # nothing is trained over the run
    # settings that act only in training may differ when loading, not when training on
    other = copy.deepcopy(cfg)
    other.model.adversarial = 0.3
    texts = ["red cat", "dog stone"]
    np.testing.assert_allclose(
        classification.load_trained(other).probabilities(texts), predictor.probabilities(texts)
    )
    with pytest.raises(ConfigError, match=r"model.adversarial 0.0 → 0.3"):
        classification.run_training(other, progress=False)


def test_damaged_run_files_are_named_not_tracebacks(trained, tmp_path):
    cfg, _, predictor = trained
    copy_cfg = copy.deepcopy(cfg)
    copy_cfg.train.run_dir = str(tmp_path)
    shutil.copytree(cfg.run_dir, copy_cfg.run_dir)
    texts = ["red cat", "dog stone"]
    np.testing.assert_allclose(
        classification.load_trained(copy_cfg).probabilities(texts), predictor.probabilities(texts)
    )
    run = copy_cfg.run_dir
    (best,) = (run / "best").glob("*.data-*")
    best.write_bytes(best.read_bytes()[:100])  # a truncated write
    with pytest.raises(ValueError, match=r"checkpoint .*best/ckpt-\d+ cannot be read.*remove"):
        classification.load_trained(copy_cfg)
    latest = sorted((run / "ckpt").glob("*.index"))[-1]
    latest.write_bytes(b"not a checkpoint index")
    with pytest.raises(ValueError, match=rf"cannot be read.*remove {run / 'ckpt'} to train"):
        classification.run_training(copy_cfg, progress=False)
    (run / "tokenizer.spm").write_text("garbage")
    with pytest.raises(ValueError, match="tokenizer.spm is not a SentencePiece model"):
        classification.load_trained(copy_cfg)


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "not found"),
        ("", "empty"),
        ("no tab on this line\n", "label<TAB>text"),
        ("pos\tonly one class here\npos\tanother\n", "two classes"),
    ],
)
def test_bad_classification_files_fail_clearly(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    if content is not None:
        path.write_text(content)
    cfg = load_config(
        "classify",
        "tiny",
        overrides=[f"data.dir={tmp_path / 'prepared'}", f"data.data_file={path}"],
    )
    with pytest.raises(DataError, match=match):
        prepare(cfg)
    assert not (tmp_path / "prepared").exists() or not list((tmp_path / "prepared").rglob("*.tsv"))


def test_stratified_split_keeps_class_proportions(tmp_path):
    rows = [("a", f"text {i}") for i in range(90)] + [("b", f"other {i}") for i in range(10)]
    cfg = make_cfg(tmp_path, rows, "data.valid_fraction=0.2", "data.test_fraction=0.2")
    manifest = prepare(cfg)
    test = read_split(cfg, "test")
    assert sorted(label for label, _ in test).count("b") == 2
    assert sorted(label for label, _ in test).count("a") == 18
    assert manifest["counts"]["train"] == 60


def test_duplicate_and_conflicting_texts_are_dropped(tmp_path):
    rows = (
        [("a", "same text"), ("a", "same  text"), ("b", "clash"), ("a", "clash")]
        + [("a", f"x {i}") for i in range(10)]
        + [("b", f"y {i}") for i in range(10)]
    )
    cfg = make_cfg(tmp_path, rows, "data.valid_fraction=0", "data.test_fraction=0")
    counts = prepare(cfg)["counts"]
    assert counts["dropped_duplicate"] == 2 and counts["dropped_conflicting"] == 1
    texts = [t for _, t in read_split(cfg, "train")]
    assert texts.count("same text") == 1 and "clash" not in texts


def test_irnn_option_starts_from_the_identity_and_round_trips():
    model = Classifier(20, 2, 8, 6, activation="relu", recurrent_initializer="identity")
    ids = tf.constant([[5, 6, 7, 0], [9, 4, 8, 3]])
    model(ids)
    cell = model.forward_layers[0].cell
    np.testing.assert_array_equal(cell.recurrent_kernel.numpy(), np.eye(6, dtype=np.float32))
    assert cell.activation == "relu"
    # Relu states are never negative: the head reads an unsaturated, non-negative state.
    h = model.forward_layers[0](model.embedding(ids))
    assert float(tf.reduce_min(h)) >= 0.0 and float(tf.reduce_max(h)) > 0.0
    clone = Classifier.from_config(model.get_config())
    clone(ids)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(ids).numpy(), model(ids).numpy(), atol=1e-6)
    assert clone.forward_layers[0].cell.activation == "relu"
    with pytest.raises(ValueError, match="recurrent_initializer"):
        Classifier(20, 2, recurrent_initializer="zeros")
    with pytest.raises(ConfigError, match="model.activation"):
        load_config("classify", "tiny", overrides=["model.activation=softsign"])
    with pytest.raises(ConfigError, match="model.recurrent_initializer"):
        load_config("classify", "tiny", overrides=["model.recurrent_initializer=eye"])


def test_preset_settings_per_dataset_sit_under_the_file_and_overrides(tmp_path):
    def model(*overrides, config_file=None):
        m = load_config("classify", "default", config_file, list(overrides)).model
        return m.activation, m.recurrent_initializer, m.units

    assert model() == ("relu", "identity", 128)  # sentiment is the preset's dataset
    assert model("data.dataset=sentiment") == ("relu", "identity", 128)
    assert model("data.dataset=sms_spam") == ("tanh", "orthogonal", 128)
    assert model("model.activation=tanh") == ("tanh", "identity", 128)
    own = tmp_path / "own.yaml"
    own.write_text("data:\n  dataset: sms_spam\nmodel:\n  units: 64\n")
    assert model(config_file=str(own)) == ("tanh", "orthogonal", 64)
    assert model("data.dataset=sentiment", config_file=str(own)) == ("relu", "identity", 64)


def test_weight_decay_shrinks_weights_apart_from_the_gradient():
    from seq2seq.training import make_optimizer

    cfg = load_config("classify", "default").train
    assert cfg.weight_decay == 0.1  # the sentiment preset's setting
    sms = load_config("classify", "default", None, ["data.dataset=sms_spam"])
    assert sms.train.weight_decay == 0
    sentiment = load_config("classify", "default").model
    assert (sentiment.adversarial, sentiment.dropout) == (0.2, 0.3)
    assert (sms.model.adversarial, sms.model.dropout) == (0.0, 0.5)
    cfg.warmup_steps, cfg.learning_rate = 0, 0.01
    w = tf.Variable([2.0, -4.0])
    opt = make_optimizer(cfg)
    opt.apply([tf.zeros(2)], [w])  # no gradient: only the decay moves the weights
    np.testing.assert_allclose(w.numpy(), np.array([2.0, -4.0]) * (1 - 0.01 * 0.1), rtol=1e-6)
    cfg.weight_decay = 0.0
    w2 = tf.Variable([2.0, -4.0])
    make_optimizer(cfg).apply([tf.zeros(2)], [w2])
    np.testing.assert_array_equal(w2.numpy(), [2.0, -4.0])  # plain Adam
    with pytest.raises(ConfigError, match="train.weight_decay"):
        load_config("classify", "tiny", overrides=["train.weight_decay=-1"])


def test_eval_file_may_carry_the_prepared_splits_header(tmp_path):
    path = tmp_path / "eval.tsv"
    path.write_text("label\ttext\npos\tA fine film.\nneg\tDull.\n")
    assert classification.read_eval_file(str(path)) == [("pos", "A fine film."), ("neg", "Dull.")]
    for content, match in (
        ("pos\tA fine film.\nneg\t  \n", "eval.tsv:2: an empty label or text"),
        ("\tA fine film.\n", "eval.tsv:1: an empty label or text"),
        ("pos A fine film.\n", "eval.tsv:1: expected 'label<TAB>text'"),
    ):
        path.write_text(content)
        with pytest.raises(DataError, match=match):
            classification.read_eval_file(str(path))


def test_an_empty_test_split_is_refused_with_what_to_do(tmp_path, capsys):
    from seq2seq.__main__ import main

    cfg = make_cfg(tmp_path, toy_rows(30), "data.test_fraction=0")
    prepare(cfg)
    assert (cfg.data_dir / "test.tsv").read_text() == "label\ttext\n"
    with pytest.raises(
        DataError, match=r"test.tsv holds no examples \(prepared with data.test_fraction 0\)"
    ):
        classification.run_evaluation(cfg)
    argv = ["evaluate", "--task", "classify", "--preset", "tiny"]
    for s in (f"data.dir={cfg.data.dir}", f"train.run_dir={cfg.train.run_dir}"):
        argv += ["--set", s]
    argv += ["--set", f"data.data_file={cfg.data.data_file}", "--set", "data.test_fraction=0"]
    assert main(argv) == 2
    assert "evaluate on a file instead (EVAL_FILE=, or --eval-file)" in capsys.readouterr().err


def test_a_run_folder_made_with_other_settings_is_not_continued(trained):
    cfg, _, _ = trained
    root = cfg.run_dir.parents[2]
    changed = make_cfg(root, toy_rows(), "train.max_steps=300", "model.units=24")
    assert changed.run_dir == cfg.run_dir
    before = sorted(p.name for p in cfg.run_dir.rglob("*"))
    with pytest.raises(ConfigError, match=r"model\.units \d+ → 24.*train\.run_name"):
        classification.run_training(changed, progress=False)
    assert sorted(p.name for p in cfg.run_dir.rglob("*")) == before  # nothing touched


def test_adversarial_perturbation_is_the_costliest_shift_of_its_size():
    tf.random.set_seed(0)
    eps = 0.3
    model = Classifier(30, 3, 8, 12, bidirectional=True, adversarial=eps)
    ids = tf.constant([[5, 6, 7, 8, 0, 0], [9, 4, 0, 0, 0, 0], [4, 5, 6, 7, 8, 9]])
    labels = tf.constant([0, 1, 2])
    model(ids)
    e = model.embedding(ids)
    r, ce = model.adversarial_perturbation(ids, labels, e, training=False)
    real = (ids.numpy() != 0)[:, :, None]
    r, e_np = r.numpy(), e.numpy()
    assert np.all(r[~real.repeat(8, 2)] == 0)  # padding is not moved
    size = np.sqrt(((e_np * real) ** 2).sum(axis=(1, 2)))
    np.testing.assert_allclose(np.sqrt((r**2).sum(axis=(1, 2))), eps * size, rtol=1e-5)

    def loss(x):
        logits = model._logits(ids, False, tf.constant(x))
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits).numpy()

    np.testing.assert_allclose(loss(e_np), ce.numpy(), rtol=1e-6)
    attacked = loss(e_np + r)
    assert np.all(attacked > ce.numpy())
    # No random shift of the same size per example hurts as much.
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.normal(size=r.shape).astype(np.float32) * real
        d *= (eps * size / np.sqrt((d**2).sum(axis=(1, 2))))[:, None, None]
        assert np.all(loss(e_np + d) < attacked)
    # Training adds the attacked loss; evaluation does not.
    plain = Classifier(30, 3, 8, 12, bidirectional=True)
    plain(ids)
    plain.set_weights(model.get_weights())
    eval_sum = float(model.compute_loss_sums((ids, labels))[0])
    np.testing.assert_allclose(eval_sum, float(plain.compute_loss_sums((ids, labels))[0]))
    train_sum = float(model.compute_loss_sums((ids, labels), training=True)[0])
    np.testing.assert_allclose(train_sum, ce.numpy().sum() + attacked.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="adversarial"):
        Classifier(20, 3, adversarial=-0.1)
    with pytest.raises(ConfigError, match="model.adversarial"):
        load_config("classify", "tiny", overrides=["model.adversarial=-0.1"])


def test_label_smoothing_is_refused_for_classification_and_range_checked():
    # Label smoothing is not implemented for the classifier: asking for it is an error, not a
    # setting that is silently ignored.
    with pytest.raises(ConfigError, match="label_smoothing applies to translation only"):
        load_config("classify", "tiny", overrides=["train.label_smoothing=0.1"])
    cfg = load_config("translate", "tiny", overrides=["train.label_smoothing=0.1"])
    assert cfg.train.label_smoothing == 0.1
    with pytest.raises(ConfigError, match=r"train.label_smoothing must be in \[0, 1\)"):
        load_config("translate", "tiny", overrides=["train.label_smoothing=1.0"])


def test_adversarial_training_learns_the_toy_rule(tmp_path):
    cfg = make_cfg(tmp_path, toy_rows(), "train.max_steps=300", "model.adversarial=0.1")
    prepare(cfg)
    summary = classification.run_training(cfg, progress=False)
    assert summary["steps"] == 300
    predictor = classification.load_trained(cfg, "ckpt")
    rows = read_split(cfg, "train")
    predicted = [label for label, _ in predictor.classify([text for _, text in rows])]
    assert predicted == [label for label, _ in rows]


def test_early_stopping_keeps_the_best_weights_and_a_stopped_run_stays_stopped(tmp_path, capsys):
    # The run must stop early, whatever path its training takes on this CPU: one validation
    # row in 8 is relabelled against the rule, so once the model has learned the rule (every
    # other row right), growing confidence only raises the validation loss on those rows and
    # early stopping follows. Its best step therefore lies where the rule is learned.
    rows = toy_rows(480)
    assert all(toy_rule(text) == label for label, text in rows)
    cfg = make_cfg(
        tmp_path,
        rows,
        "model.bidirectional=true",
        "train.learning_rate=0.003",
        "train.batch_size=32",
        "train.max_steps=1000",
        "train.eval_every=50",
        "train.patience=3",
    )
    prepare(cfg)
    valid_file = cfg.data_dir / "valid.tsv"
    header, *lines = valid_file.read_text().splitlines()
    relabelled = []
    for i, line in enumerate(lines):
        label, text = line.split("\t", 1)
        if i % 8 == 0:
            label = TOY_LABELS[(TOY_LABELS.index(label) + 1) % 3]
        relabelled.append(f"{label}\t{text}")
    valid_file.write_text("\n".join([header, *relabelled]) + "\n")

    summary = classification.run_training(cfg, progress=False)
    assert summary["stop_reason"] == "early_stopping"
    assert summary["best_step"] % 50 == 0 and summary["best_step"] < summary["steps"] < 1000
    # patience 3: three evaluations without improvement after the best one
    assert summary["steps"] == summary["best_step"] + 3 * 50
    best = tf.train.latest_checkpoint(str(cfg.run_dir / "best"))
    assert best.endswith(f"-{summary['best_step']}")
    # Evaluation uses the best weights, not the last ones; they learned the rule
    # (chance is 1/3).
    best_model = classification.load_trained(cfg)
    last_model = classification.load_trained(cfg, "ckpt")
    assert weights_digest(last_model.model) == summary["weights_digest"]
    assert weights_digest(best_model.model) != summary["weights_digest"]
    texts = [text for _, text in read_split(cfg, "train")]
    predicted = [label for label, _ in best_model.classify(texts)]
    assert np.mean([p == toy_rule(t) for p, t in zip(predicted, texts, strict=True)]) > 0.75

    # An early-stopped run is finished: training it again changes nothing.
    capsys.readouterr()
    again = classification.run_training(cfg, progress=False)
    assert f"this run is finished (stopped early at step {summary['steps']})" in (
        capsys.readouterr().out
    )
    assert again["weights_digest"] == summary["weights_digest"]
    assert (again["steps"], again["stop_reason"]) == (summary["steps"], "early_stopping")


def test_removed_options_are_refused_by_name(tmp_path):
    for key, value in (
        ("train.refit", "true"),
        ("model.target_replication", "0.5"),
        ("model.pretrained_embeddings", "glove-6b-50d"),
    ):
        with pytest.raises(ConfigError, match=f"{key} is no longer supported"):
            load_config("classify", "tiny", overrides=[f"{key}={value}"])
    # in a config file too, wherever it sits, and also when set to the old default
    config = tmp_path / "old.yaml"
    config.write_text("model:\n  units: 8\n  target_replication: 0.0\n")
    with pytest.raises(ConfigError, match="model.target_replication is no longer supported"):
        load_config("classify", "tiny", str(config))
