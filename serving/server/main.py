"""The gRPC server: predictor (batching, hot reload) + servicer + health + reflection, with
optional TLS, bearer-token auth, a Prometheus endpoint and an HTTP/JSON API with a web page over
the same servicer. On SIGTERM it says NOT_SERVING for `server.drain_seconds` while it still
answers (a load balancer's window to take it out of rotation), then stops taking calls and
lets those in flight finish.

Settings: `--config serving.yaml` (see serving/server/config.example.yaml), then the flags
below; the token comes from `--token-file` or the SEQ2SEQ_TOKEN environment variable, never
from a flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from serving.server import config as serving_config
from serving.server.health import HEALTH_THREADS, CallLimit, add_health_to_server
from serving.server.memory import MemoryBudget
from serving.server.ports import bind
from serving.server.security import TokenAuth, read_token, server_credentials
from serving.server.servicer import Seq2SeqServicer, add_to_server
from serving.v1 import seq2seq_pb2 as pb

LOOPBACK_ADDRESSES = ("127.0.0.1", "::1", "localhost")
SERVICE = pb.DESCRIPTOR.services_by_name["Seq2SeqService"].full_name
log = logging.getLogger("seq2seq.serving")


def select_device(device: str) -> None:
    """Makes TensorFlow use the CPU only, or checks that a GPU is there."""
    import tensorflow as tf

    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise SystemExit(
                "error: DEVICE=gpu but TensorFlow sees no GPU on this machine (is a CUDA build "
                "of TensorFlow installed and a driver present?). Use DEVICE=cpu."
            )
    else:
        raise SystemExit(f"error: DEVICE must be cpu or gpu, got {device!r}")


def build_server(
    predictor,
    cfg: serving_config.ServingConfig,
    *,
    token: str | None = None,
    metrics=None,
    memory=None,
):
    """Returns (server, bound port, health servicer); the server is not started. `memory`: a
    MemoryBudget whose check admits each request for a model.

    Every call holds a pool thread while it runs (a translation waits in its batch), so the
    pool has a thread for each of the `max_concurrent_rpcs` calls admitted at once plus
    HEALTH_THREADS that only health calls use (serving.server.health): a saturated server
    still answers its orchestrator's probes."""
    limit = cfg.server.max_concurrent_rpcs
    interceptors = []
    if metrics is not None:
        interceptors.append(metrics.interceptor())  # outermost: it sees auth failures too
    if token:
        interceptors.append(TokenAuth(token))
    interceptors.append(CallLimit(limit))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limit + HEALTH_THREADS, thread_name_prefix="rpc"),
        interceptors=interceptors,
        # No SO_REUSEPORT: a second server on a taken port must fail, not silently share it.
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024), ("grpc.so_reuseport", 0)],
    )
    add_to_server(Seq2SeqServicer(predictor, memory), server)
    health_servicer = health.HealthServicer()
    add_health_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{cfg.server.host}:{cfg.server.port}"
    sec = cfg.security
    creds = server_credentials(sec.tls_cert, sec.tls_key) if sec.tls_cert else None
    try:
        if creds is not None:
            bound = server.add_secure_port(address, creds)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError:  # recent grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise SystemExit(f"error: cannot listen on {address} (in use or not permitted)")
    serving = health_pb2.HealthCheckResponse.SERVING
    health_servicer.set("", serving)
    health_servicer.set(SERVICE, serving)
    return server, bound, health_servicer


# Time allowed, beyond the grace period, for the batch queues and threads to stop and the
# process to exit; past it the process prints every thread's stack and exits with status 1.
DRAIN_WATCHDOG_SECONDS = 30.0


