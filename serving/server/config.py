"""The server's settings: dataclass defaults < YAML file (--config) < environment < flags.

The YAML file has the sections below, each optional; an unknown section or key, or a value of
the wrong type, is an error that names it. `serving/server/config.example.yaml` lists every setting.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from serving.server import versions
from serving.server.batching import BatchingOptions
from serving.server.errors import TASKS, Limits


@dataclass
class ServerSection:
    host: str = "127.0.0.1"  # bind address; loopback unless you mean to expose it
    port: int = 50051  # gRPC port (0: any free port)
    # threads that run HTTP calls (each waits while its request is in a batch); a gRPC call
    # gets a thread of its own, up to max_concurrent_rpcs (serving.server.health)
    workers: int = 64
    max_concurrent_rpcs: int = 256  # more calls at once are refused with RESOURCE_EXHAUSTED
    device: str = "cpu"  # cpu | gpu (gpu: fail at start when TensorFlow sees none)
    tf_threads: int = 1  # TensorFlow threads inside one model call (0: TensorFlow's default)
    grace_seconds: float = 30.0  # on SIGTERM/SIGINT, time given to in-flight rpcs
    # on SIGTERM, time health says NOT_SERVING (and /readyz 503) while requests are still
    # answered, before the server stops taking them: a load balancer's window to take it out
    # of rotation (Kubernetes: at least the readiness probe's period). Ctrl-C skips it.
    drain_seconds: float = 5.0
    # resident memory (MiB) over which new requests are refused with RESOURCE_EXHAUSTED;
    # 0: auto (1.5 × the RSS with the models loaded), -1: none (serving.server.memory)
    memory_budget_mib: int = 0
    # TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS): off, since with them the RSS
    # grows with every new batch shape (+230 MiB under load, never given back) for no
    # measured speed on these models; it rounds differently in the last bits (scores ~1e-6
    # from a process with oneDNN; true: bit-equal); TF_ENABLE_ONEDNN_OPTS, if set, wins
    onednn: bool = False


@dataclass
class ModelsSection:
    model_dir: str = "models"  # repository root: <model_dir>/<task>/<version>/
    poll_seconds: float = 2.0  # how often to look for new versions and config changes (0: never)
    versions: dict = field(default_factory=dict)  # {task: {latest: N} | {specific: [v, …]}}
    labels: dict = field(default_factory=dict)  # {task: {label: version}}
    # Intermediate versions of a live training run (make serve) kept on disk: the newest N;
    # older ones are deleted unless a label names them or the server serves them. 0: keep all.
    # Final versions and versions exported by hand are never deleted.
    keep_intermediate: int = 3
    # A version replaced by a newer one is still served this long to requests that name it
    # (by number or label): replicas of one repository load a new version seconds apart, and
    # meanwhile every one of them answers for the old one. make serve-replicas: 30.
    retire_seconds: float = 0.0

    def policies(self):
        return versions.parse_policies(self.versions)

    def version_labels(self):
        return versions.parse_labels(self.labels, self.policies())


@dataclass
class SecuritySection:
    tls_cert: str = ""  # PEM certificate (chain); with tls_key, serve TLS only
    tls_key: str = ""  # PEM private key
    token_file: str = ""  # file holding the bearer token clients must send (or env SEQ2SEQ_TOKEN)


@dataclass
class MetricsSection:
    port: int = -1  # Prometheus /metrics HTTP port (-1: off, 0: any free port)
    host: str = "127.0.0.1"  # its bind address


LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


@dataclass
class HttpSection:
    port: int = -1  # HTTP/JSON API and web page port (-1: off, 0: any free port)
    host: str = "127.0.0.1"  # its bind address
    # Host header names (no port) the API and page answer to: anything else is refused
    # (DNS rebinding: a hostile page's name resolving to this machine). "*": any. /healthz
    # and /readyz answer any Host (probes use the pod's address).
    allowed_hosts: list = field(default_factory=lambda: list(LOOPBACK_NAMES))
    # origins (scheme://host[:port]) whose pages may call the API from a browser (CORS);
    # none by default: only the server's own page may
    cors_origins: list = field(default_factory=list)
    max_connections: int = 512  # open connections; more are answered 503 and closed
    header_timeout_seconds: float = 10.0  # a request's line and headers must arrive within
    body_timeout_seconds: float = 30.0  # ... and its body within this after them (else 408)
    # a call's deadline when the request sets none (header X-Request-Timeout-Ms); 0: none
    request_timeout_seconds: float = 60.0


@dataclass
class ServingConfig:
    server: ServerSection = field(default_factory=ServerSection)
    models: ModelsSection = field(default_factory=ModelsSection)
    batching: BatchingOptions = field(default_factory=BatchingOptions)
    limits: Limits = field(default_factory=Limits)
    security: SecuritySection = field(default_factory=SecuritySection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    http: HttpSection = field(default_factory=HttpSection)

    def validate(self) -> ServingConfig:
        s = self.server
        if not 0 <= s.port <= 65535:
            raise ValueError(f"server.port must be in [0, 65535], got {s.port}")
        if s.workers < 1 or s.max_concurrent_rpcs < 1:
            raise ValueError("server.workers and server.max_concurrent_rpcs must be ≥ 1")
        if s.tf_threads < 0:
            raise ValueError(
                f"server.tf_threads must be ≥ 0 (0: TensorFlow's default), got {s.tf_threads}"
            )
        if s.device not in ("cpu", "gpu"):
            raise ValueError(f"server.device must be cpu or gpu, got {s.device!r}")
        if s.memory_budget_mib < -1:
            raise ValueError(
                "server.memory_budget_mib must be -1 (none), 0 (auto: 1.5 × the RSS once the "
                f"models are loaded) or a number of MiB, got {s.memory_budget_mib}"
            )
        if not isinstance(self.models.keep_intermediate, int) or self.models.keep_intermediate < 0:
            raise ValueError(
                "models.keep_intermediate must be an integer ≥ 0 (0: keep every version), got "
                f"{self.models.keep_intermediate!r}"
            )
        if min(s.grace_seconds, s.drain_seconds, self.models.poll_seconds) < 0:
            raise ValueError(
                "server.grace_seconds, server.drain_seconds and models.poll_seconds must be ≥ 0"
            )
        if self.models.retire_seconds < 0:
            raise ValueError(
                f"models.retire_seconds must be ≥ 0 (0: at once), got {self.models.retire_seconds}"
            )
        threads = self.batching.threads
        unknown = sorted(set(threads) - set(TASKS)) if isinstance(threads, dict) else []
        if unknown:
            raise ValueError(
                f"batching.threads: unknown task {unknown[0]!r}; tasks: {', '.join(TASKS)}"
            )
        if bool(self.security.tls_cert) != bool(self.security.tls_key):
            raise ValueError("security.tls_cert and security.tls_key go together: give both")
        if not -1 <= self.metrics.port <= 65535:
            raise ValueError(
                f"metrics.port must be -1 (off) or in [0, 65535], got {self.metrics.port}"
            )
        h = self.http
        if not -1 <= h.port <= 65535:
            raise ValueError(f"http.port must be -1 (off) or in [0, 65535], got {h.port}")
        for name in ("allowed_hosts", "cors_origins"):
            value = getattr(h, name)
            if not all(isinstance(v, str) and v and v == v.strip() for v in value):
                raise ValueError(f"http.{name} must be a list of non-empty names, got {value!r}")
        bad = [o for o in h.cors_origins if o != "*" and not re.match(r"^https?://[^/]+$", o)]
        if bad:
            raise ValueError(
                f"http.cors_origins: an origin is scheme://host[:port] (no path), got {bad[0]!r}"
            )
        if h.max_connections < 1:
            raise ValueError(f"http.max_connections must be ≥ 1, got {h.max_connections}")
        for name in ("header_timeout_seconds", "body_timeout_seconds"):
            if not getattr(h, name) > 0:
                raise ValueError(f"http.{name} must be > 0, got {getattr(h, name)}")
        if h.request_timeout_seconds < 0:
            raise ValueError(
                f"http.request_timeout_seconds must be ≥ 0 (0: none), got "
                f"{h.request_timeout_seconds}"
            )
        self.models.version_labels()  # the version policy and labels parse (ValueError if not)
        for f in dataclasses.fields(self.limits):
            if getattr(self.limits, f.name) < 1:
                raise ValueError(f"limits.{f.name} must be ≥ 1")
        return self


def _typed(section: str, key: str, value, default):
    kind = type(default)
    if kind is dict and section == "models":  # versions, labels: checked by validate()
        return value
    if kind is dict:  # batching.threads: a number for every task, or {task: number}
        if isinstance(value, dict) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ValueError(f"{section}.{key} must be an integer or a mapping, got {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and value is None:
        return ""
    if type(value) is not kind:
        raise ValueError(
            f"{section}.{key} must be {kind.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def parse_threads(text: str) -> int | dict[str, int]:
    """`--batch-threads`: "2" (every task) or "translate=2,classify=1"."""
    import argparse

    try:
        if "=" not in text:
            return int(text)
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {task.strip(): int(n) for task, n in pairs}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or task=number,… (e.g. translate=2,classify=1), got {text!r}"
        ) from None


def load(path: str | Path | None = None, overrides: dict | None = None) -> ServingConfig:
    """Defaults, then the YAML file at `path`, then `overrides` ({"section.key": value})."""
    values: dict[str, dict] = {}
    if path:
        import yaml

        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ValueError(f"cannot read the serving config {path}: {err.strerror}") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"the serving config {path} is not UTF-8 text: {err}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise ValueError(f"{path}: expected sections (server:, batching:, …) of key: value")
        values = {k: dict(v) for k, v in loaded.items()}
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        values.setdefault(section, {})[key] = value
    base = ServingConfig()
    sections = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    built = {}
    for name, default in sections.items():
        given = values.pop(name, {})
        known = {f.name for f in dataclasses.fields(default)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ValueError(
                f"unknown setting {name}.{unknown[0]}; {name} has: {', '.join(sorted(known))}"
            )
        typed = {k: _typed(name, k, v, getattr(default, k)) for k, v in given.items()}
        built[name] = dataclasses.replace(default, **typed)
    if values:
        raise ValueError(f"unknown section {sorted(values)[0]!r}; sections: {', '.join(sections)}")
    return ServingConfig(**built).validate()
