"""Data preparation, the pinned sources' parsers, tokenizers and batching."""

import importlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from seq2seq.config import ConfigError, load_config
from seq2seq.data import Batches, DataError, Tokenizer, prepare, read_split, translation_batch
from seq2seq.data.preparation import _parse_sms, normalize
from seq2seq.data.tokenizer import EOS, PAD, SOS

prepare_module = importlib.import_module("seq2seq.data.preparation")

PAIRS = [
    ("I see the cat.", "Veo el gato."),
    ("I see the dog.", "Veo el perro."),
    ("We eat bread.", "Comemos pan."),
    ("They eat bread.", "Comen pan."),
    ("I like milk.", "Me gusta la leche."),
    ("The cat sleeps.", "El gato duerme."),
]


def write_pairs(path, pairs, extra=""):
    path.write_text("".join(f"{en}\t{es}\tCC-BY x\n" for en, es in pairs) + extra)
    return path


def cfg_for(tmp_path, task="translate", **data):
    overrides = [f"data.dir={tmp_path / 'prepared'}", f"train.run_dir={tmp_path / 'runs'}"]
    overrides += [f"data.{k}={v}" for k, v in data.items()]
    return load_config(task, "tiny", overrides=overrides)


def test_prepare_normalises_dedupes_excludes_and_splits(tmp_path):
    pairs = PAIRS * 1 + [("  I   see the cat. ", "Veo  el gato."), ("", "Hola."), ("Hi.", " ")]
    src = write_pairs(tmp_path / "pairs.tsv", pairs)
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("Comen pan.\nI like milk.\n")
    cfg = cfg_for(
        tmp_path, data_file=src, exclude_file=exclude, valid_fraction=0.2, test_fraction=0.2
    )
    manifest = prepare(cfg)
    counts = manifest["counts"]
    assert counts["read"] == 9
    assert counts["dropped_duplicate"] == 1  # the whitespace variant of the first pair
    assert counts["dropped_empty"] == 2
    assert counts["dropped_excluded"] == 2
    rows = [r for split in ("train", "valid", "test") for r in read_split(cfg, split)]
    assert sorted(r[0] for r in rows) == sorted(
        ["Veo el gato.", "Veo el perro.", "Comemos pan.", "El gato duerme."]
    )
    assert {r[1] for r in rows} == {
        "I see the cat.",
        "I see the dog.",
        "We eat bread.",
        "The cat sleeps.",
    }
    assert counts["train"] + counts["valid"] + counts["test"] == 4
    on_disk = json.loads((cfg.data_dir / "manifest.json").read_text())
    assert on_disk["files"].keys() == {"train.tsv", "valid.tsv", "test.tsv"}
    assert on_disk["origin"]["data_file"] == str(src)


def test_split_is_deterministic_and_groups_by_source(tmp_path):
    pairs = [(f"Sentence {i}.", f"Frase {i % 40}.") for i in range(200)]
    src = write_pairs(tmp_path / "pairs.tsv", pairs)
    cfg = cfg_for(tmp_path, data_file=src, valid_fraction=0.2, test_fraction=0.2, max_words=0)
    prepare(cfg)
    first = {s: read_split(cfg, s) for s in ("train", "valid", "test")}
    prepare(cfg)
    assert first == {s: read_split(cfg, s) for s in ("train", "valid", "test")}
    sources = {s: {r[0] for r in rows} for s, rows in first.items()}
    assert not sources["train"] & sources["test"]
    assert not sources["train"] & sources["valid"]
    assert all(len(first[s]) > 0 for s in first)


def test_direction_eng_spa_swaps_sides(tmp_path):
    cfg = cfg_for(
        tmp_path,
        data_file=write_pairs(tmp_path / "p.tsv", PAIRS),
        direction="eng-spa",
        valid_fraction=0,
        test_fraction=0,
    )
    prepare(cfg)
    assert ("I see the cat.", "Veo el gato.") in [r[:2] for r in read_split(cfg, "train")]


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "not found"),
        ("", "empty"),
        ("just one column\nanother\n", "tab-separated"),
        ("\xff\xfe bad bytes", "UTF-8"),
    ],
)
def test_bad_data_files_fail_clearly_and_keep_previous_output(tmp_path, content, match):
    good = cfg_for(tmp_path, data_file=write_pairs(tmp_path / "good.tsv", PAIRS))
    prepare(good)
    before = {p.name: p.read_bytes() for p in good.data_dir.iterdir()}
    path = tmp_path / "good.tsv"  # the same file, now broken: it prepares into the same folder
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content.encode("latin-1"))
    bad = cfg_for(tmp_path, data_file=path)
    assert bad.data_dir == good.data_dir
    with pytest.raises(DataError, match=match):
        prepare(bad)
    after = {p.name: p.read_bytes() for p in good.data_dir.iterdir()}
    assert after == before  # nothing half-written, nothing lost
    assert [p.name for p in good.data_dir.parent.iterdir()] == [good.data_dir.name]


