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

What a careless or hostile client meets (each setting in the `http:` section): a POST must be
`Content-Type: application/json` (415); the Host must be an allowed name (400) and an Origin this
server's own or an allowed one (403), so other web pages cannot drive the API; the request's
headers must arrive within `header_timeout_seconds` and its body within `body_timeout_seconds`
(408); at most `max_connections` are open; a call waits at most its `X-Request-Timeout-Ms` (or
`request_timeout_seconds`) for the model (504); JSON is parsed in linear time, nesting refused
(400), big bodies off the event loop; clients that go away are logged once per 10 s at most.
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
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from serving.server.ports import bind
from serving.server.security import BearerToken
from serving.server.servicer import TASK_ENUMS, RateLimitedLog
from serving.v1 import seq2seq_pb2 as pb

log = logging.getLogger("seq2seq.serving")

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
MAX_BODY_BYTES = 8 * 1024 * 1024  # as the gRPC server's max_receive_message_length
# The page's own files, and nothing else of serving/web/ (its __init__.py is not for the web).
PAGE_FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js",
              "/app.css": "app.css"}  # fmt: skip
TIMEOUT_HEADER = "x-request-timeout-ms"  # a call's deadline, as gRPC clients send theirs
MAX_TIMEOUT_MS = 3_600_000

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
API_ROUTES = {
    "/v1/translate": "POST",
    "/v1/classify": "POST",
    "/v1/models": "GET",
    "/v1/training": "GET",
}
# Routes counted by name in the metrics; any other path is counted as "other".
METRIC_ROUTES = (*API_ROUTES, "/healthz", "/readyz", "/")
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


# Bodies up to this size are parsed on the event loop; larger ones in a worker thread, so that
# /healthz and the other connections are answered meanwhile.
PARSE_INLINE_BYTES = 64 * 1024


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's pairs as a dict; ValueError naming a key given twice (linear: a set)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the field {key!r} is given twice")
            seen.add(key)
    return value