def drain(
    server, health_servicer, predictor, metrics, grace: float, http=None, delay: float = 0.0
) -> None:
    """Says NOT_SERVING (gRPC health, /readyz) and keeps answering for `delay` s, so that load
    balancers take the server out of rotation before it stops; then stops taking calls, lets
    in-flight ones finish (up to `grace` s) and stops the rest."""
    start = time.monotonic()
    faulthandler.dump_traceback_later(delay + grace + DRAIN_WATCHDOG_SECONDS, exit=True)
    health_servicer.enter_graceful_shutdown()  # every service NOT_SERVING, for good
    if http is not None:
        http[0].leave_rotation()
    if delay > 0:
        log.info("not serving: health says NOT_SERVING; requests still answered for %.1f s", delay)
        time.sleep(delay)  # a second signal exits at once (on_signal)
    log.info("draining in-flight requests (up to %.0f s), then exiting", grace)
    stopped = server.stop(grace=grace)
    if http is not None:
        api, http_server = http
        api.drain()
        http_server.stop(timeout=grace + 5)
    stopped.wait()
    predictor.close()
    if metrics is not None:
        metrics.stop_http()
    # The watchdog stays armed through the interpreter's exit (which joins the rpc threads).
    # From here on a signal is ignored, so the exit status stays 0: the interpreter's shutdown
    # would reset a Python handler to the default and let a late signal kill the process.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    log.info("drained in %.1f s", time.monotonic() - start)


def check_settings(cfg: serving_config.ServingConfig) -> None:
    """What can fail on bad settings (TLS files, device), before the (slow) model loading."""
    if cfg.security.tls_cert:
        server_credentials(cfg.security.tls_cert, cfg.security.tls_key)
    select_device(cfg.server.device)


def start_http(cfg: serving_config.ServingConfig, token: str | None, metrics):
    """The HTTP API and page, listening before the models load (/readyz says when they are)."""
    from serving.server.http_api import HttpApi, HttpServer

    h = cfg.http
    api = HttpApi(
        token=token,
        metrics=metrics,
        workers=cfg.server.workers,
        max_concurrent=cfg.server.max_concurrent_rpcs,
        allowed_hosts=h.allowed_hosts,
        cors_origins=h.cors_origins,
        body_timeout=h.body_timeout_seconds,
        request_timeout=h.request_timeout_seconds,
    )
    sec = cfg.security
    server = HttpServer(
        api.asgi,
        h.host,
        h.port,
        tls_cert=sec.tls_cert,
        tls_key=sec.tls_key,
        grace=cfg.server.grace_seconds,
        header_timeout=h.header_timeout_seconds,
        max_connections=h.max_connections,
    )
    if h.allowed_hosts == serving_config.LOOPBACK_NAMES and h.host not in LOOPBACK_ADDRESSES:
        log.warning(
            "HTTP listens on %s but answers only Host names %s: list the names clients use "
            "in http.allowed_hosts",
            h.host,
            ", ".join(h.allowed_hosts),
        )
    server.start()
    log.info("HTTP API and web page on %s (ready once the models are loaded)", server.url)
    return api, server


def check_port(host: str, port: int, what: str = "") -> None:
    """Exits with a clear message when host:port cannot be listened on now (0: any port)."""
    if port != 0:
        bind(host, port, what).close()


class ConfigWatcher:
    """Re-reads the config file when it changes (called at every model poll) and applies what
    can change live: the version policy and labels. A file that no longer parses, or a label
    that points at a version not served, is refused with a log line, and the running settings
    stay; changes to other settings are logged as needing a restart."""

    def __init__(self, path: str | None, overrides: dict, cfg, predictor=None):
        self.path, self.overrides, self.cfg, self.predictor = path, overrides, cfg, predictor
        self.seen = self._stamp()

    def _stamp(self):
        try:
            st = os.stat(self.path) if self.path else None
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size) if st else None

    def __call__(self) -> None:
        stamp = self._stamp()
        if not self.path or stamp == self.seen:
            return
        self.seen = stamp
        try:
            new = serving_config.load(self.path, self.overrides)
            self.predictor.set_versions(new.models.policies(), new.models.version_labels())
        except ValueError as err:
            log.error("config change in %s refused, settings unchanged: %s", self.path, err)
            return
        old = dataclasses.replace(self.cfg.models, versions={}, labels={})
        others = dataclasses.replace(self.cfg, models=old) != dataclasses.replace(
            new, models=dataclasses.replace(new.models, versions={}, labels={})
        )
        self.cfg = new
        log.info(
            "config %s read again: versions %s, labels %s%s",
            self.path,
            {t: p.describe() for t, p in new.models.policies().items()},
            new.models.version_labels(),
            "; other changed settings apply at the next restart" if others else "",
        )