def _on_disk(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_run_beside_another_keeps_its_own_staging_folder(tmp_path, monkeypatch):
    # Two `make data` at once used to share `<name>.tmp/`: the second deleted the first's
    # half-written folder and the first then failed.
    cfg = cfg_for(tmp_path, data_file=write_pairs(tmp_path / "p.tsv", PAIRS))
    prepare(cfg)
    want = _on_disk(cfg.data_dir)
    shutil.rmtree(cfg.data_dir)
    real = prepare_module.sha256_of
    inner = []

    def hash_and_meanwhile_run_another(path):
        if not inner and path.parent != tmp_path:
            # the outer run has written its first split: the inner one now runs whole
            inner.append(None)
            inner[0] = prepare(cfg)
        return real(path)

    monkeypatch.setattr(prepare_module, "sha256_of", hash_and_meanwhile_run_another)
    outer = prepare(cfg)
    assert inner and outer == inner[0]
    assert _on_disk(cfg.data_dir) == want
    assert [p.name for p in cfg.data_dir.parent.iterdir()] == [cfg.data_dir.name]


def test_splits_that_cannot_be_moved_in_leave_the_old_ones(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, data_file=write_pairs(tmp_path / "p.tsv", PAIRS))
    prepare(cfg)
    before = _on_disk(cfg.data_dir)
    real = Path.replace

    def refuse_staged(self, target):  # the new splits' folder may not move in; the old may
        if Path(target) == cfg.data_dir and ".old" not in self.name:
            raise PermissionError(13, "Permission denied", str(target))
        return real(self, target)

    monkeypatch.setattr(Path, "replace", refuse_staged)
    with pytest.raises(PermissionError):
        prepare(cfg)
    assert _on_disk(cfg.data_dir) == before
    assert [p.name for p in cfg.data_dir.parent.iterdir()] == [cfg.data_dir.name]


def test_everything_filtered_out_is_an_error(tmp_path):
    exclude = tmp_path / "ex.txt"
    exclude.write_text("\n".join(es for _, es in PAIRS))
    cfg = cfg_for(tmp_path, data_file=write_pairs(tmp_path / "p.tsv", PAIRS), exclude_file=exclude)
    with pytest.raises(DataError, match="nothing left"):
        prepare(cfg)


def test_missing_exclude_file_is_an_error(tmp_path):
    cfg = cfg_for(
        tmp_path,
        data_file=write_pairs(tmp_path / "p.tsv", PAIRS),
        exclude_file=tmp_path / "nope.txt",
    )
    with pytest.raises(DataError, match="exclude file not found"):
        prepare(cfg)


def test_unprepared_splits_name_the_make_command_that_prepares_them(tmp_path):
    with pytest.raises(DataError, match=r"not found: run `make data-translate`"):
        read_split(cfg_for(tmp_path), "train")
    sms = cfg_for(tmp_path, task="classify", dataset="sms_spam")
    with pytest.raises(DataError, match=r"run `make data-classify DATASET=sms_spam`"):
        read_split(sms, "valid")


def test_a_data_file_gets_its_own_corpus_and_run_folders(tmp_path, monkeypatch):
    """Preparing a local file must not replace a fetched corpus, nor feed that corpus's run."""
    fetched = cfg_for(tmp_path, task="classify", dataset="sentiment")
    fetched.data_dir.mkdir(parents=True)
    (fetched.data_dir / "train.tsv").write_text("label\ttext\npos\tkept\n")
    rows = [("pos", f"good film {i}") for i in range(10)] + [("neg", f"bad {i}") for i in range(10)]
    src = tmp_path / "my reviews.tsv"
    src.write_text("".join(f"{label}\t{text}\n" for label, text in rows))
    mine = cfg_for(tmp_path, task="classify", dataset="sentiment", data_file=src)
    assert re.fullmatch("file-my reviews-[0-9a-f]{6}", mine.corpus)
    assert mine.data_dir == tmp_path / "prepared" / "classify" / mine.corpus
    assert mine.run_dir == tmp_path / "runs" / "classify" / f"tiny-{mine.corpus}"
    assert prepare(mine)["counts"]["read"] == 20
    assert read_split(fetched, "train") == [("pos", "kept")]
    # The same file named another way is the same corpus; another file of the same name is not.
    monkeypatch.chdir(tmp_path)
    assert cfg_for(tmp_path, task="classify", data_file="./my reviews.tsv").corpus == mine.corpus
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "my reviews.tsv").write_text("pos\tanother file\n")
    other = cfg_for(tmp_path, task="classify", data_file=tmp_path / "other" / "my reviews.tsv")
    assert other.corpus.startswith("file-my reviews-") and other.corpus != mine.corpus
    pairs = cfg_for(tmp_path, data_file=write_pairs(tmp_path / "p.tsv", PAIRS))
    assert pairs.run_dir.name == f"tiny-none-{pairs.corpus}" != cfg_for(tmp_path).run_dir.name
    with pytest.raises(DataError, match=r"run `make data-classify DATA_FILE=.*nope.tsv`"):
        read_split(cfg_for(tmp_path, task="classify", data_file=tmp_path / "nope.tsv"), "train")


