"""README.md and docs/ stay true to the repository: links resolve, every make target is
documented, the README stays short, and the code quoted in docs/bptt.md is still the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces → hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, flags=re.M)}


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_slug_matches_githubs_anchors():
    assert slug("The layer: `make bench-rnn`") == "the-layer-make-bench-rnn"
    assert slug("Serving: `make bench-serve`") == "serving-make-bench-serve"
    assert slug("`make serve` from nothing") == "make-serve-from-nothing"


def test_the_docs_exist_and_say_what_a_reader_gets_first():
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    for doc in (
        "docs/architecture.md",
        "docs/bptt.md",
        "docs/training.md",
        "docs/serving.md",
        "docs/results.md",
        "docs/experiments/sentiment.md",
        "docs/experiments/names.md",
    ):
        assert doc in names
        body = (ROOT / doc).read_text().split("\n\n")
        assert body[1].startswith("What you get here"), doc


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    assert relative_links(path) or path.name != "README.md"
    for link in relative_links(path):
        target, _, fragment = link.partition("#")
        where = (path.parent / target).resolve() if target else path
        assert where.exists(), f"{path.name}: {link} points to nothing"
        assert ROOT in where.parents or where == ROOT, f"{path.name}: {link} leaves the repo"
        if fragment and where.suffix == ".md":
            assert fragment in anchors(where), f"{path.name}: no heading #{fragment} in {target}"


def test_the_link_checker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nSee [there](missing.md) and [here](#title).\n")
    assert relative_links(page) == ["missing.md", "#title"]
    assert not (tmp_path / "missing.md").exists()
    assert "title" in anchors(page)


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_every_make_target_is_named_in_readme_or_docs():
    out = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    )
    targets = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert "serve" in targets and "test" in targets
    text = "\n".join(p.read_text() for p in DOCS)
    missing = [t for t in targets if not re.search(rf"make {re.escape(t)}\b|`{t}`", text)]
    assert not missing, f"make targets not named in README.md or docs/: {missing}"


def test_docs_stand_on_their_own():
    for path in DOCS:
        assert "../shared" not in path.read_text(), path


def test_code_quoted_in_bptt_md_is_still_in_bptt_py():
    """The indented code blocks of docs/bptt.md are lines of seq2seq/bptt.py, quoted."""
    source = {line.strip() for line in (ROOT / "seq2seq" / "bptt.py").read_text().splitlines()}
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "bptt.md").read_text(), re.S)
    quoted = [b for b in blocks if b.startswith((" ", "\t")) or b.lstrip().startswith('"')]
    assert len(quoted) >= 8
    for block in quoted:
        for line in filter(str.strip, block.splitlines()):
            assert line.strip() in source, f"docs/bptt.md quotes a line not in bptt.py: {line}"
