"""A load generator for a seq2seq server: N concurrent clients, K texts per request (1), over
gRPC or the HTTP/JSON API.

    python -m serving.bench.loadgen --target localhost:50051 --clients 32 --seconds 10 \
        --task translate --texts-file sentences.txt
    python -m serving.bench.loadgen --target http://localhost:8080 --clients 32 ...

Each client is a thread with its own channel (or keep-alive HTTP connection), sending the texts
of the file in turn (each client from a different offset), `--texts-per-request` at a time,
greedy decoding (or `--beam-size`, `--n-best`, `--max-length`), each request with a deadline
of `--deadline-ms` (gRPC's deadline; over HTTP the X-Request-Timeout-Ms header). After a
warm-up, it counts answered texts
and per-request latencies for `--seconds`, then prints one JSON line: protocol, clients,
texts_per_request, seconds, requests, sentences_per_s, p50_ms, p90_ms, p99_ms, errors (status →
count). Needs only grpcio and
protobuf (it uses serving.client) and the standard library, so it can run on another machine
than the server.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import ssl
import statistics
import sys
import threading
import time
import urllib.parse
from collections import Counter

from serving.client import Client, ServingError


class CallError(Exception):
    """A request that was answered with an error: `code` names it (a gRPC status name)."""

    def __init__(self, code: str, message: str = ""):
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class HttpCaller:
    """Calls POST /v1/<task> of the HTTP/JSON API over one keep-alive connection."""

    def __init__(
        self, base_url: str, task: str, token=None, tls_ca=None, timeout=60, decoding=None
    ):
        url = urllib.parse.urlsplit(base_url)
        if url.scheme == "https":
            tls = ssl.create_default_context(cafile=tls_ca)
            self._connection = http.client.HTTPSConnection(
                url.hostname, url.port, timeout=timeout + 5, context=tls
            )
        else:
            self._connection = http.client.HTTPConnection(
                url.hostname, url.port, timeout=timeout + 5
            )
        self._path = f"/v1/{task}"
        self._task = task
        self._decoding = {"beam_size": 1, **(decoding or {})}  # greedy unless told
        # the deadline travels with the request, as a gRPC client's does: the server answers 504
        # once it passes; the socket waits a little longer for that answer
        self._headers = {
            "Content-Type": "application/json",
            "X-Request-Timeout-Ms": str(max(1, round(timeout * 1000))),
        }
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def __call__(self, texts: list[str]) -> dict:
        body = {"texts": texts}
        if self._task == "translate":
            body.update(self._decoding)
        try:
            self._connection.request("POST", self._path, json.dumps(body), self._headers)
            response = self._connection.getresponse()
            data = response.read()
        except TimeoutError:
            self._connection.close()
            raise CallError("DEADLINE_EXCEEDED", "no answer within the timeout") from None
        except (OSError, http.client.HTTPException) as err:
            self._connection.close()  # reconnects on the next request
            raise CallError(f"CONNECTION ({type(err).__name__})") from None
        if response.status != 200:
            try:
                error = json.loads(data)["error"]
                code, message = error["status"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = f"HTTP {response.status}", data[:200].decode("utf-8", "replace")
            raise CallError(code, message)
        return json.loads(data)

    def close(self) -> None:
        self._connection.close()


@contextlib.contextmanager
def connect(target: str, task: str, decoding: dict | None = None, **client_options):
    """A function texts → answer for `target` (host:port for gRPC, http(s)://… for HTTP).
    `decoding`: translation options (beam_size, n_best, max_length); default greedy."""
    decoding = {"beam_size": 1, **(decoding or {})}
    if target.startswith(("http://", "https://")):
        caller = HttpCaller(
            target,
            task,
            client_options.get("token"),
            client_options.get("tls_ca"),
            client_options.get("timeout") or 60,
            decoding,
        )
        try:
            yield caller
        finally:
            caller.close()
        return
    with Client(target, retries=0, **client_options) as c:

        def call(texts):
            try:
                if task == "translate":  # greedy unless told: as the anchor of `serving.bench`
                    return c.translate(texts, **decoding)
                return c.classify(texts)
            except ServingError as err:
                raise CallError(err.code.name, err.details) from None

        yield call


def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0–100) by the nearest-rank method; NaN when there are none."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def run_load(
    target: str,
    texts: list[str],
    clients: int,
    seconds: float,
    task: str = "translate",
    warmup: float = 1.0,
    texts_per_request: int = 1,
    decoding: dict | None = None,
    **client_options,
) -> dict:
    """Runs the load; returns the summary dict printed by the CLI. `client_options` go to
    serving.client.Client (`timeout`: each request's deadline in seconds)."""
    if not texts:
        raise ValueError("no texts to send")
    if texts_per_request < 1:
        raise ValueError(f"texts_per_request must be ≥ 1; received {texts_per_request}")
    k = texts_per_request
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: Counter = Counter()
    lock = threading.Lock()
    # The clock starts once every client is connected (the barrier's action runs before any
    # is let go): a slow connect must not eat the measured window.
    clock: dict[str, float] = {}

    def start_clock() -> None:
        clock["start"] = time.monotonic() + warmup
        clock["end"] = clock["start"] + seconds

    ready = threading.Barrier(clients + 1, action=start_clock)
    failed: list[str] = []  # why a client could not start

    def client(i: int) -> None:
        with connect(target, task, decoding, **client_options) as call:
            try:
                call([texts[i % len(texts)]])  # connect before the clock starts
            except CallError as err:
                if err.code != "DEADLINE_EXCEEDED":  # (heavy requests may not fit their deadline)
                    failed.append(f"client {i}'s first request failed: {err}")
                    ready.abort()
                    return
            except Exception as err:  # reported by the caller, not lost in this thread
                failed.append(f"client {i}'s first request failed: {err}")
                ready.abort()  # the others (and the caller) stop waiting
                return
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                return
            start_at, end_at = clock["start"], clock["end"]
            n = i * 7919  # each client walks the texts from its own offset
            while True:
                sent = time.monotonic()
                if sent >= end_at:
                    return
                n += k
                try:
                    call([texts[(n + j) % len(texts)] for j in range(k)])
                except CallError as err:
                    with lock:
                        errors[err.code] += 1
                    continue
                done = time.monotonic()
                if sent >= start_at and done <= end_at:
                    latencies[i].append(done - sent)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        for t in threads:
            t.join()
        raise RuntimeError(failed[0] if failed else "a client failed to start") from None
    for t in threads:
        t.join()
    every = sorted(x for per_client in latencies for x in per_client)
    return {
        "task": task,
        "protocol": "http" if target.startswith(("http://", "https://")) else "grpc",
        "clients": clients,
        "texts_per_request": k,
        "seconds": seconds,
        "requests": len(every),
        "sentences_per_s": len(every) * k / seconds,
        "p50_ms": 1000 * percentile(every, 50),
        "p90_ms": 1000 * percentile(every, 90),
        "p99_ms": 1000 * percentile(every, 99),
        "mean_ms": 1000 * statistics.fmean(every) if every else float("nan"),
        "errors": dict(errors),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m serving.bench.loadgen", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--target", default="localhost:50051", help="host:port (gRPC) or http(s)://host:port"
    )
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load not counted")
    p.add_argument("--task", choices=["translate", "classify"], default="translate")
    p.add_argument("--texts-file", required=True, help="one text per line")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--beam-size", type=int, default=1, help="translation beam (1: greedy)")
    p.add_argument("--n-best", type=int, default=1, help="translation hypotheses per text")
    p.add_argument("--max-length", type=int, default=None, help="translation output tokens")
    p.add_argument(
        "--deadline-ms", type=float, default=60000, help="each request's deadline, milliseconds"
    )
    p.add_argument("--token", default=None)
    p.add_argument("--tls-ca", default=None)
    args = p.parse_args(argv)
    if args.clients < 1 or not args.seconds > 0 or args.texts_per_request < 1:
        p.error("--clients and --texts-per-request must be ≥ 1 and --seconds > 0")
    if not args.warmup >= 0:
        p.error(f"--warmup must be ≥ 0 seconds, got {args.warmup}")
    if not args.deadline_ms > 0:
        p.error(f"--deadline-ms must be > 0, got {args.deadline_ms}")
    decoding = {"beam_size": args.beam_size, "n_best": args.n_best}
    if args.max_length is not None:
        decoding["max_length"] = args.max_length
    try:
        with open(args.texts_file, encoding="utf-8") as f:
            texts = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        p.error(f"cannot read --texts-file {args.texts_file}: {getattr(err, 'strerror', err)}")
    if not texts:
        p.error(f"{args.texts_file} has no texts")
    try:
        summary = run_load(
            args.target,
            texts,
            args.clients,
            args.seconds,
            args.task,
            args.warmup,
            args.texts_per_request,
            decoding,
            timeout=args.deadline_ms / 1000,
            token=args.token,
            tls_ca=args.tls_ca,
        )
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