@pytest.mark.parametrize("task", ["translate", "classify"])
def test_an_unknown_dataset_is_a_config_error_naming_the_known_ones(tmp_path, task):
    known = {"translate": "tatoeba_spa_eng", "classify": "sentiment or sms_spam"}[task]
    with pytest.raises(ConfigError, match=f"unknown {task} dataset 'imdb': choose {known}"):
        cfg_for(tmp_path, task=task, dataset="imdb")


def test_sms_parser_reads_one_message_per_line_despite_stray_quotes():
    text = (
        ',spam,text\n0,0,"Quoted, with comma"\n1,1,"Opens a quote it never closes\n'
        "ham\tA raw line a CSV reader would swallow\nspam\tWIN a prize now\n"
        '2,0,next row survives\n3,1,"Doubled ""quotes"" inside"\n'
    )
    rows = _parse_sms(text, "sms.csv")
    assert rows == [
        ("ham", "Quoted, with comma"),
        ("spam", "Opens a quote it never closes"),
        ("ham", "A raw line a CSV reader would swallow"),
        ("spam", "WIN a prize now"),
        ("ham", "next row survives"),
        ("spam", 'Doubled "quotes" inside'),
    ]
    with pytest.raises(DataError, match="sms.csv:2"):
        _parse_sms(",spam,text\nnot a message\n", "sms.csv")


def test_normalize_is_nfc_and_single_spaced():
    assert normalize("  e\u0301l  está\t bien ") == "\u00e9l está bien"


def test_tokenizer_round_trip_and_special_ids(tmp_path):
    sentences = [es for _, es in PAIRS] * 20
    tok = Tokenizer.train(sentences, vocab_size=40)
    assert (tok.sp.pad_id(), tok.sp.unk_id(), tok.sp.bos_id(), tok.sp.eos_id()) == (0, 1, 2, 3)
    for s in ("Veo el gato.", "Comemos pan."):
        ids = tok.encode(s)
        assert PAD not in ids and SOS not in ids and EOS not in ids
        assert tok.decode(ids) == s
        assert tok.decode([SOS, *ids, EOS, 7, 8]) == s  # stops at EOS, drops specials
    tok.save(tmp_path / "t.spm")
    assert Tokenizer.load(tmp_path / "t.spm").encode("Veo el gato.") == tok.encode("Veo el gato.")
    # a few texts are encoded one by one, many by SentencePiece's pool: the same ids either way
    for n in (1, 3, 300):
        texts = [sentences[i % len(sentences)] for i in range(n)]
        assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_teacher_forcing_batches_shapes_and_masks():
    examples = [([5, 6, 7], [8, 9]), ([5], [8, 9, 10, 11]), ([5, 6], [8])]
    src, dec_in, target = translation_batch(examples)
    assert src.shape == (3, 3) and dec_in.shape == (3, 5) and target.shape == (3, 5)
    np.testing.assert_array_equal(dec_in[1], [SOS, 8, 9, 10, 11])
    np.testing.assert_array_equal(target[1], [8, 9, 10, 11, EOS])
    np.testing.assert_array_equal(dec_in[2], [SOS, 8, PAD, PAD, PAD])
    np.testing.assert_array_equal(target[2], [8, EOS, PAD, PAD, PAD])
    # decoder input and target are masked at the same positions
    np.testing.assert_array_equal(dec_in != PAD, target != PAD)
    np.testing.assert_array_equal(src[1], [5, PAD, PAD])


def test_batches_are_length_grouped_deterministic_and_resumable():
    examples = [([1] * n, [1] * n) for n in np.random.default_rng(0).integers(1, 30, 100)]
    b = Batches(examples, 10, lambda e: len(e[0]), translation_batch, seed=3)
    epoch0 = [x[0].tolist() for x in b.iterate(0)]
    assert epoch0 == [x[0].tolist() for x in b.iterate(0)]
    assert epoch0 != [x[0].tolist() for x in b.iterate(1)]
    assert epoch0[4:] == [x[0].tolist() for x in b.iterate(0, skip=4)]
    # grouping by length: each batch spans a narrow range of lengths
    spans = [np.ptp((np.array(x) != 0).sum(1)) for x in epoch0]
    assert max(spans) <= 5
    shards = [
        Batches(examples, 10, lambda e: len(e[0]), translation_batch, seed=3, shard=(i, 2))
        for i in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 5


def test_tokenizer_vocabulary_too_small_for_the_characters_is_raised():
    sentences = ["abcdefghij klmnopqrstuvwxyz 0123456789 ¿¡áéíóúñ!?"] * 20
    tok = Tokenizer.train(sentences, vocab_size=10)
    assert tok.vocab_size >= 45
    assert tok.decode(tok.encode("¿qué año?")) == "¿qué año?"
