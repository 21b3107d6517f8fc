"""The version policy (latest N, specific versions) and labels: which version answers, with two
classifiers trained to opposite answers so that a wrong version cannot pass unnoticed."""

import shutil
import threading
import time

import pytest
from servers import REVIEWS, Server, classify_overrides, wait_for

from seq2seq.config import load_config
from seq2seq.data import prepare
from seq2seq.tasks import classification
from serving.client import Client, ServingError
from serving.server import config as serving_config
from serving.server.errors import InvalidRequest, VersionNotFound
from serving.server.versions import VersionPolicy, parse_labels, parse_policies

TEXT = "a bad film 2"
EXPECTED = {1: "neg", 2: "pos", 4: "pos"}  # 2 learnt the labels the other way round; 4 is 2


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """A tiny classifier trained with every label swapped: it calls "a bad film" pos."""
    root = tmp_path_factory.mktemp("flipped")
    swap = {"pos": "neg", "neg": "pos"}
    reviews = [(swap[label], text) for label, text in REVIEWS]
    cfg = load_config("classify", "tiny", overrides=classify_overrides(root, reviews))
    prepare(cfg)
    classification.run_training(cfg, progress=False)
    return classification.run_export(cfg, root / "models" / "classify")


def publish(repo, source, version):
    tmp = repo / "classify" / f".tmp-{version}"
    shutil.copytree(source, tmp)
    tmp.rename(repo / "classify" / str(version))


@pytest.fixture
def repo(models, flipped, tmp_path):
    """classify/1 answers neg, classify/2 pos (for TEXT); translate/1 as usual."""
    root = tmp_path / "models"
    shutil.copytree(models / "translate" / "1", root / "translate" / "1")
    publish(root, models / "classify" / "1", 1)
    publish(root, flipped, 2)
    return root


def label_of(predictor, **which):
    results, version = predictor.classify([TEXT], **which)
    return results[0].label, version


def test_policies_and_labels_parse_or_say_what_is_wrong():
    policies = parse_policies({"translate": {"latest": 2}, "classify": {"specific": [3, 1, 3]}})
    assert policies["translate"] == VersionPolicy(latest=2)
    assert policies["classify"] == VersionPolicy(latest=None, specific=(1, 3))
    assert policies["translate"].wanted([1, 2, 3, 4]) == [4, 3]
    assert policies["classify"].wanted([1, 2, 4]) == [1]
    assert parse_policies(None)["classify"] == VersionPolicy(latest=1)
    labels = parse_labels({"classify": {"stable": 1, "canary": 3}}, policies)
    assert labels == {"translate": {}, "classify": {"stable": 1, "canary": 3}}
    bad = [
        ({"classify": {"latest": 0}}, None, "models.versions.classify.latest must be an integer"),
        ({"classify": {"newest": 1}}, None, "expected latest or specific, got 'newest'"),
        ({"classify": {"specific": []}}, None, "must be a non-empty list of version numbers"),
        ({"summarise": {"latest": 1}}, None, "unknown task 'summarise'"),
        ({"classify": {"specific": [1]}}, {"classify": {"stable": 2}}, "which models.versions"),
        (None, {"classify": {"Stable": 1}}, "a label is a lower-case word"),
        (None, {"classify": {"stable": "v1"}}, "must be a version number, got 'v1'"),
    ]
    for versions, labels, message in bad:
        with pytest.raises(ValueError, match=message):
            overrides = {"models.versions": versions or {}, "models.labels": labels or {}}
            serving_config.load(None, overrides)


def test_latest_n_serves_the_newest_n_and_each_answers_as_itself(repo):
    from serving.server.predictor import Predictor

    p = Predictor(repo, policies={"classify": VersionPolicy(latest=2)})
    try:
        assert p.served_versions()["classify"] == [2, 1]
        assert label_of(p) == ("pos", 2)  # no version named: the newest
        assert label_of(p, model_version=1) == ("neg", 1)
        assert label_of(p, model_version=2) == ("pos", 2)
        publish(repo, repo / "classify" / "1", 3)  # a copy of 1 as 3: 1 drops out
        p.refresh("classify", wait_until_stable=False)
        assert p.served_versions()["classify"] == [3, 2]
        assert label_of(p) == ("neg", 3) and label_of(p, model_version=2) == ("pos", 2)
        with pytest.raises(
            VersionNotFound, match=r"version 1 is not loaded \(serving versions 3, 2\)"
        ):
            label_of(p, model_version=1)
    finally:
        p.close()


def test_specific_versions_and_labels(repo):
    from serving.server.predictor import Predictor

    publish(repo, repo / "classify" / "1", 3)
    p = Predictor(
        repo,
        policies={"classify": VersionPolicy(latest=None, specific=(1, 2))},
        labels={"classify": {"stable": 1, "canary": 2}},
    )
    try:
        assert p.served_versions()["classify"] == [2, 1]  # 3 is newer but not listed
        assert label_of(p, model_version_label="stable") == ("neg", 1)
        assert label_of(p, model_version_label="canary") == ("pos", 2)
        assert label_of(p) == ("pos", 2)
        with pytest.raises(VersionNotFound, match=r"no classify version label 'beta' \(labels: "):
            label_of(p, model_version_label="beta")
        with pytest.raises(InvalidRequest, match="not both"):
            label_of(p, model_version=1, model_version_label="stable")
        described = {d["version"]: d for d in p.metadata("classify")}
        assert sorted(described) == [1, 2]
        assert described[1]["version_labels"] == ["stable"] and not described[1]["is_default"]
        assert described[2]["version_labels"] == ["canary"] and described[2]["is_default"]
        # a live change: roll "stable" forward to 2 and serve only 2
        p.set_versions(
            {"classify": VersionPolicy(latest=None, specific=(2,))}, {"classify": {"stable": 2}}
        )
        assert p.served_versions()["classify"] == [2]
        assert label_of(p, model_version_label="stable") == ("pos", 2)
        # refused: a label at a version that is not in the repository; nothing changes
        with pytest.raises(ValueError, match=r"models.labels.classify.stable points at version 9"):
            p.set_versions({"classify": VersionPolicy(latest=1)}, {"classify": {"stable": 9}})
        assert p.served_versions()["classify"] == [2]
        assert label_of(p, model_version_label="stable") == ("pos", 2)
        # a label outside the latest-N window pins its version: it is loaded and served
        p.set_versions({"classify": VersionPolicy(latest=1)}, {"classify": {"stable": 1}})
        assert p.served_versions()["classify"] == [3, 1]  # 3 (newest) and 1 (stable)
        assert label_of(p, model_version_label="stable") == ("neg", 1)
        assert label_of(p) == ("neg", 3)
    finally:
        p.close()