def parse_message(body: bytes, message_type, max_texts: int | None = None):
    """`body` (JSON) as a `message_type` proto; ApiError (400) naming what is wrong. Linear in
    the body's size, whatever its shape: duplicate keys found with a set, nesting beyond what
    the parser recurses into refused, more than `max_texts` texts refused before they are
    converted (the predictor's own check, early: 2M one-letter texts cost seconds)."""
    name = message_type.DESCRIPTOR.name
    if not body.strip():
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'the body is empty: send a JSON {name}, e.g. {{"texts": ["..."]}}',
        )
    try:
        text = body.decode("utf-8")  # JSON is UTF-8 (RFC 8259): no guessing at other encodings
    except UnicodeDecodeError:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "the body is not UTF-8 text") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:  # the C parser's depth guard: [[[[… or {"a":{"a":…
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, "the body is not valid JSON: nested too deeply"
        ) from None
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
    texts = value.get("texts")
    if max_texts is not None and isinstance(texts, list) and len(texts) > max_texts:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"too many texts: {len(texts)} > max_texts {max_texts}",
        )
    try:
        return json_format.ParseDict(value, message_type())
    except json_format.ParseError as err:
        message = str(err).splitlines()[0]
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{name}: {message}") from None
    except RecursionError:
        raise ApiError(
            grpc.StatusCode.INVALID_ARGUMENT, f"{name}: a field is nested too deeply"
        ) from None


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
        max_concurrent: calls at once; more are answered 429 (before their body is read).
        allowed_hosts: Host header names answered (["*"]: any); default loopback names.
        cors_origins: origins whose pages may call the API (CORS); default none.
        body_timeout: seconds a request's body may take to arrive (408 after).
        request_timeout: a call's deadline when its request sets none (None: no deadline).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        metrics=None,
        workers: int = 64,
        max_concurrent: int = 256,
        allowed_hosts=("localhost", "127.0.0.1", "::1"),
        cors_origins=(),
        body_timeout: float = 30.0,
        request_timeout: float | None = 60.0,
    ):
        self.servicer = None
        self.draining = False  # refusing calls (the server stops)
        self.leaving = False  # not ready (load balancers take it out), calls still answered
        self._auth = BearerToken(token) if token else None
        self._metrics = metrics
        self._limiter = anyio.CapacityLimiter(workers)
        self._max_concurrent = max_concurrent
        self._active = 0
        self._body_timeout = body_timeout
        self._request_timeout = request_timeout or None
        self._went_away = RateLimitedLog(level=logging.INFO)
        translate = partial(self._rpc, "Translate", pb.TranslateRequest)
        classify = partial(self._rpc, "Classify", pb.ClassifyRequest)
        page = [Route(path, self._page, methods=["GET", "HEAD"]) for path in PAGE_FILES]
        routes = [
            Route("/v1/translate", translate, methods=["POST"]),
            Route("/v1/classify", classify, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/v1/training", self._training, methods=["GET"]),
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/v1/{rest:path}", self._unknown, methods=ALL_METHODS),
            *page,
        ]  # fmt: skip
        handlers = {404: self._not_found, 405: self._not_allowed}
        self.app = Starlette(routes=routes, exception_handlers=handlers)
        app = self.app
        if cors_origins:
            app = CORSMiddleware(
                app,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", TIMEOUT_HEADER],
                max_age=600,
            )
        guarded = _Guard(app, allowed_hosts, cors_origins)
        self.asgi = _Recorded(guarded, metrics)

    def serve(self, servicer) -> None:
        """Starts answering /v1/ calls with `servicer` (a Seq2SeqServicer)."""
        self.servicer = servicer

    def leave_rotation(self) -> None:
        """Reports not ready (/readyz 503) while still answering calls: the drain's first part."""
        self.leaving = True

    def drain(self) -> None:
        """Refuses new calls (503) and reports not ready; calls already running finish."""
        self.leaving = self.draining = True

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

    def _deadline(self, request: Request) -> float | None:
        """The call's deadline (time.monotonic()): X-Request-Timeout-Ms, else the default."""
        given = request.headers.getlist(TIMEOUT_HEADER)
        if not given:
            timeout = self._request_timeout
            return None if timeout is None else time.monotonic() + timeout
        value = given[0].strip()
        if len(given) > 1 or not value.isdigit() or not 0 < int(value) <= MAX_TIMEOUT_MS:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{TIMEOUT_HEADER} must be one whole number of milliseconds in "
                f"[1, {MAX_TIMEOUT_MS}], got {', '.join(given)!r}",
            )
        return time.monotonic() + int(value) / 1000

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
        with anyio.move_on_after(self._body_timeout) as waited:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise too_big
                chunks.append(chunk)
        if waited.cancelled_caught:
            raise ApiError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the body did not arrive within {self._body_timeout:g} s",
                http_status=408,
            )
        return b"".join(chunks)

    async def _parse(self, body: bytes, message_type):
        limits = getattr(getattr(self.servicer, "predictor", None), "limits", None)
        max_texts = getattr(limits, "max_texts", None)
        if len(body) <= PARSE_INLINE_BYTES:
            return parse_message(body, message_type, max_texts)
        return await anyio.to_thread.run_sync(parse_message, body, message_type, max_texts)

    def _admit(self) -> None:
        if self._active >= self._max_concurrent:
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many calls at once (max_concurrent_rpcs {self._max_concurrent})",
            )
        self._active += 1  # only the event loop's thread touches it

    async def _call(
        self, method: str, message, context: _Context, request: Request | None = None
    ) -> JSONResponse:
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
        return JSONResponse(to_json(response))

    @staticmethod
    async def _watch_disconnect(request: Request, context: _Context) -> None:
        while not await request.is_disconnected():
            await anyio.sleep(0.05)
        context.gone.set()

    async def _rpc(self, method: str, message_type, request: Request) -> Response:
        try:
            self._check(request)
            context = _Context(self._deadline(request))
            self._admit()  # before the body: a full server does not buffer 8 MiB to refuse it
        except ApiError as err:
            return error_response(err)
        try:
            message = await self._parse(await self._read_body(request), message_type)
            return await self._call(method, message, context, request)
        except ApiError as err:
            close = {"connection": "close"} if err.http_status in (408, 413) else None
            return error_response(err, close)
        except ClientDisconnect:
            self._went_away(
                "an HTTP client went away before its request's body arrived (%s)",
                _peer(request),
            )
            return Response(status_code=499)  # nobody reads it
        finally:
            self._active -= 1

    def _task_query(self, request: Request) -> str | None:
        """The optional `task=` of a GET; ApiError for anything else."""
        unknown = sorted(set(request.query_params) - {"task"})
        if unknown:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown query parameter {unknown[0]!r}; {request.url.path} takes task=",
            )
        task = request.query_params.get("task")
        if task is not None and task not in TASK_ENUMS:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown task {task!r}; tasks: {', '.join(TASK_ENUMS)}",
            )
        return task

    async def _training(self, request: Request) -> Response:
        """What each task's training says, with its curves: the page's learning panel."""
        try:
            self._check(request)
            task = self._task_query(request)
            if self.servicer is None:
                raise ApiError(grpc.StatusCode.UNAVAILABLE, "the server is starting")
            found = await anyio.to_thread.run_sync(
                self.servicer.predictor.training, task, True, limiter=self._limiter
            )
            return JSONResponse({"training": found}, headers={"cache-control": "no-cache"})
        except ApiError as err:
            return error_response(err)

    async def _models(self, request: Request) -> Response:
        try:
            self._check(request)
            task = self._task_query(request)
            message = pb.GetModelMetadataRequest(task=TASK_ENUMS.get(task, pb.TASK_UNSPECIFIED))
            context = _Context(self._deadline(request))
            self._admit()
            try:
                return await self._call("GetModelMetadata", message, context)
            finally:
                self._active -= 1
        except ApiError as err:
            return error_response(err)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        if self.leaving:
            return JSONResponse({"ready": False, "reason": "shutting down"}, status_code=503)
        if self.servicer is None:
            return JSONResponse({"ready": False, "reason": "loading models"}, status_code=503)
        models = self.servicer.predictor.models
        if not models:
            return JSONResponse({"ready": False, "reason": "no models loaded"}, status_code=503)
        versions = {task: m.version for task, m in models.items()}
        return JSONResponse({"ready": True, "models": versions})

    async def _page(self, request: Request) -> Response:
        return FileResponse(WEB_DIR / PAGE_FILES[request.url.path])

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
        given = (getattr(exc, "headers", None) or {}).get("Allow", "GET, HEAD")
        methods = {m.strip() for m in given.split(",")}  # Starlette's order follows a set's
        allowed = ", ".join(m for m in ALL_METHODS if m in methods)
        return error_response(
            ApiError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{request.method} is not allowed on {request.url.path}: use {allowed}",
                http_status=405,
            ),
            {"allow": allowed},
        )


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "unknown peer"


