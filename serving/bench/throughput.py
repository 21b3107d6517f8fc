"""`make bench-serve`: what the gRPC path costs against calling the exported model directly.

In one run, for each task with an exported model:
  (a) in process: the newest SavedModel version called on batches of `--max-batch-size` texts
      (greedy translation) by as many threads at once as the server gives that task
      (`--batch-threads`), with the server's TensorFlow thread settings (`--tf-threads`),
      sentences/s — the anchor: the model alone, run the way the server runs it; measured
      before and after (b) and (c), and the mean taken, since this machine's speed drifts
      within minutes;
  (b) the gRPC server (`python -m serving`, dynamic batching on) loaded by 1, 8 and 32
      concurrent clients in a separate process (`serving.bench.loadgen`, one text per request, or
      `--texts-per-request`), sentences/s and p50/p90/p99 latency; then the same server's
      HTTP/JSON API at the fewest and the most clients (1 and 32),
and the ratio (b)/(a). Texts are the test split prepared by `make data` (or --texts-file).
Targets: ratio ≥ 0.8 at 32 clients; p50 ≤ 20 ms for one sentence, greedy, 1 client (judged
with one text per request).

Then (c) the same server code with a model that costs nothing (`NullPredictor`: no TensorFlow,
no batching) under the largest client count: F answers/s, what the rpc path alone (client and
server) gets from this machine. When the clients share the machine with the server, each
answer costs 1/F of it for the rpc path and at least 1/A for the model (A = the anchor), so
the ratio cannot exceed F / (A + F): the ceiling printed beside the ratio.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from seq2seq.answers import ClassificationAnswer, TranslationAnswer
from serving.server.batching import BatchingOptions
from serving.server.config import ServerSection, parse_threads
from serving.server.errors import Limits

ROOT = Path(__file__).resolve().parents[2]  # the repository
TEST_SPLITS = {
    "translate": ("data/prepared/translate/tatoeba_spa_eng/test.tsv", "source"),
    "classify": ("data/prepared/classify/sentiment/test.tsv", "text"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _texts(task: str, texts_file: str | None, limit: int) -> list[str]:
    if texts_file:
        try:
            lines = Path(texts_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise SystemExit(f"error: cannot read --texts-file {texts_file}: {err}") from None
        texts = [line.strip() for line in lines if line.strip()]
    else:
        path, column = TEST_SPLITS[task]
        if not Path(path).exists():
            raise SystemExit(f"error: {path} is missing: run `make data` (or pass --texts-file)")
        with open(path, encoding="utf-8", newline="") as f:
            texts = [
                row[column] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            ]
    if not texts:
        raise SystemExit(f"error: no {task} texts to benchmark with")
    # A seeded random sample, in random order: test splits can be sorted (Tatoeba is, by
    # length), and batches of neighbours would make the in-process anchor unfairly cheap.
    return random.Random(0).sample(texts, min(limit, len(texts)))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def in_process(
    model_path: Path, texts: list[str], batch: int, seconds: float, callers: int = 1
) -> dict:
    """Sentences/s of the exported model called directly on batches of `batch` texts by
    `callers` threads at once (as the server's batcher threads call it)."""
    from seq2seq.inference import ExportedModel

    model = ExportedModel(model_path)
    model.warm_up()
    runner = model.runner
    if model.task == "translate":
        greedy = runner.defaults.override(beam_size=1)  # as the load generator asks

    def call(chunk):
        if model.task == "translate":
            runner.run(chunk, greedy, batch_size=None)
        else:
            runner.classify(chunk, batch_size=None)

    for i in range(3):  # warm up on real lengths
        call(texts[i * batch : (i + 1) * batch] or texts[:batch])
    done = [0] * callers
    start = time.perf_counter()

    def caller(c: int) -> None:
        i = c * 7919  # each caller walks the texts from its own offset
        while time.perf_counter() - start < seconds:
            chunk = [texts[(i + k) % len(texts)] for k in range(batch)]
            call(chunk)
            done[c] += len(chunk)
            i += batch

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    version = model.version
    model.release()
    return {"sentences_per_s": sum(done) / elapsed, "version": version, "callers": callers}


class _Echo(NamedTuple):  # a hypothesis as the servicer reads it
    text: str
    score: float


class NullPredictor:
    """A predictor whose model costs nothing: each translation is the source text, each
    classification the same two labels. The server around it is the real one (servicer,
    protobuf, interceptors, thread pool) minus batching and TensorFlow."""

    limits = Limits()

    def translate(self, texts, **_options):
        return [TranslationAnswer([_Echo(text, 0.0)], None, (), None) for text in texts], 0

    def classify(self, texts, **_options):
        return [ClassificationAnswer("pos", {"neg": 0.25, "pos": 0.75}, (), None) for _ in texts], 0

    def metadata(self, task=None):
        return []


def serve_null(port: int) -> None:
    """Runs the gRPC server on `port` with NullPredictor until killed."""
    from serving.server import config as serving_config
    from serving.server.main import build_server

    server, bound, _ = build_server(
        NullPredictor(), serving_config.load(None, {"server.port": port})
    )
    server.start()
    print(f"null server listening on 127.0.0.1:{bound}", flush=True)
    server.wait_for_termination()


def _threads_flag(threads: int | dict[str, int]) -> str:
    """batching.threads as `--batch-threads` takes it."""
    if isinstance(threads, dict):
        return ",".join(f"{task}={n}" for task, n in threads.items())
    return str(threads)


class Server:
    """A server in a child process, `python <module_args> --port <free port>`, until stop();
    `env` is added to this process's environment for it."""

    def __init__(self, module_args: list[str], env: dict | None = None):
        self.port = _free_port()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **(env or {})}
        command = [*module_args, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [sys.executable, *command],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            if "listening on" in line:
                # Keep reading its output, so that a full pipe never blocks the server.
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()
                return
        raise SystemExit("error: the server did not start:\n" + "".join(lines[-20:]))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _load(target, n: int, task: str, texts_path: Path, seconds: float, k: int = 1) -> dict:
    """`serving.bench.loadgen` with n clients, k texts per request, against `target` (a port on
    127.0.0.1 for gRPC, or an http:// URL), in a child process."""
    if isinstance(target, int):
        target = f"127.0.0.1:{target}"
    out = subprocess.run(
        [sys.executable, "-m", "serving.bench.loadgen", "--target", target,
         "--clients", str(n), "--seconds", str(seconds), "--task", task,
         "--texts-file", str(texts_path), "--texts-per-request", str(k)],
        capture_output=True, text=True, cwd=ROOT, timeout=seconds * 4 + 120,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"error: the load generator failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.bench", description=__doc__.split("\n")[0])
    p.add_argument("--null-server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)  # with --null-server
    p.add_argument("--model-dir", default="models")
    p.add_argument("--tasks", default="translate,classify")
    p.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per point")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-us", type=int, default=2000)
    p.add_argument(
        "--batch-threads",
        type=parse_threads,
        default=BatchingOptions().threads,
        help="model calls at once per task, in the server and in process: N, or "
        "translate=2,classify=1 (the server's default)",
    )
    p.add_argument(
        "--tf-threads",
        type=int,
        default=ServerSection().tf_threads,
        help="TensorFlow threads per model call, in both (0: TensorFlow's default)",
    )
    p.add_argument(
        "--texts-per-request",
        type=int,
        default=1,
        help="texts each client sends per request (the targets are judged at 1)",
    )
    p.add_argument("--texts", type=int, default=2000, help="texts taken from the test split")
    p.add_argument("--texts-file", default=None, help="one text per line, instead of test splits")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.null_server:  # internal: the child process of step (c)
        serve_null(args.port)
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not ServerSection().onednn:  # the anchor runs TensorFlow as the server does
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or not set(tasks) <= {"translate", "classify"} or len(set(tasks)) < len(tasks):
        p.error(f"--tasks must list translate and/or classify once each, got {args.tasks!r}")
    try:
        clients = [int(c) for c in args.clients.split(",") if c]
    except ValueError:
        clients = []
    if not clients or min(clients) < 1:
        p.error(f"--clients must list client counts ≥ 1, e.g. 1,8,32; got {args.clients!r}")
    if not args.seconds > 0:
        p.error(f"--seconds must be > 0, got {args.seconds}")
    for flag, value, least in (
        ("--max-batch-size", args.max_batch_size, 1),
        ("--max-wait-us", args.max_wait_us, 0),
        ("--texts", args.texts, 1),
        ("--texts-per-request", args.texts_per_request, 1),
        ("--tf-threads", args.tf_threads, 0),
    ):
        if value < least:
            p.error(f"{flag} must be ≥ {least}, got {value}")
    if args.texts_file and not os.path.isfile(args.texts_file):
        p.error(f"--texts-file {args.texts_file}: no such file")
    model_dir = Path(args.model_dir).resolve()  # the server child runs from the repository

    import tensorflow as tf

    from seq2seq.export_format import versions
    from serving.server.predictor import set_tf_threads

    try:
        batching = BatchingOptions(threads=args.batch_threads)
    except ValueError as err:
        p.error(str(err).replace("batching.threads", "--batch-threads"))
    set_tf_threads(args.tf_threads, batching)
    tf.config.set_visible_devices([], "GPU")
    found = {t: versions(model_dir / t) for t in tasks}
    missing = [t for t, v in found.items() if not v]
    if missing:
        raise SystemExit(
            f"error: no exported {', '.join(missing)} model under {model_dir}/: run `make serve` "
            f"once (or make export-{missing[0]})"
        )
    print(f"machine: {os.cpu_count()} CPU cores, {_cpu_name()}; TensorFlow {tf.__version__}, CPU")
    print(
        f"batching: max_batch_size {args.max_batch_size}, max_wait_us {args.max_wait_us}, "
        f"model calls at once {_threads_flag(batching.threads)}, "
        f"{args.tf_threads or 'default'} TensorFlow "
        f"thread(s) per call (the same in process and in the server); "
        f"{args.seconds:g} s per point; {args.texts_per_request} text(s) per request"
    )
    results = {task: {"in_process": {}, "grpc": [], "http": []} for task in tasks}
    with_texts = {task: _texts(task, args.texts_file, args.texts) for task in tasks}
    anchors: dict[str, list[float]] = {task: [] for task in tasks}

    def anchor(task: str, when: str) -> None:
        a = in_process(
            model_dir / task / str(found[task][-1]),
            with_texts[task],
            args.max_batch_size,
            args.seconds,
            batching.threads_for(task),
        )
        anchors[task].append(a["sentences_per_s"])
        results[task]["in_process"] = {**a, "runs": anchors[task]}
        print(f"{task} v{a['version']}: in process ({when}), batches of {args.max_batch_size}, "
              f"{a['callers']} caller(s): {a['sentences_per_s']:.1f} sentences/s",
              flush=True)  # fmt: skip

    for task in tasks:
        anchor(task, "before")
    http_port = _free_port()
    server = Server(
        ["-m", "serving", "--model-dir", str(model_dir), "--poll-seconds", "0",
         "--http-port", str(http_port),
         "--max-batch-size", str(args.max_batch_size), "--max-wait-us", str(args.max_wait_us),
         "--batch-threads", _threads_flag(batching.threads), "--tf-threads", str(args.tf_threads)]
    )  # fmt: skip
    texts_paths = {}
    k = args.texts_per_request
    try:
        for task in tasks:
            texts_paths[task] = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-serve-{task}.txt"
            texts_paths[task].write_text("\n".join(with_texts[task]) + "\n", encoding="utf-8")
            for n in clients:
                b = _load(server.port, n, task, texts_paths[task], args.seconds, k)
                results[task]["grpc"].append(b)
                print(f"{task}: gRPC {n:>2} clients: {b['sentences_per_s']:8.1f} sentences/s  "
                      f"p50 {b['p50_ms']:6.1f} ms  p99 {b['p99_ms']:6.1f} ms  "
                      f"errors {b['errors'] or 0}", flush=True)  # fmt: skip
            for n in sorted({min(clients), max(clients)}):
                url = f"http://127.0.0.1:{http_port}"
                b = _load(url, n, task, texts_paths[task], args.seconds, k)
                results[task]["http"].append(b)
                print(f"{task}: HTTP {n:>2} clients: {b['sentences_per_s']:8.1f} sentences/s  "
                      f"p50 {b['p50_ms']:6.1f} ms  p99 {b['p99_ms']:6.1f} ms  "
                      f"errors {b['errors'] or 0}", flush=True)  # fmt: skip
    finally:
        server.stop()

    # (c) the rpc path alone, at the largest client count: the ceiling of the ratio.
    null = Server(["-m", "serving.bench", "--null-server"])
    try:
        for task in tasks:
            c = _load(null.port, max(clients), task, texts_paths[task], args.seconds, k)
            results[task]["rpc_alone"] = c
            print(f"{task}: rpc path alone (model costing nothing), {max(clients)} clients: "
                  f"{c['sentences_per_s']:8.1f} answers/s", flush=True)  # fmt: skip
    finally:
        null.stop()

    # The anchor again: this machine drifts, so (a) is the mean of a run before and one after.
    for task in tasks:
        anchor(task, "after")
        a = sum(anchors[task]) / len(anchors[task])
        results[task]["in_process"]["sentences_per_s"] = a
        for b in results[task]["grpc"] + results[task]["http"]:
            b["ratio"] = b["sentences_per_s"] / a
        f = results[task]["rpc_alone"]["sentences_per_s"]
        results[task]["rpc_alone"]["ceiling"] = f / (a + f)

    print("\nsummary (ratio = gRPC sentences/s ÷ in-process sentences/s, same run: the mean of")
    print("in-process runs before and after the gRPC points)")
    print("ceiling = F / (A + F), F = answers/s of the rpc path alone, A = in-process sentences/s:")
    print("the most the ratio can be while clients and server share this machine's cores")
    print(f"{'task':<10} {'api':<5} {'clients':>7} {'sent/s':>9} {'ratio':>6} {'p50 ms':>7} "
          f"{'p99 ms':>7}")  # fmt: skip
    for task in tasks:
        a = results[task]["in_process"]["sentences_per_s"]
        runs = " and ".join(f"{x:.1f}" for x in anchors[task])
        print(f"{task:<10} {'':<5} {'in-proc':>7} {a:9.1f} {1:6.2f} {'':>7} {'':>7}  "
              f"(mean of {runs})")  # fmt: skip
        alone = results[task]["rpc_alone"]
        note = f"(rpc path alone, {alone['clients']} clients; ceiling {alone['ceiling']:.2f})"
        print(f"{task:<10} {'gRPC':<5} {'no-model':>7} {alone['sentences_per_s']:9.1f} "
              f"{'':>6} {alone['p50_ms']:7.1f} {alone['p99_ms']:7.1f}  {note}")  # fmt: skip
        for api, rows in (("gRPC", results[task]["grpc"]), ("HTTP", results[task]["http"])):
            for b in rows:
                print(f"{task:<10} {api:<5} {b['clients']:>7} {b['sentences_per_s']:9.1f} "
                      f"{b['ratio']:6.2f} {b['p50_ms']:7.1f} {b['p99_ms']:7.1f}")  # fmt: skip
    verdicts = []
    for task in tasks:
        by_n = {b["clients"]: b for b in results[task]["grpc"]}
        if 32 in by_n:
            r = by_n[32]["ratio"]
            met = "met" if r >= 0.8 else "NOT met"
            if k > 1:
                met = f"judged at 1 text per request, not {k}"
            ceiling = results[task]["rpc_alone"]["ceiling"]
            verdicts.append(
                f"{task} ratio at 32 clients {r:.2f} (target ≥ 0.8: {met}; ceiling on this "
                f"machine {ceiling:.2f}, reached {r / ceiling:.0%} of it)"
            )
        if task == "translate" and 1 in by_n and k == 1:
            p50 = by_n[1]["p50_ms"]
            met = "met" if p50 <= 20 else "NOT met"
            verdicts.append(f"translate p50, 1 client, greedy {p50:.1f} ms (target ≤ 20: {met})")
    print("\n".join(verdicts))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
