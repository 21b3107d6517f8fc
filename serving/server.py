"""The gRPC server: predictor + servicer + health + reflection, graceful shutdown on signals.

Configured by flags or environment: MODEL_DIR (models), HOST (127.0.0.1), PORT (50051),
DEVICE (cpu|gpu), WORKERS (request threads).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from serving.errors import Limits
from serving.servicer import Seq2SeqServicer
from serving.v1 import seq2seq_pb2 as pb
from serving.v1 import seq2seq_pb2_grpc as pb_grpc

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


def build_server(predictor, host: str, port: int, workers: int = 8):
    """Returns (server, bound port, health servicer); the server is not started."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)],
    )
    pb_grpc.add_Seq2SeqServiceServicer_to_server(Seq2SeqServicer(predictor), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"error: cannot listen on {host}:{port} (in use or not permitted)")
    serving = health_pb2.HealthCheckResponse.SERVING
    health_servicer.set("", serving)
    health_servicer.set(SERVICE, serving)
    return server, bound, health_servicer


def serve(model_dir: str, host: str, port: int, device: str, workers: int) -> int:
    select_device(device)
    from serving.predictor import Predictor

    predictor = Predictor(model_dir, Limits())
    if not predictor.models:
        log.warning("no models found under %s: every rpc will answer UNAVAILABLE", model_dir)
    server, bound, health_servicer = build_server(predictor, host, port, workers)
    stopped = threading.Event()

    def shutdown(signum, _frame):
        log.info("signal %s: draining in-flight requests, then exiting", signum)
        health_servicer.enter_graceful_shutdown()
        server.stop(grace=30).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    server.start()
    loaded = ", ".join(f"{t} v{m.version}" for t, m in predictor.models.items()) or "no models"
    print(f"seq2seq server listening on {host}:{bound} ({device}; {loaded})", flush=True)
    stopped.wait()
    print("seq2seq server stopped", flush=True)
    return 0


def main(argv=None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=env("MODEL_DIR", "models"))
    p.add_argument("--host", default=env("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(env("PORT", "50051")))
    p.add_argument("--device", default=env("DEVICE", "cpu"), choices=["cpu", "gpu"])
    p.add_argument("--workers", type=int, default=int(env("WORKERS", "8")))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return serve(args.model_dir, args.host, args.port, args.device, args.workers)


if __name__ == "__main__":
    sys.exit(main())
