"""seq2seq.config: every bad config file or override stops with a message naming it."""

import pytest

from seq2seq.config import ConfigError, load_config


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "config file not found"),
        (b"model: [1, 2\n", "is not valid YAML"),
        (b"\xff\xfe\x00junk", "is not UTF-8 text"),
        (b"- 1\n- 2\n", "expected a mapping, got list"),
        (b"model:\n  unit: 8\n", "unknown key 'unit'"),
        (b"model:\n  units: 0\n", "model.units must be a positive integer, got 0"),
        (b"model:\n  units: many\n", "expected a number, got 'many'"),
    ],
)
def test_bad_config_files(tmp_path, content, match):
    path = tmp_path / "mine.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        load_config("classify", "tiny", str(path))


@pytest.mark.parametrize(
    "override, match",
    [
        ("units=8", "must look like section.key=value"),
        ("model.units=[1", r"model.units: expected a number, got '\[1'"),
        ("model.units=2.5", "model.units must be a positive integer"),
        ("train.learning_rate=-1", r"learning_rate must be in \(0, 1\)"),
        ("nosuch.key=1", "unknown key 'nosuch'"),
        ("model.dropout=1.0", r"model.dropout must be in \[0, 1\), got 1.0"),
        ("model.recurrent_dropout=-0.1", r"model.recurrent_dropout must be in \[0, 1\)"),
        ("model.bptt_truncation=0", "model.bptt_truncation must be a positive integer or null"),
        ("train.eval_every=0", "train.eval_every must be a positive integer, got 0"),
        ("train.checkpoint_every=-5", "train.checkpoint_every must be a positive integer"),
        ("train.patience=-1", "train.patience must be an integer ≥ 0, got -1"),
        ("train.warmup_steps=-1", "train.warmup_steps must be an integer ≥ 0"),
        ("train.max_minutes=-2", "train.max_minutes must be ≥ 0, got -2"),
        ("train.clip_norm=0", "train.clip_norm must be > 0"),
        ("train.min_lr_ratio=1.5", r"train.min_lr_ratio must be in \[0, 1\]"),
        ("eval.beam_size=0", "eval.beam_size must be a positive integer, got 0"),
        ("eval.max_length=0", "eval.max_length must be a positive integer"),
        ("eval.length_penalty=-0.6", "eval.length_penalty must be ≥ 0"),
        ("data.source_vocab_size=0", "data.source_vocab_size must be a positive integer"),
        ("data.max_words=-1", "data.max_words must be an integer ≥ 0"),
        ("train.seed=-1", r"train.seed must be an integer in \[0, 2\*\*32\), got -1"),
        ("train.seed=4294967296", r"train.seed must be an integer in \[0, 2\*\*32\)"),
        ("data.joint_vocab_size=-1", "data.joint_vocab_size must be an integer ≥ 0"),
        ("model.copy=true", "model.copy copies source pieces by attention into one vocabulary"),
        ("train.name_augmentation=2", r"train.name_augmentation must be in \[0, 1\], got 2"),
        ("data.language=english", "data.language must be a two-letter ISO 639-1 code"),
        ("data.language=e1", "data.language must be a two-letter ISO 639-1 code"),
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("classify", "tiny", overrides=[override])


def test_overrides_win_over_the_file_which_wins_over_the_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  units: 24\n  embedding_dim: 12\n")
    cfg = load_config("classify", "tiny", str(path), ["model.units=40"])
    preset = load_config("classify", "tiny")
    assert (cfg.model.units, cfg.model.embedding_dim) == (40, 12)
    assert cfg.model.layers == preset.model.layers
    with pytest.raises(ConfigError, match="unknown preset 'huge' for classify"):
        load_config("classify", "huge")


def test_the_known_datasets_are_the_pinned_sources():
    """config.DATASETS (config cannot import the data package) names exactly the corpora that
    seq2seq.data.sources pins."""
    from seq2seq.config import DATASETS
    from seq2seq.data.sources import SOURCES

    assert sorted(n for names in DATASETS.values() for n in names) == sorted(SOURCES)


@pytest.mark.parametrize(
    "task, datasets", [("translate", ["tatoeba_spa_eng"]), ("classify", ["sentiment", "sms_spam"])]
)
@pytest.mark.parametrize("preset", ["default", "tiny"])
def test_every_preset_passes_the_checks(task, datasets, preset):
    for dataset in datasets:
        cfg = load_config(task, preset, overrides=[f"data.dataset={dataset}"])
        assert cfg.preset == preset and cfg.data.dataset == dataset
    # the edge values stay allowed: no dropout, no patience, no time cap, full BPTT
    edges = ["model.dropout=0", "train.patience=0", "train.max_minutes=0", "train.warmup_steps=0"]
    cfg = load_config(task, preset, overrides=[*edges, "model.bptt_truncation=null"])
    assert cfg.model.bptt_truncation is None and cfg.train.patience == 0
