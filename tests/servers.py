"""Helpers for the serving tests: tiny exported models and a real server in a subprocess."""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from seq2seq.config import load_config
from seq2seq.data import prepare
from seq2seq.tasks import classification, translation

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("I see the cat.", "Veo el gato."),
    ("I see the dog.", "Veo el perro."),
    ("We eat bread.", "Comemos pan."),
    ("They eat bread.", "Comen pan."),
    ("The cat sleeps.", "El gato duerme."),
    ("The dog sleeps.", "El perro duerme."),
]
REVIEWS = [("pos", f"a good film {i}") for i in range(30)] + [
    ("neg", f"a bad film {i}") for i in range(30)
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def translate_overrides(root: Path) -> list[str]:
    """The tiny translation run of the serving tests (its data file written under `root`)."""
    data = root / "pairs.tsv"
    data.write_text("".join(f"{en}\t{es}\tx\n" for en, es in PAIRS))
    return [
        f"data.dir={root / 'prepared'}",
        f"train.run_dir={root / 'runs'}",
        f"data.data_file={data}",
        "data.valid_fraction=0",
        "data.test_fraction=0",
        "train.max_steps=250",
        "model.attention=luong",
    ]


def classify_overrides(root: Path, reviews=REVIEWS) -> list[str]:
    """The tiny classification run of the serving tests (its data file written under `root`)."""
    data = root / "reviews.tsv"
    data.write_text("".join(f"{label}\t{text}\n" for label, text in reviews))
    return [
        f"data.dir={root / 'prepared'}",
        f"train.run_dir={root / 'runs'}",
        f"data.data_file={data}",
        "data.language=en",
        "train.max_steps=150",
    ]


def same_numerics_config(root: Path) -> list[str]:
    """Server flags for bit-equal answers with this process: oneDNN as TensorFlow has it here.
    The server turns oneDNN off by default (`server.onednn`), whose kernels round differently
    in the last bits (scores and attention weights ~1e-6 apart), so tests that compare the
    server's numbers with in-process ones bit for bit ask for TensorFlow's default."""
    path = root / "same-numerics.yaml"
    path.write_text("server:\n  onednn: true\n")
    return ["--config", str(path)]


def export_models(root: Path, tasks=("translate", "classify")) -> Path:
    """Trains the tiny runs under `root` and exports them as version 1 into `root`/models."""
    models = root / "models"
    for task in tasks:
        module = translation if task == "translate" else classification
        overrides = (translate_overrides if task == "translate" else classify_overrides)(root)
        cfg = load_config(task, "tiny", overrides=overrides)
        prepare(cfg)
        module.run_training(cfg, progress=False)
        module.run_export(cfg, models / task)
    return models


class Server:
    """`python -m serving` in a subprocess, waited for until it listens."""

    def __init__(self, model_dir: Path, *extra: str, env: dict | None = None, port: int = 0):
        self.port = port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving",
                "--model-dir",
                str(model_dir),
                "--port",
                str(self.port),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if "listening on" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def rss_mib(self) -> float:
        """The server process's resident memory, MiB (Linux /proc)."""
        from serving.server.memory import MiB, rss_bytes

        value = rss_bytes(self.proc.pid)
        if not value:
            raise RuntimeError(f"no VmRSS for process {self.proc.pid}")
        return value / MiB

    def log(self) -> str:
        return "".join(self.lines)


def wait_for(condition, timeout: float = 60, every: float = 0.1, what: str = "condition"):
    """Polls `condition()` until it is truthy; returns its value or fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def http_call(
    base: str, method: str, path: str, body=None, headers=(), tls=None, exact: bool = False
):
    """(status, parsed JSON or text, headers) of one request; `body`: bytes, str or JSON value;
    `headers`: (name, value) pairs, a name may repeat; `tls`: an ssl.SSLContext for https.
    `exact`: send only the headers given (no Host, Content-Type or Accept-Encoding of its own;
    Content-Length still, with a body)."""
    if body is not None and not isinstance(body, bytes):
        body = (body if isinstance(body, str) else json.dumps(body)).encode()
    url = urllib.parse.urlsplit(base)
    if url.scheme == "https":
        connection = http.client.HTTPSConnection(url.hostname, url.port, timeout=60, context=tls)
    else:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.putrequest(method, path, skip_host=exact, skip_accept_encoding=exact)
        for key, value in headers:
            connection.putheader(key, value)
        if body is not None:
            if not exact:
                connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw), response.headers
    except ValueError:
        return response.status, raw.decode(errors="replace"), response.headers


class Running:
    """HttpApi over a FakePredictor on a free loopback port, in this process. `options` go to
    HttpApi, `server_options` to HttpServer (header_timeout, max_connections)."""

    def __init__(self, predictor=None, serve=True, server_options=None, **options):
        from fakes import FakePredictor

        from serving.server.http_api import HttpApi, HttpServer
        from serving.server.metrics import Metrics
        from serving.server.servicer import Seq2SeqServicer

        self.predictor = predictor or FakePredictor()
        self.metrics = Metrics()
        self.api = HttpApi(metrics=self.metrics, **options)
        if serve:
            self.api.serve(Seq2SeqServicer(self.predictor))
        self.server = HttpServer(self.api.asgi, "127.0.0.1", 0, **(server_options or {}))
        self.server.start()
        self.base = self.server.url.rstrip("/")

    def __call__(self, method, path, body=None, headers=()):
        return http_call(self.base, method, path, body, headers)

    @property
    def connections(self) -> int:
        """Connections the server holds open now."""
        return len(self.server._server.server_state.connections)

    def stop(self):
        self.server.stop(timeout=10)


SUBJECTS = [("I see", "Veo"), ("We see", "Vemos"), ("They see", "Ven"), ("You see", "Ves")]
OBJECTS = [
    ("the cat", "el gato"),
    ("the dog", "el perro"),
    ("the house", "la casa"),
    ("the car", "el coche"),
    ("the book", "el libro"),
    ("the tree", "el árbol"),
]


def toy_corpora(root: Path) -> Path:
    """Both default corpora, made up and tiny, prepared under `root`/data/prepared with the
    default corpora's names (tatoeba_spa_eng, sentiment), with validation and test splits: what
    `make serve` reads from a checkout at `root`. Returns `root`."""
    pairs = [(f"{en} {o_en}.", f"{es} {o_es}.") for en, es in SUBJECTS for o_en, o_es in OBJECTS]
    reviews = [("pos", f"a good film number {i}") for i in range(40)]
    reviews += [("neg", f"a bad film number {i}") for i in range(40)]
    (root / "pairs.tsv").write_text("".join(f"{en}\t{es}\tx\n" for en, es in pairs))
    (root / "reviews.tsv").write_text("".join(f"{label}\t{text}\n" for label, text in reviews))
    # The translator validates on its training pairs (no validation split): its loss there keeps
    # falling, so each validation gives a new version, as on a real corpus.
    for task, data_file, corpus, valid in (
        ("translate", "pairs.tsv", "tatoeba_spa_eng", 0),
        ("classify", "reviews.tsv", "sentiment", 0.15),
    ):
        overrides = [f"data.dir={root / 'data' / 'prepared'}", f"data.data_file={root / data_file}"]
        overrides += [f"data.valid_fraction={valid}", "data.test_fraction=0.15"]
        cfg = load_config(task, "tiny", None, overrides)
        prepare(cfg)
        cfg.data_dir.rename(cfg.data_dir.parent / corpus)
    return root
