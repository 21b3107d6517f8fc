"""`make bench-replicas`: Envoy in front of 1 and of 2 replicas against the server alone.

Over the exported models (`--model-dir`), for each task, Envoy (deploy/envoy.yaml) in front of
1 replica, then of 2 (`python -m serving.replicas`), loaded by `serving.bench.loadgen` in a
separate process: gRPC at 1 and 32 clients and HTTP at 32, one text per request, greedy. At
each point the load goes alternately through Envoy and straight at replica 0 — the server
alone, the other replica idle — twice each (direct, Envoy, Envoy, direct: this machine's drift
within minutes cancels), so every ratio (sentences/s through Envoy ÷ the server alone's) is
measured in one setup, minutes apart at most. Then the proxy's own cost: a server whose model
costs nothing (serving.bench's NullPredictor) at 1 client, directly and through Envoy; the p50
difference is the latency Envoy adds to a request.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serving.bench.throughput import ROOT, _cpu_name, _free_port, _load, _texts
from serving.replicas import (
    Ports,
    envoy_command,
    free_port_block,
    healthy_hosts,
    load_template,
    render,
    replica_ports,
)

LOADS = (("gRPC", 1), ("gRPC", 32), ("HTTP", 32))


class Started:
    """A child process running until stop(), once its output says `ready` (a line start)."""

    def __init__(self, cmd: list[str], ready: str, timeout: float = 300):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT
        )
        lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:  # read to the end: a full pipe would block the child
                lines.append(line)
                if line.startswith(ready):
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"error: {cmd[2]} did not start:\n" + "".join(lines[-20:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def all_in_rotation(admin: int, ports: list[Ports]) -> bool:
    hosts = healthy_hosts(admin) or {}
    grpc, http = hosts.get("seq2seq_grpc", set()), hosts.get("seq2seq_http", set())
    return all(p.grpc in grpc and p.http in http for p in ports)


def mean_point(runs: list[dict]) -> dict:
    return {k: sum(r[k] for r in runs) / len(runs) for k in ("sentences_per_s", "p50_ms", "p99_ms")}


def errors(pair: dict) -> str:
    found = [f"{w}: {r['errors']}" for w, runs in pair.items() for r in runs if r["errors"]]
    return f"  errors {'; '.join(found)}" if found else ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.bench.replicas", description=__doc__)
    p.add_argument("--model-dir", default="models")
    p.add_argument("--tasks", default="translate,classify")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per point")
    p.add_argument("--texts", type=int, default=2000, help="texts taken from the test split")
    p.add_argument("--texts-file", default=None, help="one text per line, instead of test splits")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or not set(tasks) <= {"translate", "classify"}:
        p.error(f"--tasks must list translate and/or classify, got {args.tasks!r}")
    if not args.seconds > 0:
        p.error(f"--seconds must be > 0, got {args.seconds}")
    if args.texts_file and not os.path.isfile(args.texts_file):
        p.error(f"--texts-file {args.texts_file}: no such file")
    model_dir = Path(args.model_dir).resolve()
    from seq2seq.export_format import versions

    missing = [t for t in tasks if not versions(model_dir / t)]
    if missing:
        raise SystemExit(f"error: no exported {missing[0]} model under {model_dir}/: make serve")
    print(
        f"machine: {os.cpu_count()} CPU cores, {_cpu_name()}; {args.seconds:g} s per point; "
        "one text per request, greedy; server defaults (batching, threads)",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    texts = {}
    for task in tasks:
        texts[task] = work / f"{task}.txt"
        lines = _texts(task, args.texts_file, args.texts)
        texts[task].write_text("\n".join(lines) + "\n", encoding="utf-8")
    server_args = ["--model-dir", str(model_dir), "--poll-seconds", "0", "--drain-seconds", "0"]
    results: dict[str, dict] = {task: {} for task in tasks}

    def run(replicas: int) -> None:
        """Envoy in front of `replicas`; each load point twice, alternately through Envoy and
        straight at replica 0 (the others idle): the server alone, measured beside it."""
        name = f"Envoy + {replicas} replica{'s' if replicas > 1 else ''}"
        grpc_port, http_port = _free_port(), _free_port()
        first, admin = free_port_block(3 * replicas), _free_port()
        started = Started(
            [sys.executable, "-m", "serving.replicas", "--replicas", str(replicas),
             "--first-port", str(first), "--admin-port", str(admin), "--",
             *server_args, "--port", str(grpc_port), "--http-port", str(http_port)],
            "seq2seq replicas listening on",
        )  # fmt: skip
        ports = replica_ports(first, replicas)
        alone = ports[0]
        try:
            # it announces itself once one replica is in rotation: wait for every one
            deadline = time.monotonic() + 300
            while not all_in_rotation(admin, ports):
                if time.monotonic() > deadline:
                    raise SystemExit(f"error: not every replica came into rotation: {ports}")
                time.sleep(0.2)
            for task in tasks:
                for api, n in LOADS:
                    key = f"{api} {n}"
                    pair = {"direct": [], "envoy": []}
                    for which in ("direct", "envoy", "envoy", "direct"):  # drift cancels
                        g, h = (alone.grpc, alone.http) if which == "direct" else (
                            grpc_port, http_port)  # fmt: skip
                        target = g if api == "gRPC" else f"http://127.0.0.1:{h}"
                        pair[which].append(_load(target, n, task, texts[task], args.seconds))
                    point = {w: mean_point(runs) for w, runs in pair.items()}
                    point["ratio"] = point["envoy"]["sentences_per_s"] / point["direct"][
                        "sentences_per_s"]  # fmt: skip
                    results[task].setdefault(name, {})[key] = point
                    d, e = point["direct"], point["envoy"]
                    print(f"{task:<9} {name:<18} {key:<8} server alone {d['sentences_per_s']:6.1f}"
                          f"/s p50 {d['p50_ms']:6.1f} ms | through Envoy "
                          f"{e['sentences_per_s']:6.1f}/s p50 {e['p50_ms']:6.1f} ms | ratio "
                          f"{point['ratio']:.2f}{errors(pair)}", flush=True)  # fmt: skip
        finally:
            started.stop()

    run(1)
    run(2)

    # the proxy alone: a model that costs nothing, at 1 client, directly and through Envoy
    null_port, envoy_port, admin = _free_port(), _free_port(), _free_port()
    null = Started([sys.executable, "-m", "serving.bench", "--null-server", "--port",
                    str(null_port)], "null server listening on")  # fmt: skip
    config = render(load_template(), [Ports(null_port, 0, 0)], ("127.0.0.1", envoy_port), None,
                    admin)  # fmt: skip
    (work / "envoy.json").write_text(json.dumps(config))
    envoy = subprocess.Popen(envoy_command(work / "envoy.json", admin), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    proxy = {}
    try:
        deadline = time.monotonic() + 60
        while not (healthy_hosts(admin) or {}).get("seq2seq_grpc"):
            if time.monotonic() > deadline:
                raise SystemExit("error: Envoy did not take the no-model server into rotation")
            time.sleep(0.2)
        for name, port in (("direct", null_port), ("Envoy", envoy_port), ("direct again",
                                                                          null_port)):  # fmt: skip
            proxy[name] = _load(port, 1, tasks[0], texts[tasks[0]], args.seconds)
    finally:
        envoy.terminate()
        envoy.wait()
        null.stop()

    print("\nsummary: sentences/s and p50 through Envoy; ratio = its sentences/s ÷ the server "
          "alone's, measured beside it in the same setup (alternately, twice each)")  # fmt: skip
    print(f"{'task':<9} {'setup':<19}" + "".join(f"{f'{a} {n}':>24}" for a, n in LOADS))
    for task in tasks:
        for name, points in results[task].items():
            cells = [f"{p['envoy']['sentences_per_s']:6.1f}/s {p['envoy']['p50_ms']:5.1f} ms "
                     f"{p['ratio']:5.2f}" for p in points.values()]  # fmt: skip
            print(f"{task:<9} {name:<19}" + "".join(f"{c:>24}" for c in cells))
    base = (proxy["direct"]["p50_ms"] + proxy["direct again"]["p50_ms"]) / 2
    added = proxy["Envoy"]["p50_ms"] - base
    print(f"\nthe proxy alone (a model costing nothing, 1 gRPC client): p50 {base:.2f} ms direct, "
          f"{proxy['Envoy']['p50_ms']:.2f} ms through Envoy: Envoy adds {added:.2f} ms "
          f"({proxy['Envoy']['sentences_per_s']:.0f} vs {proxy['direct']['sentences_per_s']:.0f} "
          "answers/s)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"tasks": results, "proxy": proxy}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
