"""The README's first command, for real, on the tiny preset: `PRESET=tiny make serve` from
whatever this checkout has (in CI: nothing, so it fetches the corpora and starts the server while
both tiny models train behind it), the first translate and classify answers through the client
CLI (UNAVAILABLE until each task's first version is exported), one through the HTTP API, then
SIGTERM and a clean drain. Run by .ci/run after `make test`:

    python tests/e2e_serve.py [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1800, help="for make serve to listen")
    args = parser.parse_args(argv)
    port, http_port = free_port(), free_port()
    cmd = ["make", "--no-print-directory", "serve", "PRESET=tiny", f"PORT={port}"]
    cmd += [f"HTTP_PORT={http_port}"]
    print("$", " ".join(cmd), flush=True)
    start = time.monotonic()
    # its own session, so that a SIGKILL at the end, if needed, reaches make and the server
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    listening = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            print("  | " + line, end="", flush=True)
            if "listening on" in line:
                listening.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not listening.wait(1):
            if proc.poll() is not None:
                print(f"e2e: make serve exited ({proc.returncode}) before listening")
                return 1
            if time.monotonic() - start > args.timeout:
                print(f"e2e: make serve did not listen within {args.timeout:.0f} s")
                return 1
        ready = time.monotonic() - start
        client = [str(ROOT / ".venv" / "bin" / "seq2seq-client"), "--target"]
        client += [f"127.0.0.1:{port}", "--timeout", "60", "--json"]
        results, answered = {}, {}
        for task, text in (("classify", "A wonderful film."), ("translate", "Tengo un gato.")):
            while True:  # UNAVAILABLE until the task's first version is exported and loaded
                out = subprocess.run(
                    [*client, task, text], capture_output=True, text=True, timeout=120, check=False
                )
                if out.returncode == 0 or "UNAVAILABLE: no" not in out.stderr:
                    break
                if time.monotonic() - start > args.timeout:
                    print(f"e2e: no {task} answer within {args.timeout:.0f} s: {out.stderr}")
                    return 1
                time.sleep(2)
            if out.returncode != 0:
                print(f"e2e: seq2seq-client {task} failed ({out.returncode}): {out.stderr}")
                return 1
            answered[task] = time.monotonic() - start
            results[task] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"e2e: {task} {text!r} → {results[task]} after {answered[task]:.0f} s")
        assert results["translate"]["text"], results
        assert results["classify"]["label"] in ("pos", "neg"), results
        body = json.dumps({"texts": ["Hola."]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v1/translate",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            answer = json.loads(resp.read())
        print(f"e2e: HTTP /v1/translate → {answer['translations'][0]['hypotheses'][0]['text']!r}")
    finally:
        if proc.poll() is None:  # to make alone: it passes the signal on to the server, once
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        reader.join(timeout=10)
    drained = any("drained in" in line for line in lines)
    print(
        f"e2e: listening after {ready:.0f} s, first classify and translate answers after "
        f"{answered['classify']:.0f} s and {answered['translate']:.0f} s; after SIGTERM make serve "
        "exited "
        f"{proc.returncode}, {'drained' if drained else 'NOT drained'}"
    )
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