def test_a_label_survives_an_export_past_the_latest_window(repo):
    """latest 2 with stable → 1: exports 3 and 4 push 1 out of the window, and the label keeps
    it served (it used to be retired, and every `stable` request answered NOT_FOUND)."""
    from serving.server.predictor import Predictor

    changes, made = [], {}

    def changed():  # what the memory budget's hook sees
        changes.append(made["p"].served_versions()["classify"] if "p" in made else None)

    p = made["p"] = Predictor(
        repo,
        policies={"classify": VersionPolicy(latest=2)},
        labels={"classify": {"stable": 1}},
        on_change=changed,
    )
    try:
        assert p.served_versions()["classify"] == [2, 1]
        publish(repo, repo / "classify" / "2", 3)
        publish(repo, repo / "classify" / "2", 4)
        assert p.refresh("classify", wait_until_stable=False) == 4
        assert p.served_versions()["classify"] == [4, 3, 1]  # 2 left the window; 1 is pinned
        assert label_of(p, model_version_label="stable") == ("neg", 1)
        assert label_of(p) == ("pos", 4)
        described = {d["version"]: d["version_labels"] for d in p.metadata("classify")}
        assert described == {4: [], 3: [], 1: ["stable"]}
        # the memory budget's hook saw each load and the release of 2
        assert changes[-3:] == [[4, 2, 1], [4, 3, 2, 1], [4, 3, 1]]
        # moving the label lets 1 go
        p.set_versions({"classify": VersionPolicy(latest=2)}, {"classify": {"stable": 3}})
        assert p.served_versions()["classify"] == [4, 3]
        assert label_of(p, model_version_label="stable") == ("pos", 3)
    finally:
        p.close()


def test_a_label_at_a_version_not_in_the_repository_is_refused_at_start(repo, tmp_path):
    from serving.server.predictor import Predictor

    with pytest.raises(ValueError, match=r"models.labels.classify.stable points at version 7, wh"):
        Predictor(repo, labels={"classify": {"stable": 7}})
    config = tmp_path / "serving.yaml"
    config.write_text("models:\n  labels:\n    classify: {stable: 8}\n")
    import subprocess
    import sys

    from servers import ROOT

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--model-dir",
            str(repo),
            "--config",
            str(config),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert "error: models.labels.classify.stable points at version 8, which is not served" in (
        out.stderr
    )


@pytest.mark.slow
def test_config_changes_are_picked_up_live_and_answers_match_their_version_under_load(
    repo, tmp_path
):
    config = tmp_path / "serving.yaml"
    config.write_text("models:\n  versions:\n    classify: {latest: 1}\n")
    srv = Server(repo, "--config", str(config), "--poll-seconds", "0.2")
    stop, seen, wrong, errors = threading.Event(), set(), [], []

    def hammer():
        with Client(srv.target, timeout=30) as c:
            while not stop.is_set():
                try:
                    for which in ({}, {"model_version_label": "stable"}):
                        r = c.classify([TEXT], **which)[0]
                        seen.add(r.model_version)
                        if r.label != EXPECTED[r.model_version]:
                            wrong.append((r.model_version, r.label))
                except ServingError as err:  # "stable" is not defined at first: NOT_FOUND
                    if err.code.name != "NOT_FOUND":
                        errors.append(err)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        with Client(srv.target, timeout=30) as c:

            def versions():
                return [
                    (m["version"], m["version_labels"]) for m in c.metadata("classify")["models"]
                ]

            assert versions() == [(2, [])]
            config.write_text(
                "models:\n  versions:\n    classify: {specific: [1, 2]}\n"
                "  labels:\n    classify: {stable: 1, canary: 2}\n"
            )
            wait_for(lambda: versions() == [(2, ["canary"]), (1, ["stable"])], what="the change")
            assert c.classify([TEXT], model_version_label="stable")[0].label == "neg"
            publish(repo, repo / "classify" / "2", 4)  # not listed: not loaded
            config.write_text("models:\n  labels:\n    classify: {stable: 9}\n")  # refused
            wait_for(lambda: "config change" in srv.log(), what="the refusal")
            assert "refused, settings unchanged" in srv.log()
            assert versions() == [(2, ["canary"]), (1, ["stable"])]
            config.write_text(
                "models:\n  versions:\n    classify: {latest: 2}\n"
                "  labels:\n    classify: {stable: 2}\n"
            )
            wait_for(lambda: versions() == [(4, []), (2, ["stable"])], what="latest 2")
            time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        srv.stop()
    assert errors == [] and wrong == []
    assert {1, 2, 4} <= seen
