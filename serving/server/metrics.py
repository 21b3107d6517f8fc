"""Prometheus metrics: rpcs and HTTP requests by status, latency, batch sizes, queue depth,
versions.

`Metrics` holds its own registry (several servers in one process do not collide) and is both
the predictor's metrics sink (batch, track_queue, model_loaded, reload), through
`interceptor()` the recorder of every unary rpc's status code and latency, and through
`http_request` that of every HTTP request.
"""

from __future__ import annotations

import time

import grpc
import prometheus_client as prom

# Latency buckets in seconds: 1 ms … 30 s (a beam search on a long text can take seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's metrics, exposed over HTTP by `start_http(port)`."""

    def __init__(self):
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "seq2seq_requests",
            "Finished rpcs by method and status code.",
            ["rpc", "code"],
            registry=r,
        )
        self.latency = prom.Histogram(
            "seq2seq_request_latency_seconds",
            "Rpc latency inside the server, by method.",
            ["rpc"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = prom.Histogram(
            "seq2seq_batch_size",
            "Texts per model call, by task.",
            ["task"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_requests = prom.Histogram(
            "seq2seq_batch_requests",
            "Requests merged into one model call, by task.",
            ["task"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = prom.Histogram(
            "seq2seq_batch_seconds",
            "Time of one model call (tokenize, run, detokenize), by task.",
            ["task"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = prom.Gauge(
            "seq2seq_queue_depth",
            "Texts waiting for a model call, by task.",
            ["task"],
            registry=r,
        )
        self.model_version = prom.Gauge(
            "seq2seq_model_version",
            "The model version being served, by task.",
            ["task"],
            registry=r,
        )
        self.reloads = prom.Counter(
            "seq2seq_model_loads",
            "Model versions loaded, by task and result (ok|failed).",
            ["task", "result"],
            registry=r,
        )
        self.http_requests = prom.Counter(
            "seq2seq_http_requests",
            "Finished HTTP requests by route and HTTP status.",
            ["route", "status"],
            registry=r,
        )
        self.http_latency = prom.Histogram(
            "seq2seq_http_request_latency_seconds",
            "HTTP request latency inside the server, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._server = None

    # --- the predictor's sink --------------------------------------------------------------------

    def batch(self, task: str, items: int, requests: int, seconds: float) -> None:
        self.batch_size.labels(task).observe(items)
        self.batch_seconds.labels(task).observe(seconds)
        self.batch_requests.labels(task).observe(requests)

    def track_queue(self, task: str, depth) -> None:
        self.queue_depth.labels(task).set_function(depth)

    def model_loaded(self, task: str, version: int) -> None:
        self.model_version.labels(task).set(version)

    def reload(self, task: str, ok: bool) -> None:
        self.reloads.labels(task, "ok" if ok else "failed").inc()

    # --- requests --------------------------------------------------------------------------------

    def http_request(self, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, str(status)).inc()
        self.http_latency.labels(route).observe(seconds)

    def interceptor(self) -> grpc.ServerInterceptor:
        return _MetricsInterceptor(self)

    def start_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Serves /metrics on host:port (0: a free port); returns the port."""
        self._server, _thread = prom.start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_port

    def stop_http(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _MetricsInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown methods and streams (reflection) are not recorded
        rpc = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        metrics = self.metrics

        def recorded(request, context):
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                response = inner(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                metrics.requests.labels(rpc, code.name).inc()
                metrics.latency.labels(rpc).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            recorded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
