"""Run configuration: dataclass defaults, YAML presets and files merged over them.

A config has four sections, `data`, `model`, `train` and `eval`. Presets live in
`seq2seq/presets/<task>/<name>.yaml`; a user's `CONFIG=file.yaml` is merged over the preset, and
`KEY=VALUE` overrides (e.g. `model.attention=luong`) over that. Unknown keys are errors.

A preset may hold a `datasets:` mapping of dataset name → settings; the entry of the dataset the
run ends up with (after the file and the overrides) is merged right over the preset, so the file
and the overrides still win. (The classification preset uses it: what suits 10k movie-review
sentences does not suit SMS messages.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seq2seq import export_format as fmt
from seq2seq.export_format import TASKS

PRESETS = Path(__file__).parent / "presets"
# The corpora `make data` fetches, per task (seq2seq.data.sources holds where from).
DATASETS = {"translate": ("tatoeba_spa_eng",), "classify": ("sentiment", "sms_spam")}


# Model settings that act only while training and add no variables: evaluating or exporting
# a run may change them. (Not dropout: a dropout layer's seed is a variable of the checkpoint.)
TRAINING_ONLY_MODEL_KEYS = ("bptt_truncation", "adversarial")

# Settings that were tried, did not help and left the code (what they measured is in
# docs/experiments/sentiment.md). A config that still sets one is refused, naming it, rather
# than silently training something else than it says.
REMOVED_KEYS = {
    "model.target_replication": "a loss on every step's state (Lipton et al. 2016)",
    "model.pretrained_embeddings": "embeddings started from GloVe vectors",
    "train.refit": "a second training pass on train + valid",
}


class ConfigError(ValueError):
    """A config file, preset or override is malformed."""


@dataclass
class DataConfig:
    dataset: str = "tatoeba_spa_eng"  # tatoeba_spa_eng | sentiment | sms_spam
    data_file: str | None = None  # local TSV used instead of the pinned corpus
    exclude_file: str | None = None  # sentences (one per line) kept out of every split
    direction: str = "spa-eng"  # translation direction: spa-eng or eng-spa
    max_words: int = 15  # drop pairs with a side longer than this many words (0: keep all)
    valid_fraction: float = 0.01  # share of the data in the validation split
    test_fraction: float = 0.01  # share of the data in the test split
    seed: int = 0  # salt of the deterministic split
    dir: str = "data/prepared"  # where prepared splits go (a sub-folder per task/dataset)
    source_vocab_size: int = 4000  # SentencePiece vocabulary of the source side
    target_vocab_size: int = 4000  # SentencePiece vocabulary of the target side (translation)
    language: str = ""  # classification: the texts' language (ISO 639-1, e.g. "en"), which the
    # server checks each request against; "": the corpus's (sentiment, sms_spam: English), none
    # for a data_file
    joint_vocab_size: int = 0  # translation: one SentencePiece model of this size, with byte
    # fallback, for both sides instead of the two above (0: separate); model.copy needs it


@dataclass
class ModelConfig:
    embedding_dim: int = 256  # token embedding width
    units: int = 256  # SimpleRNN state size
    layers: int = 1  # stacked SimpleRNN layers (encoder and decoder alike)
    attention: str = "none"  # translation: none | luong
    attention_scale: bool = False  # translation: divide Luong scores by √units
    reverse_source: bool = True  # translation: read the source backwards (Sutskever et al.)
    copy: bool = False  # translation: mix a copy distribution over the source pieces into the
    # output (pointer-generator, See et al. 2017); needs attention and data.joint_vocab_size
    bidirectional: bool = False  # classification: forward + backward reading
    activation: str = "tanh"  # classification: SimpleRNN activation (tanh | relu)
    recurrent_initializer: str = "orthogonal"  # classification: W_hh start (orthogonal |
    # identity; relu + identity is the IRNN of Le et al. 2015)
    dropout: float = 0.0  # dropout on embeddings and between layers
    recurrent_dropout: float = 0.0  # dropout on h_{t-1} inside the recurrence
    bptt_truncation: int | None = None  # truncated BPTT chunk length (None: full)
    adversarial: float = 0.0  # classification: ε of adversarial training on the embeddings
    # (training: loss on e and on e + ε·‖e‖·(the loss-raising direction); 0 = off)


@dataclass
class TrainConfig:
    batch_size: int = 128  # sentences per batch (batches group similar lengths)
    learning_rate: float = 2e-3  # peak Adam learning rate
    warmup_steps: int = 200  # linear warm-up, then cosine decay to max_steps
    min_lr_ratio: float = 0.05  # final learning rate as a share of the peak
    clip_norm: float = 1.0  # global-norm gradient clipping
    max_bad_steps: int = 1  # stop at this many non-finite steps (each one's update is skipped)
    label_smoothing: float = 0.0  # translation: cross-entropy label smoothing
    name_augmentation: float = 0.0  # translation: share of the pairs with names or numbers on
    # both sides also trained on with those replaced by made-up ones (seq2seq/data/augment.py)
    weight_decay: float = 0.0  # decoupled weight decay (AdamW; 0: plain Adam)
    class_weights: bool = False  # classification: weight classes by inverse frequency
    max_steps: int = 10000  # stop after this many updates
    max_minutes: float = 0.0  # also stop after this much wall time (0: no limit)
    eval_every: int = 500  # validate (loss and score) every this many steps
    checkpoint_every: int = 500  # save a resumable checkpoint every this many steps
    # Live training (`train --publish <repository>`, what `make serve` runs): a first version is
    # exported after `first_export_step` steps (0: at the first validation), then a new one at a
    # validation whose loss beats every earlier one, at least `export_every` steps after the last
    # (0: at every such validation); at the end, the final version with its test scores.
    first_export_step: int = 0
    export_every: int = 0
    patience: int = 0  # early stop after this many evaluations without improvement (0: off)
    log_every: int = 50  # TensorBoard scalars every this many steps
    seed: int = 0  # weights, dropout and batch order
    run_dir: str = "runs"  # checkpoints and TensorBoard logs (a sub-folder per task and run)
    run_name: str = ""  # the run's sub-folder (default: <preset>-<attention or dataset>)


@dataclass
class EvalConfig:
    # Decoding: the "beam" evaluation's width, and the defaults of `translate` and of the export
    # (the server and the client use the export's): see seq2seq.export_format.Decoding.
    beam_size: int = fmt.DEFAULT_BEAM_SIZE  # beam width; 1 is greedy search
    length_penalty: float = fmt.DEFAULT_LENGTH_PENALTY  # GNMT length penalty alpha (0: none)
    max_length: int = fmt.DEFAULT_MAX_LENGTH  # longest output in tokens
    eval_file: str | None = None  # TSV to evaluate instead of the test split


@dataclass
class Config:
    task: str = "translate"  # translate | classify
    preset: str = "default"  # the preset this config started from
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def corpus(self) -> str:
        """The prepared corpus's name: the dataset, or `file-<stem>-<tag>` for a local data file,
        the tag a digest of the file's absolute path, so that preparing a file never replaces a
        fetched corpus or another folder's file of the same name, nor feeds their runs."""
        if self.data.data_file:
            path = Path(self.data.data_file).resolve()
            return f"file-{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:6]}"
        return self.data.dataset

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir) / self.task / self.corpus

    @property
    def run_dir(self) -> Path:
        if self.task == "translate":
            variant = self.model.attention
            if self.data.data_file:
                variant += f"-{self.corpus}"
        else:
            variant = self.corpus
        name = self.train.run_name or f"{self.preset}-{variant}"
        return Path(self.train.run_dir) / self.task / name

    def check_run_dir(self, loading: bool = False) -> None:
        """Refuses to continue a run folder made with another model or vocabulary (its
        tokenizers and checkpoints would not fit), naming the settings that differ. `loading`
        (evaluate, export, translate, classify): settings that act only in training may differ."""
        saved = self.run_dir / "config.json"
        if not saved.exists():
            return
        old, new = json.loads(saved.read_text()), self.to_dict()
        keys = [
            ("model", k) for k in new["model"] if not (loading and k in TRAINING_ONLY_MODEL_KEYS)
        ]
        keys += [
            ("data", k)
            for k in (
                "dataset",
                "direction",
                "source_vocab_size",
                "target_vocab_size",
                "joint_vocab_size",
            )
        ]
        diffs = [
            f"{section}.{key} {old[section][key]!r} → {new[section][key]!r}"
            for section, key in keys
            if key in old.get(section, {}) and old[section][key] != new[section][key]
        ]
        if diffs:
            fix = (
                "use the settings it was trained with (its config.json), or another train.run_name"
                if loading
                else "pass --set train.run_name=<new name>, or remove that folder"
            )
            raise ConfigError(
                f"{self.run_dir} holds a run made with other settings ({'; '.join(diffs)}): {fix}"
            )


