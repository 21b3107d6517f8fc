"""The HTTP/JSON API and the web page, served beside gRPC by the same process (Starlette on
uvicorn, in a thread of its own).

Routes:
    POST /v1/translate   body: a TranslateRequest      → a TranslateResponse
    POST /v1/classify    body: a ClassifyRequest       → a ClassifyResponse
    GET  /v1/models      ?task=translate|classify      → a GetModelMetadataResponse
    GET  /healthz        200 while the process runs (liveness)
    GET  /readyz         200 once every model is loaded and warmed up, 503 before and when draining
    GET  /               the web page (serving/web/: static files, no build step, no CDN)

Bodies are the proto messages in protobuf's JSON mapping: field names as in the .proto
(lowerCamelCase is accepted too), int64 values as strings. Each call goes through the same
`Seq2SeqServicer` as gRPC, so both APIs make the same checks with the same messages and return
the same answers; the two cannot drift. An error is
`{"error": {"code": <HTTP status>, "status": "<gRPC code name>", "message": "..."}}`.
The bearer token, TLS files and metrics of the gRPC server apply here too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import partial
from pathlib import Path

import anyio
import grpc
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from serving.server.ports import bind
from serving.server.security import BearerToken
from serving.v1 import seq2seq_pb2 as pb

log = logging.getLogger("seq2seq.serving")

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
MAX_BODY_BYTES = 8 * 1024 * 1024  # as the gRPC server's max_receive_message_length
TASKS = {"translate": pb.TASK_TRANSLATE, "classify": pb.TASK_CLASSIFY}

# gRPC status → HTTP status (as Google's API design guide maps them).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
API_ROUTES = {"/v1/translate": "POST", "/v1/classify": "POST", "/v1/models": "GET"}
# Routes counted by name in the metrics; any other path is counted as "other".
METRIC_ROUTES = ("/v1/translate", "/v1/classify", "/v1/models", "/healthz", "/readyz", "/")
# The page loads only its own files: no inline script, nothing from elsewhere.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


class ApiError(Exception):
    """An answer other than 200: the gRPC code it corresponds to and a message."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status or HTTP_STATUS.get(code, 500)


def error_response(err: ApiError, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"code": err.http_status, "status": err.code.name, "message": err.message}}
    if err.http_status == 401:
        headers = {**(headers or {}), "www-authenticate": "Bearer"}
    return JSONResponse(body, status_code=err.http_status, headers=headers)


class _Context:
    """What Seq2SeqServicer uses of grpc.ServicerContext, for one HTTP call."""

    def __init__(self, deadline: float | None = None):
        self._deadline = deadline
        self.gone = threading.Event()  # set when the client disconnects

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - time.monotonic(), 0.0)

    def is_active(self) -> bool:
        if self.gone.is_set():
            return False
        return self._deadline is None or time.monotonic() < self._deadline

    def abort(self, code: grpc.StatusCode, details: str):
        raise ApiError(code, details)


def parse_message(body: bytes, message_type):
    """`body` (JSON) as a `message_type` proto; ApiError (400) naming what is wrong."""
    name = message_type.DESCRIPTOR.name
    if not body.strip():
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'the body is empty: send a JSON {name}, e.g. {{"texts": ["..."]}}',
        )

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"the field {twice[0]!r} is given twice")
        return dict(pairs)

    try:
        text = body.decode("utf-8")  # JSON is UTF-8 (RFC 8259): no guessing at other encodings
    except UnicodeDecodeError:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the body is not UTF-8 text") from None
    try:
        value = json.loads(text, object_pairs_hook=no_duplicates)
    except ValueError as err:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, f"the body is not valid JSON: {err}"
        ) from None
    if not isinstance(value, dict):
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the body must be a JSON object (a {name}), got {type(value).__name__}",
        )
    fields = message_type.DESCRIPTOR.fields
    known = {f.name for f in fields} | {f.json_name for f in fields}
    for key in value:
        if key not in known:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown field {key!r} in {name}; its fields: "
                + ", ".join(f.name for f in fields),
            )
    try:
        return json_format.ParseDict(value, message_type())
    except json_format.ParseError as err:
        message = str(err).splitlines()[0]
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {message}") from None


