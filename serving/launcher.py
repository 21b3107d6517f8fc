"""`make serve`: the server at once, and the training of its models going on behind it.

On a fresh clone there is no model yet: the server starts with none (its calls answer
UNAVAILABLE saying when a first version is expected) and the training runs behind it, in this
order, each step a `python -m seq2seq train --publish models/<task>` process:

1. the classifier until its first version (about a minute),
2. the translator until its first version (a short first stretch of its run),
3. the classifier to the end of its schedule,
4. the translator to the end of its schedule.

Every version a run exports is picked up by the server's hot reload; the final one, at the
schedule's last step, carries its test scores. The training processes run at a lower CPU
priority (nice 10), so that a request is answered promptly while they train.

Ctrl-C or SIGTERM stops both cleanly: the training writes a checkpoint at the step it reached
and the server drains. The next `make serve` serves the newest version at once and resumes the
unfinished run from its checkpoint (after a kill -9 too: from its last periodic checkpoint).
A task whose newest version is a final one, or one exported by hand, is not trained again.

With `--replicas N` (`make serve-replicas`) the server is N servers behind Envoy
(serving.replicas) over the same repository: every version the training exports reaches each.

The children are in process groups of their own (a terminal's Ctrl-C reaches only this process,
which passes exactly one signal on) and die with it if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from seq2seq import export_format as fmt
from seq2seq.config import ConfigError, load_config
from seq2seq.publish import set_state

NICE = 10  # the training's CPU priority below the server's
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # in the child, before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: a killed launcher leaves its children running


def _training_child() -> None:
    _die_with_parent()
    os.nice(NICE)


def needs_training(repository: Path) -> bool:
    """No version yet, or the newest is an intermediate version of a run still going on."""
    versions = fmt.versions(repository)
    if not versions:
        return True
    meta_path = repository / str(versions[-1]) / fmt.ASSETS / fmt.METADATA_FILE
    try:
        training = json.loads(meta_path.read_text()).get("training")
    except (OSError, ValueError, AttributeError):
        return False  # not ours to judge: served as it is
    return isinstance(training, dict) and not training.get("final", True)


class Launcher:
    def __init__(self, args, server_args: list[str]):
        self.args, self.server_args = args, server_args
        self.model_dir = Path(args.model_dir)
        self.stopping: int | None = None
        self.server: subprocess.Popen | None = None
        self.trainer: subprocess.Popen | None = None

    # --- the plan ---------------------------------------------------------------------------------

    def overrides(self, task: str) -> list[str]:
        """The `--set` items for `task`: all but those another task's name prefixes
        (`translate:train.max_steps=100` is the translator's alone)."""
        found = []
        for item in self.args.overrides:
            scope, colon, rest = item.partition(":")
            if not colon or "=" in scope:
                found.append(item)
            elif scope == task:
                found.append(rest)
        return found

    def config(self, task: str):
        overrides = self.overrides(task)
        if task == "classify":
            overrides.append(f"data.dataset={self.args.dataset}")
        return load_config(task, self.args.preset, self.args.config, overrides)

    def plan(self) -> list[tuple[str, bool]]:
        """(task, until its first version) in order, for the tasks that need training."""
        todo = [t for t in ("classify", "translate") if needs_training(self.model_dir / t)]
        first = [(t, True) for t in todo if not fmt.versions(self.model_dir / t)]
        return first + [(t, False) for t in todo]

    def train_command(self, task: str, until_first: bool) -> list[str]:
        cmd = [sys.executable, "-m", "seq2seq", "train", "--task", task]
        cmd += ["--preset", self.args.preset, "--no-progress"]
        if self.args.config:
            cmd += ["--config", self.args.config]
        for item in self.overrides(task):
            cmd += ["--set", item]
        if task == "classify":
            cmd += ["--dataset", self.args.dataset]
        cmd += ["--publish", str(self.model_dir / task)]
        return cmd + (["--until-first-version"] if until_first else [])

    def server_command(self) -> list[str]:
        """One server, or (--replicas N) N of them behind Envoy (serving.replicas)."""
        a = self.args
        if not a.replicas:
            return [sys.executable, "-m", "serving", *self.server_args]
        cmd = [sys.executable, "-m", "serving.replicas", "--replicas", str(a.replicas)]
        if a.first_port is not None:
            cmd += ["--first-port", str(a.first_port)]
        if a.admin_port is not None:
            cmd += ["--admin-port", str(a.admin_port)]
        return [*cmd, "--", *self.server_args]

    # --- running ----------------------------------------------------------------------------------

    def on_signal(self, signum, _frame) -> None:
        if self.stopping is not None:
            os.write(2, f"signal {signum} again: stopping everything now\n".encode())
            for child in (self.trainer, self.server):
                if child is not None and child.poll() is None:
                    child.kill()
            os._exit(128 + signum)
        self.stopping = signum
        for child in (self.trainer, self.server):
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    def relay(self, task: str, stream, log_path: Path) -> threading.Thread:
        """The training's output: into the run's train.log, and its lines on the console."""

        def run() -> None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a", encoding="utf-8") as log:
                for line in stream:
                    log.write(line)
                    log.flush()
                    print(f"[train {task}] {line.rstrip()}", flush=True)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def train(self, task: str, until_first: bool) -> bool:
        """One training step of the plan; False if it failed (its task is then left alone)."""
        cfg = self.config(task)
        log_path = cfg.run_dir / "train.log"
        what = "until its first version" if until_first else "to the end of its schedule"
        print(f"==> training the {task} model {what} (log: {log_path})", flush=True)
        self.trainer = subprocess.Popen(
            self.train_command(task, until_first),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            preexec_fn=_training_child,
            start_new_session=True,
        )
        if self.stopping is not None:  # a signal came while it started
            self.trainer.send_signal(self.stopping)
        relay = self.relay(task, self.trainer.stdout, log_path)
        code = self.trainer.wait()
        relay.join(timeout=5)
        if code == 0 or self.stopping is not None:
            return code == 0
        set_state(
            self.model_dir / task,
            task,
            cfg.run_dir,
            "failed",
            f"training stopped with an error (exit {code}): see {log_path}",
        )
        print(
            f"==> training the {task} model failed (exit {code}); the server goes on with the "
            f"versions it has. The log: {log_path}",
            flush=True,
        )
        return False

    def run(self) -> int:
        plan = self.plan()
        for task in dict.fromkeys(t for t, _ in plan):
            if not fmt.versions(self.model_dir / task):
                set_state(
                    self.model_dir / task,
                    task,
                    self.config(task).run_dir,
                    "queued",
                    "training starts after the classifier's first version"
                    if task == "translate"
                    else "training starts now",
                )
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)
        self.server = subprocess.Popen(
            self.server_command(),
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        if plan:
            print(
                "==> the server starts now; the models train behind it and each better version "
                "is served as it is exported (the web page shows the training)",
                flush=True,
            )
        failed: set[str] = set()
        for task, until_first in plan:
            if self.stopping is not None or self.server.poll() is not None:
                break
            if task in failed:
                continue
            if not self.train(task, until_first):
                failed.add(task)
        self.trainer = None
        if plan and self.stopping is None and self.server.poll() is None and not failed:
            print("==> training finished: the server serves the final versions", flush=True)
        code = self.server.wait()
        if self.stopping is None and code != 0:
            print(f"==> the server exited ({code})", file=sys.stderr, flush=True)
        return code if self.stopping is None else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m serving.launcher",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to the server (python -m serving).",
    )
    p.add_argument("--preset", default="default", help="training preset of both tasks")
    p.add_argument("--dataset", default="sentiment", help="the classifier's dataset")
    p.add_argument("--config", default=None, help="training YAML merged over the preset")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="[TASK:]SECTION.KEY=VALUE",
        help="a training setting for both tasks, or for one (translate:train.max_steps=100)",
    )
    p.add_argument("--model-dir", default="models", help="the model repository root")
    p.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="serve with N replicas behind Envoy (serving.replicas) instead of one server",
    )
    p.add_argument("--first-port", type=int, default=None, help="(replicas) their first port")
    p.add_argument("--admin-port", type=int, default=None, help="(replicas) Envoy's admin port")
    if argv is None:
        argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    server_args = ["--model-dir", args.model_dir, *argv[split + 1 :]]
    launcher = Launcher(args, server_args)
    try:
        launcher.plan()
        for task in ("classify", "translate"):
            launcher.config(task)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