def serve(
    cfg: serving_config.ServingConfig,
    token: str | None = None,
    config_path: str | None = None,
    overrides: dict | None = None,
) -> int:
    check_settings(cfg)
    from serving.server.predictor import set_tf_threads

    set_tf_threads(cfg.server.tf_threads, cfg.batching)
    from serving.server.metrics import Metrics
    from serving.server.predictor import Predictor

    metrics = Metrics() if cfg.metrics.port >= 0 else None
    http = start_http(cfg, token, metrics) if cfg.http.port >= 0 else None
    watcher = ConfigWatcher(config_path, overrides or {}, cfg)
    memory = MemoryBudget(cfg.server.memory_budget_mib)
    try:
        predictor = Predictor(
            cfg.models.model_dir,
            cfg.limits,
            batching=cfg.batching,
            poll_seconds=cfg.models.poll_seconds,
            metrics=metrics,
            policies=cfg.models.policies(),
            labels=cfg.models.version_labels(),
            on_poll=watcher,
            on_change=memory.models_changed,
            keep_intermediate=cfg.models.keep_intermediate,
            retire_seconds=cfg.models.retire_seconds,
        )
    except ValueError as err:  # a label pointing at a version that is not served
        raise SystemExit(f"error: {err}") from None
    memory.start(models_loaded=bool(predictor.models))
    if memory.over():
        raise SystemExit(
            f"error: the server's memory is {memory.rss_mib:,.0f} MiB once its models are loaded, "
            f"over server.memory_budget_mib {memory.budget_mib:,}: raise it (or 0: auto, "
            f"1.5 × the loaded size; -1: none)"
        )
    log.info(
        "memory: %.0f MiB with the models loaded; budget %s",
        memory.rss_mib,
        f"{memory.budget_mib} MiB" if memory.budget_mib else "none",
    )
    watcher.predictor = predictor
    if not predictor.models:
        where = Path(cfg.models.model_dir)
        log.warning(
            "no models under %s%s: rpcs answer UNAVAILABLE %s",
            where,
            "" if where.is_dir() else " (no such folder)",
            "until a version appears there"
            if cfg.models.poll_seconds > 0
            else "(poll_seconds 0: the folder is not looked at again; restart after exporting)",
        )
    server, bound, health_servicer = build_server(
        predictor, cfg, token=token, metrics=metrics, memory=memory
    )
    if http is not None:
        http[0].serve(Seq2SeqServicer(predictor, memory))
    metrics_port = None
    if metrics is not None:
        try:
            metrics_port = metrics.start_http(cfg.metrics.port, cfg.metrics.host)
        except OSError as err:
            raise SystemExit(
                f"error: cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port}: "
                f"{err.strerror}"
            ) from None
    # The handler only records the signal (no locks: it interrupts the main thread wherever it
    # is); the main thread notices within 0.2 s and drains. A second signal exits at once.
    signals: list[int] = []

    def on_signal(signum, _frame):
        if signals:
            os.write(2, f"signal {signum} again: exiting without draining\n".encode())
            os._exit(1)
        signals.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    loaded = (
        ", ".join(
            f"{t} v{'+v'.join(map(str, vs))}" for t, vs in predictor.served_versions().items() if vs
        )
        or "no models"
    )
    extras = [cfg.server.device, loaded]
    extras.append("TLS" if cfg.security.tls_cert else "plaintext")
    if token:
        extras.append("token auth")
    if metrics_port is not None:
        extras.append(f"metrics on http://{cfg.metrics.host}:{metrics_port}/metrics")
    if http is not None:
        extras.append(f"web page and HTTP/JSON API on {http[1].url}")
    print(
        f"seq2seq server listening on {cfg.server.host}:{bound} ({'; '.join(extras)})", flush=True
    )
    while not signals:
        time.sleep(0.2)  # sleeping, not a lock wait: signal handlers run on this thread
    # SIGTERM is how orchestrators stop a server: give load balancers their window. SIGINT is
    # a person's Ctrl-C at a terminal: no balancer to wait for.
    delay = cfg.server.drain_seconds if signals[0] == signal.SIGTERM else 0.0
    log.info("signal %s", signals[0])
    drain(server, health_servicer, predictor, metrics, cfg.server.grace_seconds, http, delay)
    memory.stop()
    print("seq2seq server stopped", flush=True)
    return 0


