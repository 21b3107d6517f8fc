"""`make bench-hostile`: small requests' latency and the server's memory while the heaviest
admitted requests, with short deadlines, keep arriving — over gRPC, then over the HTTP/JSON API.

In one run, against a server started here (`python -m serving`, its default settings, or
`--config`, HTTP on), on the newest exported translator, for each API in turn (both the small
and the heavy clients speak it; over HTTP the deadline is the X-Request-Timeout-Ms header):
  1. baseline: `--small-clients` (32) clients, each sending one-text greedy translations of test
     sentences, for `--seconds` (30): p50 / p99 latency;
  2. hostile: the same small load, while `--heavy-clients` (2) clients send the heaviest requests
     the server admits (its own limits, read from its metadata: beam max_beam_size, n_best
     max_n_best, max_output_length steps, and texts up to limits.max_request_cost — one client
     sends 64 short texts, the other texts of max_text_chars characters) with a `--deadline-ms`
     (300) deadline, for the same time;
  3. the server's resident memory (VmRSS of its process, sampled every 20 ms): before (idle, after
     a warm-up), the peak during 1 and 2, and after (idle, `--settle` seconds after the load),
     against its memory budget (server.memory_budget_mib).
Target: the small requests' p99 under 2 at most 3 × their p99 in 1; peak RSS within the budget.
Clients run in child processes (`serving.bench.loadgen`), so the server's process is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from serving.bench.throughput import ROOT, Server, _texts
from serving.server.memory import MiB, rss_bytes


class RssSampler:
    """Samples a process's RSS every `every` seconds in a thread; `peak()` since the last reset."""

    def __init__(self, pid: int, every: float = 0.02):
        self.pid, self.every = pid, every
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            value = rss_bytes(self.pid)
            with self._lock:
                self._peak = max(self._peak, value)

    def peak(self) -> int:
        with self._lock:
            return self._peak

    def reset(self) -> None:
        with self._lock:
            self._peak = rss_bytes(self.pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def heavy_texts(export: Path, texts: list[str], limits: dict) -> tuple[list[str], list[str], int]:
    """Two sets of texts for the heaviest admitted requests at beam max_beam_size and
    max_output_length steps: 64 (max_texts) short texts whose pieces fit max_request_cost
    together, in any 64 in a row; and long texts (joined sentences of up to the model's
    max_input_tokens pieces and max_text_chars characters: longer ones are refused), as many
    per request as fit. Returns (short texts, long texts, long texts per request)."""
    import sentencepiece as spm

    meta = json.loads((export / "assets.extra" / "metadata.json").read_text())
    sp = spm.SentencePieceProcessor(model_file=str(export / "assets.extra" / "source.spm"))
    cap = meta["max_input_tokens"]  # the model reads no more pieces of a text than this

    def pieces(text):
        return len(sp.encode(text))

    per_step = limits["max_beam_size"] * limits["max_output_length"]
    budget = limits["max_request_cost"] // per_step  # source pieces one request may hold
    n_short = limits["max_texts"]
    most = budget // n_short  # pieces per short text, so that any max_texts in a row fit
    if most < 1:
        raise SystemExit(f"error: max_request_cost {limits['max_request_cost']} admits no request")
    short = [t for t in texts if pieces(t) == most] or [t for t in texts if pieces(t) <= most]
    long, current = [], ""
    for t in (t for t in texts if pieces(t) <= cap):
        joined = f"{current} {t}".strip()
        if len(joined) > limits["max_text_chars"] or pieces(joined) > cap:
            long.append(current)
            joined = t
        current = joined
    n_long = max(1, min(limits["max_texts"], budget // max(pieces(t) for t in long)))
    return short, long, n_long


def _loadgen(target, texts_path, clients, seconds, k=1, extra=()) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "serving.bench.loadgen", "--target", target,
         "--clients", str(clients), "--seconds", str(seconds), "--task", "translate",
         "--texts-file", str(texts_path), "--texts-per-request", str(k), "--warmup", "2",
         *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def _result(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"error: the {what} load generator failed:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m serving.bench.hostile", description=__doc__.split("\n")[0]
    )
    p.add_argument("--model-dir", default="models")
    p.add_argument("--config", default=None, help="the server's config file (default: none)")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of each phase")
    p.add_argument("--small-clients", type=int, default=32)
    p.add_argument("--heavy-clients", type=int, default=2, help="half send short, half long")
    p.add_argument("--deadline-ms", type=float, default=300.0, help="the heavy requests'")
    p.add_argument("--settle", type=float, default=5.0, help="idle seconds before 'after' RSS")
    p.add_argument("--preload", default="", help="a malloc library for the server (LD_PRELOAD)")
    p.add_argument("--texts", type=int, default=2000, help="test sentences to draw from")
    p.add_argument("--texts-file", default=None, help="sentences, one a line (default: test split)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if not args.seconds > 0 or args.small_clients < 1 or args.heavy_clients < 0:
        p.error("--seconds must be > 0, --small-clients ≥ 1, --heavy-clients ≥ 0")
    if not args.deadline_ms > 0 or args.settle < 0:
        p.error("--deadline-ms must be > 0 and --settle ≥ 0")
    if args.preload and not Path(args.preload).is_file():
        p.error(f"--preload {args.preload}: no such file")
    from seq2seq.export_format import versions
    from serving.client import Client

    model_dir = Path(args.model_dir).resolve()
    found = versions(model_dir / "translate")
    if not found:
        raise SystemExit(f"error: no exported translate model under {model_dir}/: run make serve")
    export = model_dir / "translate" / str(found[-1])
    sentences = _texts("translate", args.texts_file, args.texts)
    from serving.bench.throughput import _free_port

    http_port = _free_port()
    flags = ["-m", "serving", "--model-dir", str(model_dir), "--poll-seconds", "0",
             "--http-port", str(http_port)]  # fmt: skip
    if args.config:
        flags += ["--config", args.config]
    env = {"LD_PRELOAD": args.preload} if args.preload else {}
    server = Server(flags, env)
    rss = RssSampler(server.proc.pid)
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    try:
        with Client(f"127.0.0.1:{server.port}") as c:
            limits = c.metadata("translate")["limits"]
            budget_mib = limits.get("memory_budget_mib", 0)
            for i in range(0, 64, 4):  # warm up the small path
                c.translate(sentences[i : i + 4], beam_size=1)
        short, long, n_long = heavy_texts(export, sentences, limits)
        paths = {}
        for name, lines in (("small", sentences), ("short", short), ("long", long)):
            paths[name] = tmp / f"bench-hostile-{name}.txt"
            paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
        heavy = ["--beam-size", str(limits["max_beam_size"]),
                 "--n-best", str(min(limits["max_n_best"], limits["max_beam_size"])),
                 "--max-length", str(limits["max_output_length"]),
                 "--deadline-ms", str(args.deadline_ms)]  # fmt: skip
        time.sleep(1.0)
        before = rss_bytes(server.proc.pid)
        print(f"server RSS idle after warm-up: {before / MiB:.0f} MiB (budget "
              f"{budget_mib or 'none'} MiB); {args.small_clients} small clients, "
              f"{args.heavy_clients} heavy (cost ≤ {limits['max_request_cost']:,}: "
              f"{limits['max_texts']} short texts or {n_long} of ~{limits['max_text_chars']} "
              f"characters, beam {limits['max_beam_size']}, {limits['max_output_length']} "
              f"steps, deadline {args.deadline_ms:g} ms), {args.seconds:g} s each phase",
              flush=True)  # fmt: skip
        targets = {"gRPC": f"127.0.0.1:{server.port}", "HTTP": f"http://127.0.0.1:{http_port}"}
        rows, peak = {}, 0
        for api, target in targets.items():
            rss.reset()
            base = _result(_loadgen(target, paths["small"], args.small_clients, args.seconds),
                           "small")  # fmt: skip
            peak = max(peak, rss.peak())
            print(f"{api} baseline: small p50 {base['p50_ms']:.1f} ms  p99 {base['p99_ms']:.1f} "
                  f"ms  {base['sentences_per_s']:.1f} sentences/s  errors {base['errors'] or 0}",
                  flush=True)  # fmt: skip
            rss.reset()
            heavies = []
            for i in range(args.heavy_clients):
                path, k = (
                    (paths["short"], limits["max_texts"]) if i % 2 else (paths["long"], n_long)
                )
                heavies.append(_loadgen(target, path, 1, args.seconds + 2, k, heavy))
            time.sleep(1.0)  # the heavy load is on before the small one is measured
            small = _result(_loadgen(target, paths["small"], args.small_clients, args.seconds),
                            "small")  # fmt: skip
            heavy_out = [_result(h, "heavy") for h in heavies]
            peak = max(peak, rss.peak())
            rows[api] = {"baseline": base, "hostile": small, "heavy": heavy_out,
                         "p99_ratio": small["p99_ms"] / base["p99_ms"]}  # fmt: skip
            sent = sum(h["requests"] + sum(h["errors"].values()) for h in heavy_out)
            expired = sum(h["errors"].get("DEADLINE_EXCEEDED", 0) for h in heavy_out)
            other = {k: v for h in heavy_out for k, v in h["errors"].items()
                     if k != "DEADLINE_EXCEEDED"}  # fmt: skip
            rows[api]["heavy_other_errors"] = other
            print(f"{api} hostile:  small p50 {small['p50_ms']:.1f} ms  p99 {small['p99_ms']:.1f} "
                  f"ms  {small['sentences_per_s']:.1f} sentences/s  errors {small['errors'] or 0}; "
                  f"heavy requests {sent} ({expired} DEADLINE_EXCEEDED, "
                  f"{sent - expired - sum(other.values())} answered in time, other errors "
                  f"{other or 0})", flush=True)  # fmt: skip
        time.sleep(args.settle)
        after = rss_bytes(server.proc.pid)
    finally:
        rss.stop()
        server.stop()
    print(f"{'API':<6}{'small p99 alone':>17}{'beside heavy':>14}{'ratio':>8}  target ≤ 3")
    for api, row in rows.items():
        ratio = row["p99_ratio"]
        print(f"{api:<6}{row['baseline']['p99_ms']:>14.1f} ms{row['hostile']['p99_ms']:>11.1f} ms"
              f"{ratio:>8.2f}  {'met' if ratio <= 3 else 'NOT met'}")  # fmt: skip
    within = f"within the budget {budget_mib} MiB" if budget_mib else "no budget set"
    if budget_mib and peak > budget_mib * MiB:
        within = f"OVER the budget {budget_mib} MiB"
    preload = f"; LD_PRELOAD={args.preload}" if args.preload else ""
    print(f"server RSS: before {before / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, after "
          f"{after / MiB:.0f} MiB ({within}){preload}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({
            **rows,
            "rss_mib": {"before": before / MiB, "peak": peak / MiB, "after": after / MiB},
            "budget_mib": budget_mib, "preload": args.preload}, indent=2))  # fmt: skip
    bad = (budget_mib and peak > budget_mib * MiB) or any(
        row["p99_ratio"] > 3 or row["heavy_other_errors"] or row["hostile"]["errors"]
        for row in rows.values()
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