def _host_name(host: str) -> str:
    """A Host header's name, without the port: "[::1]:8080" → "::1", "a.b:80" → "a.b"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Guard:
    """ASGI middleware: what a request must be before anything else looks at it.

    - A POST must say `Content-Type: application/json` (415): a browser sends text/plain or a
      form from any page without asking (no CORS preflight), JSON only after a preflight this
      server does not grant to other origins.
    - Its Host must be one of `allowed_hosts` (400): a hostile page whose name is made to
      resolve to this machine (DNS rebinding) sends its own name.
    - An Origin, when sent, must be this server's own or one of `cors_origins` (403).

    /healthz and /readyz skip the Host and Origin checks: probes send the pod's address.
    """

    def __init__(self, app, allowed_hosts, cors_origins):
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {_host_name(h) for h in allowed_hosts}
        self.any_origin = "*" in cors_origins
        self.origins = {o.lower().rstrip("/") for o in cors_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            response = error_response(refusal, {"connection": "close"})
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)

    def _refusal(self, scope) -> ApiError | None:
        headers = scope["headers"]

        def header(name: bytes) -> str | None:
            values = [v for k, v in headers if k == name]
            return values[0].decode("latin-1") if len(values) == 1 else None

        if scope["method"] == "POST":
            kind = (header(b"content-type") or "").split(";")[0].strip().lower()
            if kind != "application/json":
                return ApiError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a POST body must be JSON sent as Content-Type: application/json, got "
                    f"{kind or 'none'}",
                    http_status=415,
                )
        if scope["path"] in ("/healthz", "/readyz"):
            return None
        host = header(b"host")
        if host is None or not (self.any_host or _host_name(host) in self.hosts):
            return ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"this server does not answer to the Host {host!r} (http.allowed_hosts: "
                f"{', '.join(sorted(self.hosts)) or 'none'})",
            )
        origin = header(b"origin")
        if origin is not None:
            own = f"{scope.get('scheme', 'http')}://{host}".lower()
            origin = origin.lower().rstrip("/")
            if origin != own and not self.any_origin and origin not in self.origins:
                return ApiError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"requests from pages of {origin} are not allowed (http.cors_origins)",
                )
        return None


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
        route = path if path in METRIC_ROUTES else "/static" if path in PAGE_FILES else "other"
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


class _QuietInvalidRequests(logging.Filter):
    """uvicorn logs a WARNING for every request h11 cannot parse (a bad Content-Length, say):
    here one line per 10 s at most, with the count of those left out."""

    def __init__(self, every: float = 10.0):
        super().__init__()
        self.limit = RateLimitedLog(every)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Invalid HTTP request received.":
            return True
        quiet = self.limit.due()
        if quiet is None:
            return False
        record.msg = "invalid HTTP requests answered 400" + (
            f" ({quiet + 1} since the last such line)" if quiet else ""
        )
        record.args = ()
        return True


_QUIET = _QuietInvalidRequests()
logging.getLogger("uvicorn.error").addFilter(_QUIET)


def _guarded_protocol(header_timeout: float, max_connections: int):
    """uvicorn's h11 protocol with what it lacks against slow or too many clients:

    - a request's line and headers must arrive within `header_timeout` s of the connection
      (or of the previous response, on a kept-alive connection), else the connection is closed
      (uvicorn's keep-alive timer stops at the first byte, so a partial request line held it
      open forever);
    - beyond `max_connections` open connections a new one is answered 503 and closed.

    The body's own timeout is the app's (HttpApi, 408): it starts once the headers are in.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    busy = json.dumps(
        {
            "error": {
                "code": 503,
                "status": "UNAVAILABLE",
                "message": f"too many connections (http.max_connections {max_connections}): "
                "retry shortly",
            }
        }
    ).encode()
    refusal = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(busy)).encode() + b"\r\n\r\n" + busy
    )
    refused = RateLimitedLog()

    class GuardedH11(H11Protocol):
        _header_timer = None
        _timed_cycle = None

        def connection_made(self, transport) -> None:
            over = len(self.connections) >= max_connections
            super().connection_made(transport)
            if over:
                refused("HTTP connection refused: %d open (http.max_connections)", max_connections)
                transport.write(refusal)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self._header_timer is None:
                self._arm()  # the first byte of the next request: the keep-alive timer stops
            super().data_received(data)

        def on_response_complete(self) -> None:
            self._disarm()
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._timed_cycle = self.cycle
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self.cycle is self._timed_cycle and not self.transport.is_closing():
                self.transport.close()  # no new request started: its headers never came

    return GuardedH11


class HttpServer:
    """uvicorn serving `app` on host:port (TLS with cert + key) in a background thread.

    `header_timeout` and `max_connections`: see `_guarded_protocol`."""

    def __init__(
        self,
        app,
        host: str,
        port: int,
        *,
        tls_cert: str = "",
        tls_key: str = "",
        grace: float = 30.0,
        header_timeout: float = 10.0,
        max_connections: int = 512,
    ):
        self._socket = bind(host, port, "for HTTP ", listen=True)
        self.host = host
        self.port = self._socket.getsockname()[1]
        self.scheme = "https" if tls_cert else "http"
        config = uvicorn.Config(
            app,
            http=_guarded_protocol(header_timeout, max_connections),
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