def to_json(message) -> dict:
    """A proto message in the JSON mapping this API speaks (proto field names, every field)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


class HttpApi:
    """The Starlette app. It answers 503 until `serve(servicer)` is called (models loading) and
    again after `drain()`; /healthz answers 200 throughout.

    Args:
        token: the bearer token /v1/ calls must send (None: no auth).
        metrics: serving.server.metrics.Metrics (requests by route and status), or None.
        workers: threads that run calls (each waits while its request is in a batch).
        max_concurrent: calls at once; more are answered 429.
    """

    def __init__(self, *, token: str | None = None, metrics=None, workers=64, max_concurrent=256):
        self.servicer = None
        self.draining = False
        self._auth = BearerToken(token) if token else None
        self._metrics = metrics
        self._limiter = anyio.CapacityLimiter(workers)
        self._max_concurrent = max_concurrent
        self._active = 0
        translate = partial(self._rpc, "Translate", pb.TranslateRequest)
        classify = partial(self._rpc, "Classify", pb.ClassifyRequest)
        routes = [
            Route("/v1/translate", translate, methods=["POST"]),
            Route("/v1/classify", classify, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/v1/{rest:path}", self._unknown, methods=ALL_METHODS),
            Mount("/", StaticFiles(directory=WEB_DIR, html=True), name="page"),
        ]  # fmt: skip
        handlers = {404: self._not_found, 405: self._not_allowed}
        self.app = Starlette(routes=routes, exception_handlers=handlers)
        self.asgi = _Recorded(self.app, metrics)

    def serve(self, servicer) -> None:
        """Starts answering /v1/ calls with `servicer` (a Seq2SeqServicer)."""
        self.servicer = servicer

    def drain(self) -> None:
        """Refuses new calls (503) and reports not ready; calls already running finish."""
        self.draining = True

    # --- routes ----------------------------------------------------------------------------------

    def _check(self, request: Request) -> None:
        if self._auth is not None:
            refusal = self._auth.refusal(request.headers.getlist("authorization"))
            if refusal is not None:
                raise ApiError(grpc.StatusCode.UNAUTHENTICATED, refusal)
        if self.draining:
            raise ApiError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        if self.servicer is None:
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE,
                "the models are still loading: try again shortly (GET /readyz says when)",
            )

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        too_big = ApiError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the body is larger than {MAX_BODY_BYTES} bytes",
            http_status=413,
        )
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def _call(self, method: str, message, request: Request | None = None) -> JSONResponse:
        if self._active >= self._max_concurrent:
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many calls at once (max_concurrent_rpcs {self._max_concurrent})",
            )
        self._active += 1  # only the event loop's thread touches it
        context = _Context()
        try:
            run = partial(getattr(self.servicer, method), message, context)
            failure = None
            async with anyio.create_task_group() as tasks:
                if request is not None:  # a client that goes away stops its work (predictor)
                    tasks.start_soon(self._watch_disconnect, request, context)
                try:
                    response = await anyio.to_thread.run_sync(run, limiter=self._limiter)
                except Exception as err:  # raised below, outside the task group (no wrapping)
                    failure = err
                tasks.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            self._active -= 1
        return JSONResponse(to_json(response))

    @staticmethod
    async def _watch_disconnect(request: Request, context: _Context) -> None:
        while not await request.is_disconnected():
            await anyio.sleep(0.05)
        context.gone.set()

    async def _rpc(self, method: str, message_type, request: Request) -> Response:
        try:
            self._check(request)
            message = parse_message(await self._read_body(request), message_type)
            return await self._call(method, message, request)
        except ApiError as err:
            return error_response(err)

    async def _models(self, request: Request) -> Response:
        try:
            self._check(request)
            unknown = sorted(set(request.query_params) - {"task"})
            if unknown:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unknown query parameter {unknown[0]!r}; /v1/models takes task=",
                )
            task = request.query_params.get("task")
            if task is not None and task not in TASKS:
                raise ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unknown task {task!r}; tasks: {', '.join(TASKS)}",
                )
            message = pb.GetModelMetadataRequest(task=TASKS.get(task, pb.TASK_UNSPECIFIED))
            return await self._call("GetModelMetadata", message)
        except ApiError as err:
            return error_response(err)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        if self.draining:
            return JSONResponse({"ready": False, "reason": "shutting down"}, status_code=503)
        if self.servicer is None:
            return JSONResponse({"ready": False, "reason": "loading models"}, status_code=503)
        models = self.servicer.predictor.models
        if not models:
            return JSONResponse({"ready": False, "reason": "no models loaded"}, status_code=503)
        versions = {task: m.version for task, m in models.items()}
        return JSONResponse({"ready": True, "models": versions})

    async def _unknown(self, request: Request) -> Response:
        allowed = API_ROUTES.get(request.url.path)
        if allowed is not None:  # a known route, the wrong method
            return error_response(
                ApiError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{request.method} is not allowed on {request.url.path}: use {allowed}",
                    http_status=405,
                ),
                {"allow": allowed},
            )
        return error_response(
            ApiError(
                grpc.StatusCode.NOT_FOUND,
                f"no such route {request.url.path}; routes: POST /v1/translate, "
                "POST /v1/classify, GET /v1/models",
            )
        )

    async def _not_found(self, request: Request, exc) -> Response:
        return error_response(ApiError(grpc.StatusCode.NOT_FOUND, f"not found: {request.url.path}"))

    async def _not_allowed(self, request: Request, exc) -> Response:
        allowed = exc.headers.get("allow", "") if getattr(exc, "headers", None) else ""
        return error_response(
            ApiError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})",
                http_status=405,
            )
        )


class _Recorded:
    """ASGI middleware: counts every HTTP request by route and status and times it (when
    `metrics` is given), and adds the page's security headers to the page's files."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in METRIC_ROUTES else "/static" if "." in path else "other"
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                if route in ("/", "/static"):
                    message.setdefault("headers", [])
                    message["headers"] = list(message["headers"]) + [
                        (k.encode(), v.encode()) for k, v in PAGE_HEADERS.items()
                    ]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            if self.metrics is not None:
                self.metrics.http_request(route, status[0], time.perf_counter() - start)


class HttpServer:
    """uvicorn serving `app` on host:port (TLS with cert + key) in a background thread."""

    def __init__(
        self,
        app,
        host: str,
        port: int,
        *,
        tls_cert: str = "",
        tls_key: str = "",
        grace: float = 30.0,
    ):
        self._socket = bind(host, port, "for HTTP ", listen=True)
        self.host = host
        self.port = self._socket.getsockname()[1]
        self.scheme = "https" if tls_cert else "http"
        config = uvicorn.Config(
            app,
            http="h11",
            loop="asyncio",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ssl_certfile=tls_cert or None,
            ssl_keyfile=tls_key or None,
            timeout_graceful_shutdown=int(grace) or 1,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="http", daemon=True
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}/"

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit(f"error: the HTTP server on {self.url} did not start")
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> None:
        """Stops accepting, lets running calls finish (up to the grace), then returns."""
        self._server.should_exit = True
        self._thread.join(timeout)