def _merge(target, values: dict, where: str, section: str = "") -> None:
    """Sets `values` on the dataclass `target`; `section` ("model", …) names it in errors."""
    here = f"{where}: {section}" if section else where
    if not isinstance(values, dict):
        raise ConfigError(f"{here}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        name = f"{section}.{key}" if section else str(key)
        if name in REMOVED_KEYS:
            raise ConfigError(
                f"{where}: {name} is no longer supported ({REMOVED_KEYS[name]} did not help "
                "and was removed): delete it"
            )
        if key not in fields:
            raise ConfigError(f"{here}: unknown key {key!r} (known: {', '.join(fields)})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, where, name)
            continue
        setattr(target, key, _coerce(value, current, f"{where}: {name}"))


def _coerce(value, current, where: str):
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if isinstance(current, (int, float)) and not isinstance(value, bool):
        try:
            return type(current)(value) if isinstance(value, str) else value
        except ValueError as err:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from err
    return value


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text: {err}") from err
    return data or {}


def load_config(
    task: str,
    preset: str = "default",
    config_file: str | None = None,
    overrides: list[str] | None = None,
) -> Config:
    """Builds a Config: defaults ← preset ← config file ← `section.key=value` overrides."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {TASKS}")
    preset_path = PRESETS / task / f"{preset}.yaml"
    if not preset_path.exists():
        known = sorted(p.stem for p in (PRESETS / task).glob("*.yaml"))
        raise ConfigError(f"unknown preset {preset!r} for {task}; known presets: {known}")
    preset_values = _read_yaml(preset_path)
    per_dataset = preset_values.pop("datasets", None) or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError(f"preset {preset}: `datasets` must map dataset names to settings")
    layers = [(f"preset {preset}", preset_values)]
    if config_file:
        layers.append((str(config_file), _read_yaml(Path(config_file))))
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        section, name = key.split(".", 1)
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass  # not YAML (say "[1"): kept as the string it is, for the type check to judge
        layers.append(("override", {section: {name: value}}))

    def build() -> Config:
        cfg = Config(task=task, preset=preset)
        for where, values in layers:
            _merge(cfg, values, where)
        return cfg

    cfg = build()
    dataset = cfg.data.dataset  # known only once the file and the overrides are in
    if dataset in per_dataset:
        layers.insert(1, (f"preset {preset}, datasets.{dataset}", per_dataset[dataset]))
        cfg = build()
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    m, t, d = cfg.model, cfg.train, cfg.data
    if m.attention not in ("none", "luong"):
        raise ConfigError(f"model.attention must be none or luong, got {m.attention!r}")
    if not isinstance(d.joint_vocab_size, int) or d.joint_vocab_size < 0:
        raise ConfigError(
            f"data.joint_vocab_size must be an integer ≥ 0, got {d.joint_vocab_size!r}"
        )
    if m.copy and (m.attention != "luong" or not d.joint_vocab_size):
        raise ConfigError(
            "model.copy copies source pieces by attention into one vocabulary: it needs "
            "model.attention=luong and data.joint_vocab_size > 0"
        )
    if m.activation not in ("tanh", "relu"):
        raise ConfigError(f"model.activation must be tanh or relu, got {m.activation!r}")
    if m.recurrent_initializer not in ("orthogonal", "identity"):
        raise ConfigError(
            f"model.recurrent_initializer must be orthogonal or identity, "
            f"got {m.recurrent_initializer!r}"
        )
    if d.dataset not in DATASETS[cfg.task]:
        raise ConfigError(
            f"unknown {cfg.task} dataset {d.dataset!r}: choose {' or '.join(DATASETS[cfg.task])}"
            " (a local file goes in data.data_file, DATA_FILE= to make)"
        )
    if d.language and not (d.language.isascii() and d.language.isalpha() and len(d.language) == 2):
        raise ConfigError(
            f"data.language must be a two-letter ISO 639-1 code (en, es…), got {d.language!r}"
        )
    if d.direction not in ("spa-eng", "eng-spa"):
        raise ConfigError(f"data.direction must be spa-eng or eng-spa, got {d.direction!r}")
    for name, value in (
        ("model.units", m.units),
        ("model.layers", m.layers),
        ("model.embedding_dim", m.embedding_dim),
        ("train.batch_size", t.batch_size),
        ("train.max_steps", t.max_steps),
        ("train.eval_every", t.eval_every),
        ("train.checkpoint_every", t.checkpoint_every),
        ("train.log_every", t.log_every),
        ("train.max_bad_steps", t.max_bad_steps),
        ("eval.beam_size", cfg.eval.beam_size),
        ("eval.max_length", cfg.eval.max_length),
        ("data.source_vocab_size", d.source_vocab_size),
        ("data.target_vocab_size", d.target_vocab_size),
    ):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (
        ("train.warmup_steps", t.warmup_steps),
        ("train.patience", t.patience),
        ("train.first_export_step", t.first_export_step),
        ("train.export_every", t.export_every),
        ("data.max_words", d.max_words),
    ):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an integer ≥ 0, got {value!r}")
    if not isinstance(t.seed, int) or not 0 <= t.seed < 2**32:  # numpy's and Keras's range
        raise ConfigError(f"train.seed must be an integer in [0, 2**32), got {t.seed!r}")
    if m.bptt_truncation is not None and (
        not isinstance(m.bptt_truncation, int) or m.bptt_truncation < 1
    ):
        raise ConfigError(
            f"model.bptt_truncation must be a positive integer or null, got {m.bptt_truncation!r}"
        )
    for name, value in (
        ("model.dropout", m.dropout),
        ("model.recurrent_dropout", m.recurrent_dropout),
    ):
        if not 0 <= value < 1:
            raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
    if not 0 <= t.min_lr_ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio!r}")
    for name, value in (
        ("train.max_minutes", t.max_minutes),
        ("eval.length_penalty", cfg.eval.length_penalty),
    ):
        if not value >= 0:
            raise ConfigError(f"{name} must be ≥ 0, got {value!r}")
    if not 0 <= t.name_augmentation <= 1:
        raise ConfigError(f"train.name_augmentation must be in [0, 1], got {t.name_augmentation!r}")
    if not t.clip_norm > 0:
        raise ConfigError(f"train.clip_norm must be > 0, got {t.clip_norm!r}")
    if not 0 < t.learning_rate < 1:
        raise ConfigError(f"train.learning_rate must be in (0, 1), got {t.learning_rate!r}")
    if not 0 <= m.adversarial < 10:
        raise ConfigError(f"model.adversarial must be in [0, 10), got {m.adversarial!r}")
    if not 0 <= t.label_smoothing < 1:
        raise ConfigError(f"train.label_smoothing must be in [0, 1), got {t.label_smoothing!r}")
    if cfg.task == "classify" and t.label_smoothing > 0:
        raise ConfigError(
            "train.label_smoothing applies to translation only; for classification use "
            "model.adversarial or model.dropout to regularise"
        )
    if not 0 <= t.weight_decay < 10:
        raise ConfigError(f"train.weight_decay must be in [0, 10), got {t.weight_decay!r}")
    for name, value in (("valid_fraction", d.valid_fraction), ("test_fraction", d.test_fraction)):
        if not 0 <= value < 0.5:
            raise ConfigError(f"data.{name} must be in [0, 0.5), got {value!r}")
