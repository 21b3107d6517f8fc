"""`make bench-live`: how promptly a running `make serve` answers while its models train behind
it. One client sends one-sentence translations back to back; in alternating windows the training
process runs, or is paused (SIGSTOP, then SIGCONT): the paused windows are the anchor measured in
the same run. Prints p50 / p99 of both and their ratios.

    python -m serving.bench.live [--target 127.0.0.1:50051] [--model-dir models] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np

from serving.client import Client, ServingError

SENTENCE = "¿Dónde está la estación de tren?"


def trainer_pid(model_dir: Path) -> tuple[int, str]:
    """The process training a task of `model_dir` on this host, and the task."""
    for task in ("translate", "classify"):
        try:
            status = json.loads((model_dir / task / "training.json").read_text())
        except (OSError, ValueError):
            continue
        if status.get("state") == "training" and status.get("host") == socket.gethostname():
            pid = int(status["pid"])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            return pid, task
    raise SystemExit(
        f"error: no training is running for {model_dir}: start `make serve` on a fresh "
        "repository (or one whose run is unfinished) and run this while it trains"
    )


def window(client: Client, seconds: float, text: str) -> list[float]:
    """Latencies (ms) of back-to-back one-sentence translations for `seconds`."""
    found = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            client.translate([text])
        except ServingError as err:
            raise SystemExit(f"error: {err.code.name}: {err.details}") from None
        found.append(1000 * (time.perf_counter() - start))
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="the running server")
    p.add_argument("--model-dir", default="models", help="its model repository")
    p.add_argument("--rounds", type=int, default=3, help="paused/running window pairs")
    p.add_argument("--seconds", type=float, default=10.0, help="each window's length")
    p.add_argument("--text", default=SENTENCE, help="the sentence sent")
    args = p.parse_args(argv)
    pid, task = trainer_pid(Path(args.model_dir))
    print(f"training process {pid} ({task}); {args.rounds} × ({args.seconds:.0f} s paused, "
          f"{args.seconds:.0f} s training) of one-sentence translations")  # fmt: skip
    paused, running = [], []
    with Client(args.target, timeout=60) as client:
        window(client, 2.0, args.text)  # warm the connection and the model
        for _ in range(args.rounds):
            os.kill(pid, signal.SIGSTOP)
            try:
                paused += window(client, args.seconds, args.text)
            finally:
                os.kill(pid, signal.SIGCONT)
            running += window(client, args.seconds, args.text)
    rows = []
    for name, values in (("training paused (anchor)", paused), ("training running", running)):
        p50, p99 = np.percentile(values, [50, 99])
        rows.append((name, len(values), p50, p99))
        print(f"{name:<26} {len(values):6d} requests   p50 {p50:8.1f} ms   p99 {p99:8.1f} ms")
    (_, _, a50, a99), (_, _, b50, b99) = rows
    print(f"ratio running / paused: p50 {b50 / a50:.2f}x, p99 {b99 / a99:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
