"""Serve while it learns, end to end: `make serve` on a checkout whose data is made up and tiny
(tests/servers.py's toy corpora, the tiny preset), with clients calling throughout.

- The server answers from the first versions while training goes on, then from later ones,
  with no failed request across the switches (before a task's first version its calls answer
  UNAVAILABLE saying when one is expected).
- SIGKILL of the whole `make serve` mid-training; `make serve` again serves the newest export at
  once and resumes the run from its checkpoint to the schedule's last step and its final version.
- SIGTERM stops training and server cleanly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from servers import ROOT, free_port, toy_corpora, wait_for

from serving.client import Client, ServingError

pytestmark = pytest.mark.slow

SCHEDULE = [
    "classify:train.max_steps=300",
    "translate:train.max_steps=2400",
    "train.eval_every=200",
    "train.checkpoint_every=100",
    "train.first_export_step=40",
    "train.log_every=20",
]


class MakeServe:
    """`make serve PRESET=tiny` in a checkout at `root` (the project's virtualenv linked in), in
    a session of its own so that the whole of it can be killed at once."""

    def __init__(self, root: Path, port: int, http_port: int):
        self.root, self.port = root, port
        cmd = ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "serve"]
        cmd += ["PRESET=tiny", f"PORT={port}", f"HTTP_PORT={http_port}"]
        cmd.append(f"SET={' '.join(SCHEDULE)}")
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            cmd,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)  # to make: it passes it on, once
        code = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        return code


class Callers:
    """Translate and classify calls one after another until stopped; every answer recorded as
    (task, version) or (task, status code, details)."""

    def __init__(self, port: int):
        self.port = port
        self.answers: list[tuple] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with Client(f"127.0.0.1:{self.port}", timeout=30) as client:
            while not self.stop.is_set():
                for task in ("translate", "classify"):
                    try:
                        if task == "translate":
                            version = client.translate(["Veo el gato."])[0].model_version
                        else:
                            version = client.classify(["a good film number 3"])[0].model_version
                        self.answers.append((task, version))
                    except ServingError as err:
                        self.answers.append((task, err.code.name, err.details))
                    except Exception as err:  # recorded as a failure, the thread goes on
                        self.answers.append((task, type(err).__name__, str(err)))
                time.sleep(0.05)

    def versions(self, task: str) -> list[int]:
        return [a[1] for a in self.answers if a[0] == task and len(a) == 2]

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def status(root: Path, task: str) -> dict:
    try:
        return json.loads((root / "models-tiny" / task / "training.json").read_text())
    except (OSError, ValueError):
        return {}


def on_disk(root: Path, task: str) -> list[int]:
    return sorted(int(p.name) for p in (root / "models-tiny" / task).glob("[0-9]*"))


@pytest.fixture
def make_serve():
    """Starts MakeServe(...); whatever is still running at the end is killed (a failed test
    must not leave a server and a training behind)."""
    started = []

    def start(*args) -> MakeServe:
        started.append(MakeServe(*args))
        return started[-1]

    yield start
    for serve in started:
        if serve.proc.poll() is None:
            serve.kill()


@pytest.fixture
def checkout(tmp_path):
    """A checkout with the toy corpora prepared and the project's virtualenv."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "pyproject.toml").symlink_to(ROOT / "pyproject.toml")
    return toy_corpora(tmp_path)


def test_it_answers_early_improves_live_and_resumes_after_a_kill(checkout, make_serve):
    root = checkout
    port, http_port = free_port(), free_port()
    serve = make_serve(root, port, http_port)
    callers = Callers(port)
    try:
        # the first answers come from first versions, then later versions take over
        wait_for(lambda: callers.versions("translate") and callers.versions("classify"), 300,
                 what="first answers")  # fmt: skip
        # ... while the run still trains; SIGKILL of the whole make serve then, mid-training
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            meta = wait_for(
                lambda: _still_training(client, callers),
                300,
                every=0.2,
                what="a later translate version, with the run still training",
            )
        callers.finish()  # before the kill: what it counts are the answers of a live server
        trainer_pid = status(root, "translate")["pid"]
        serve.kill()
    except AssertionError:
        serve.kill()
        print(serve.log()[-6000:], status(root, "translate"))
        raise
    finally:
        callers.finish()
    for task in ("translate", "classify"):
        answers = [a for a in callers.answers if a[0] == task]
        first = next(i for i, a in enumerate(answers) if len(a) == 2)
        before, after = answers[:first], answers[first:]
        failed = [a for a in after if len(a) != 2]
        print(f"{task}: {len(before)} UNAVAILABLE before the first version, {len(after)} "
              f"answers after it from versions {sorted(set(callers.versions(task)))}, "
              f"{len(failed)} failed")  # fmt: skip
        assert not failed, failed[:3]
        # before it: the server was not up yet, or it said when a first version is expected
        # (which of the two a task sees depends on how soon its first version comes)
        expected = rf"no {task} model is loaded yet: its training|failed to connect"
        assert all(a[1] == "UNAVAILABLE" and re.search(expected, a[2]) for a in before), before
    assert callers.versions("translate")[0] == 1
    translate_versions = sorted(set(callers.versions("translate")))
    assert len(translate_versions) >= 2
    # the status as clients saw it: the run was still improving the model
    training = meta["training"]["translate"]
    assert training["improving"] and training["state"] == "training"
    assert training["total_steps"] == 2400 and 600 <= training["step"] < 2400
    assert [v["version"] for v in training["versions"]][:2] == [1, 2]
    assert training["versions"][0]["step"] == 40
    served = [m for m in meta["models"] if m["task"] == "translate"][0]
    assert served["intermediate"] and served["trained_steps"] >= 40

    # nothing of the killed make serve is left running
    wait_for(lambda: not os.path.exists(f"/proc/{trainer_pid}"), 30, what="the trainer to die")
    killed_at = status(root, "translate")
    # where it resumes: the checkpoint its manager recorded last (a SIGKILL may have cut the
    # writing of a newer one short, whose files are there but not recorded)
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(root / "runs" / "translate" / "tiny-none" / "ckpt"))
    resume_step = int(latest.rsplit("-", 1)[1])
    newest = on_disk(root, "translate")[-1]
    print(f"killed at step ~{killed_at['step']}; last checkpoint {resume_step}; newest v{newest}")

    serve = make_serve(root, port, http_port)
    try:
        # the server comes up with the newest export on disk loaded, and answers from it at once
        # (the resumed run may export a newer one within seconds, and on a busy machine before
        # the server has looked: then that is the newest, and the one it starts with)
        started = wait_for(
            lambda: re.search(r"listening on \S+ \(\w+; translate v(\d+)", serve.log()),
            120,
            what="the server to listen",
        )
        at_start = int(started.group(1))
        assert at_start >= newest, (at_start, newest, serve.log()[-2000:])
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            first = wait_for(
                lambda: _answer(client), 120, every=0.2, what="an answer after the restart"
            )
        assert first >= at_start, (first, at_start)
        wait_for(lambda: status(root, "translate").get("state") == "finished", 300,
                 what="the resumed run to finish")  # fmt: skip
        log = serve.log()
        assert f"resuming from {Path('runs/translate/tiny-none/ckpt')}/ckpt-{resume_step} " in (
            log
        ), log[-3000:]
        summary = json.loads((root / "runs/translate/tiny-none/summary.json").read_text())
        assert summary["steps"] == 2400 and summary["stop_reason"] == "max_steps"
        final = status(root, "translate")["versions"][-1]
        assert final["final"] and final["version"] == on_disk(root, "translate")[-1]
        wait_for(lambda: _answer_version(port) == final["version"], 60, what="the final version")
    finally:
        code = serve.terminate()
    # make itself dies of the signal it passed on (-15); what matters is what ran under it
    log = serve.log()
    assert "drained in" in log and "seq2seq server stopped" in log, (code, log[-2000:])


def _still_training(client, callers) -> dict | None:
    """The metadata, once clients were answered by two translate versions and the run is past
    step 600 of its final stretch; None before."""
    if len(set(callers.versions("translate"))) < 2:
        return None
    meta = client.metadata()
    training = meta["training"].get("translate", {})
    return meta if training.get("state") == "training" and training["step"] >= 600 else None


def _answer(client) -> int | None:
    try:
        return client.translate(["Veo el gato."])[0].model_version
    except ServingError:
        return None


def _answer_version(port: int) -> int | None:
    with Client(f"127.0.0.1:{port}", timeout=30) as client:
        return _answer(client)
