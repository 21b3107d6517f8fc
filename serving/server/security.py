"""Transport security and authentication: TLS credentials and bearer-token checking.

Token auth: every rpc except the health service (load balancers and orchestrators probe it
without secrets) must carry `authorization: Bearer <token>` metadata, and every HTTP API call
the same header; `BearerToken` checks both.
The comparison is constant-time (hmac.compare_digest over SHA-256 digests, so neither the
content nor the length of the expected token leaks through timing); a missing or wrong token
is answered UNAUTHENTICATED before the request reaches the servicer.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import grpc

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def read_token(path: str | Path) -> str:
    """The token in a file (surrounding whitespace stripped); a clear error if unusable."""
    path = Path(path)
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise SystemExit(f"error: cannot read the token file {path}: {err.strerror}") from None
    if not token:
        raise SystemExit(f"error: the token file {path} is empty")
    if any(c.isspace() for c in token) or not token.isprintable():
        raise SystemExit(f"error: the token in {path} has whitespace or unprintable characters")
    return token


def server_credentials(cert_file: str | Path, key_file: str | Path) -> grpc.ServerCredentials:
    """TLS credentials from PEM certificate (chain) and private key files."""
    pems = []
    for what, path in (("certificate", cert_file), ("key", key_file)):
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise SystemExit(f"error: cannot read the TLS {what} {path}: {err.strerror}") from None
        if b"-----BEGIN" not in data:
            raise SystemExit(f"error: the TLS {what} {path} is not a PEM file")
        pems.append(data)
    return grpc.ssl_server_credentials([(pems[1], pems[0])])


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


MISSING_TOKEN = "missing bearer token: send the header 'authorization: Bearer <token>'"


class BearerToken:
    """Checks `authorization` values against the token, for gRPC metadata and HTTP headers."""

    def __init__(self, token: str):
        if not token:
            raise ValueError("the token is empty")
        self._expected = _digest(token)

    def refusal(self, values) -> str | None:
        """None when `values` (every `authorization` value sent) is one `Bearer <token>`;
        otherwise the reason to refuse. The scheme is case-insensitive (RFC 6750 / RFC 9110)."""
        values = [v.decode("latin-1") if isinstance(v, bytes) else v for v in values]
        if not values:
            return MISSING_TOKEN
        if len(values) > 1:
            return "more than one authorization header: send exactly one"
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return "unsupported authorization scheme: send 'authorization: Bearer <token>'"
        # constant-time over digests: neither the token's content nor its length leaks
        if hmac.compare_digest(_digest(credentials.strip()), self._expected):
            return None
        return "invalid bearer token"


class TokenAuth(grpc.ServerInterceptor):
    """Lets an rpc through only with `authorization: Bearer <token>` (health checks are open)."""

    def __init__(self, token: str, open_prefixes=OPEN_METHOD_PREFIXES):
        self._check = BearerToken(token)
        self._open = tuple(open_prefixes)

    def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(self._open):
            return continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        message = self._check.refusal([v for k, v in metadata if k == "authorization"])
        handler = continuation(handler_call_details)
        if message is None or handler is None:
            return handler
        return _denying(handler, message)


def _denying(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED."""

    def deny(_request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(bool(handler.request_streaming), bool(handler.response_streaming))]
    # no request_deserializer: the caller's bytes are never parsed (garbage from a caller
    # without a token is UNAUTHENTICATED, not a parse error)
    return make(deny, request_deserializer=None, response_serializer=handler.response_serializer)