# flag → (section.key, type, help)
FLAGS = {
    "--model-dir": ("models.model_dir", str, "model repository root (models/)"),
    "--poll-seconds": ("models.poll_seconds", float, "look for new versions this often (0: never)"),
    "--retire-seconds": (
        "models.retire_seconds",
        float,
        "serve a replaced version this long more to requests naming it (0)",
    ),
    "--host": ("server.host", str, "bind address (127.0.0.1)"),
    "--port": ("server.port", int, "gRPC port (50051)"),
    "--device": ("server.device", str, "cpu or gpu"),
    "--workers": ("server.workers", int, "request threads (64)"),
    "--max-batch-size": ("batching.max_batch_size", int, "texts per model call (32)"),
    "--max-wait-us": ("batching.max_wait_us", int, "wait for a fuller batch, µs (2000)"),
    "--queue-capacity": ("batching.queue_capacity", int, "texts queued before refusing (1024)"),
    "--batch-threads": (
        "batching.threads",
        serving_config.parse_threads,
        "model calls at once: N for every task, or translate=2,classify=1 (the default)",
    ),
    "--drain-seconds": (
        "server.drain_seconds",
        float,
        "on SIGTERM, NOT_SERVING but answering this long before stopping (5)",
    ),
    "--tf-threads": ("server.tf_threads", int, "TensorFlow threads per model call (1; 0 default)"),
    "--memory-budget-mib": (
        "server.memory_budget_mib",
        int,
        "refuse requests while RSS is over this (0 auto: 1.5 × loaded; -1 none)",
    ),
    "--tls-cert": ("security.tls_cert", str, "PEM certificate: serve TLS"),
    "--tls-key": ("security.tls_key", str, "PEM private key"),
    "--token-file": ("security.token_file", str, "require this bearer token (or SEQ2SEQ_TOKEN)"),
    "--metrics-port": ("metrics.port", int, "Prometheus /metrics port (-1 off, 0 any)"),
    "--http-port": ("http.port", int, "HTTP/JSON API and web page port (-1 off, 0 any)"),
    "--http-host": ("http.host", str, "its bind address (127.0.0.1)"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
    )
    p.add_argument("--config", help="serving YAML config (see serving/server/config.example.yaml)")
    p.add_argument(
        "--check",
        action="store_true",
        help="check the settings (config, TLS files, token, device, free ports) and exit",
    )
    for flag, (dest, kind, help_text) in FLAGS.items():
        p.add_argument(flag, dest=dest, type=kind, default=None, help=help_text)
    return p


def parse(argv=None, p: argparse.ArgumentParser | None = None):
    """(args, settings, the flags' overrides) of a server command line; exits on bad ones."""
    p = p or parser()
    args = p.parse_args(argv)
    overrides = {dest: getattr(args, dest) for dest, _, _ in FLAGS.values()}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        cfg = serving_config.load(args.config, overrides)
    except ValueError as err:
        p.error(str(err))
    return args, cfg, overrides


def main(argv=None) -> int:
    args, cfg, overrides = parse(argv)
    token = None
    if cfg.security.token_file:
        token = read_token(cfg.security.token_file)
    elif os.environ.get("SEQ2SEQ_TOKEN"):
        token = os.environ["SEQ2SEQ_TOKEN"].strip()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not cfg.server.onednn:  # before TensorFlow is imported: see ServerSection.onednn
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if args.check:  # `make serve` runs this before it spends time on data and training
        check_settings(cfg)
        check_port(cfg.server.host, cfg.server.port)
        if cfg.metrics.port >= 0:
            check_port(cfg.metrics.host, cfg.metrics.port, "for metrics ")
        if cfg.http.port >= 0:
            check_port(cfg.http.host, cfg.http.port, "for HTTP ")
        print(f"server settings are usable (would listen on {cfg.server.host}:{cfg.server.port})")
        return 0
    return serve(cfg, token, args.config, overrides)


if __name__ == "__main__":
    sys.exit(main())
