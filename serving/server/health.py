"""Health that answers whatever the model calls are doing.

An orchestrator (Kubernetes, Envoy) asks `grpc.health.v1.Health/Check` every few seconds and
takes a server out of rotation, or restarts it, when no answer comes. In gRPC's threaded server
every call holds a thread of one pool, so when model calls fill the pool (or gRPC's own
`maximum_concurrent_rpcs`) the probe waits behind them or is refused, and a server that is only
busy looks dead. Here:

- `CallLimit` (an interceptor) admits at most `limit` calls at once to every service but health,
  refusing more with RESOURCE_EXHAUSTED; the pool has `limit + HEALTH_THREADS` threads, so the
  admitted calls can never take the threads health needs.
- `add_health_to_server` registers the health service with raw-bytes handlers: a malformed
  request is INVALID_ARGUMENT with at most one log line per 10 s, not INTERNAL with a traceback
  (gRPC's own deserialisation). `Watch` streams hold a thread each, so at most
  `MAX_WATCHES` run at once (more: RESOURCE_EXHAUSTED) and `Check` always finds one free.
"""

from __future__ import annotations

import threading

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from serving.server.servicer import MalformedLog

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
HEALTH_THREADS = 4  # pool threads only health calls can use
MAX_WATCHES = 2  # Watch streams at once (each holds one of those threads while it lasts)


class _Counter:
    def __init__(self, limit: int):
        self.limit, self.active = limit, 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def exit(self) -> None:
        with self._lock:
            self.active -= 1


class CallLimit(grpc.ServerInterceptor):
    """At most `limit` calls at once to every service but health; more are refused with
    RESOURCE_EXHAUSTED (as the HTTP API refuses them with 429)."""

    def __init__(self, limit: int):
        self._calls = _Counter(limit)
        self.message = f"too many calls at once (max_concurrent_rpcs {limit})"

    @property
    def active(self) -> int:
        return self._calls.active

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(f"/{HEALTH_SERVICE}/"):
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._streaming(handler.unary_stream))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._unary(handler.stream_unary))
        return handler._replace(stream_stream=self._streaming(handler.stream_stream))

    def _unary(self, behaviour):
        def limited(request, context):
            if not self._calls.enter():
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.message)
            try:
                return behaviour(request, context)
            finally:
                self._calls.exit()

        return limited

    def _streaming(self, behaviour):
        def limited(request, context):
            if not self._calls.enter():
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.message)
            try:
                yield from behaviour(request, context)
            finally:
                self._calls.exit()

        return limited


def add_health_to_server(health_servicer, server: grpc.Server) -> None:
    """Registers `health_servicer` (grpc_health's HealthServicer) with raw-bytes handlers."""
    malformed = MalformedLog()
    watches = _Counter(MAX_WATCHES)

    def parse(raw: bytes, context, method: str):
        try:
            return health_pb2.HealthCheckRequest.FromString(raw)
        except DecodeError as err:
            malformed(method, context.peer(), err)
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid grpc.health.v1.HealthCheckRequest message ({err})",
            )

    def check(raw, context):
        return health_servicer.Check(parse(raw, context, "Health/Check"), context)

    def watch(raw, context):
        request = parse(raw, context, "Health/Watch")
        if not watches.enter():
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many health watches at once (at most {MAX_WATCHES}): use Check",
            )
        try:
            yield from health_servicer.Watch(request, context)
        finally:
            watches.exit()

    serialize = health_pb2.HealthCheckResponse.SerializeToString
    handlers = {
        "Check": grpc.unary_unary_rpc_method_handler(check, response_serializer=serialize),
        "Watch": grpc.unary_stream_rpc_method_handler(watch, response_serializer=serialize),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(HEALTH_SERVICE, handlers),)
    )
