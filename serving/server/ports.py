"""Binding a listening address, with one clear message when it cannot be had (no TensorFlow)."""

from __future__ import annotations

import socket


def bind(host: str, port: int, what: str = "", listen: bool = False) -> socket.socket:
    """A socket bound to host:port (0: any free port), listening if `listen` (then the port is
    held: a second server fails here). SystemExit naming `what` and the reason if it cannot."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise SystemExit(f"error: cannot listen {what}on {host}:{port}: {err}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
        sock.bind(address)
        if listen:
            sock.listen(2048)
    except OSError as err:
        sock.close()
        reason = err.strerror or str(err)
        raise SystemExit(f"error: cannot listen {what}on {host}:{port}: {reason}") from None
    return sock
