"""Replicas behind Envoy (deploy/envoy.yaml, serving/replicas.py): the configuration rendered for
N replicas, the version roll across replicas of one repository, the supervisor's command line,
and on loopback two tiny-model replicas behind a real Envoy taking load while one is stopped
and started again and a new version is exported."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from servers import ROOT, Server, free_port, http_call, wait_for
from test_publish import Loaded, write_version

from serving.client import Client, ServingError
from serving.replicas import (
    GRPC_CLUSTER,
    HTTP_CLUSTER,
    Ports,
    admin_get,
    envoy_binary,
    envoy_command,
    free_port_block,
    healthy_hosts,
    load_template,
    render,
    replica_ports,
)
from serving.server.errors import ModelUnavailable, VersionNotFound
from serving.server.manager import VersionManager
from serving.server.versions import VersionPolicy

# --- the configuration --------------------------------------------------------------------------


def endpoints(cfg: dict, cluster: str) -> list[int]:
    (found,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == cluster]
    return [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for group in found["load_assignment"]["endpoints"]
        for e in group["lb_endpoints"]
    ]


def listener_port(cfg: dict, name: str) -> int:
    (found,) = [x for x in cfg["static_resources"]["listeners"] if x["name"] == name]
    return found["address"]["socket_address"]["port_value"]


def validate(cfg: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_committed_configuration_is_valid_and_rendered_for_any_number_of_replicas(tmp_path):
    template = load_template()
    # as committed: two replicas at the ports make serve-replicas gives them
    assert endpoints(template, GRPC_CLUSTER) == [p.grpc for p in replica_ports(21061, 2)]
    assert endpoints(template, HTTP_CLUSTER) == [p.http for p in replica_ports(21061, 2)]
    ports = replica_ports(40001, 3)
    assert ports[2] == Ports(40007, 40008, 40009)
    cfg = render(template, ports, ("0.0.0.0", 7000), ("127.0.0.1", 7001), 7002)
    assert endpoints(cfg, GRPC_CLUSTER) == [40001, 40004, 40007]
    assert endpoints(cfg, HTTP_CLUSTER) == [40002, 40005, 40008]
    assert listener_port(cfg, "grpc") == 7000 and listener_port(cfg, "http") == 7001
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 7002}
    # nothing else changed: the health checks, retries and outlier detection are the file's
    (grpc,) = [c for c in cfg["static_resources"]["clusters"] if c["name"] == GRPC_CLUSTER]
    assert grpc["health_checks"][0]["grpc_health_check"]["service_name"] == (
        "seq2seq.serving.v1.Seq2SeqService"
    )
    assert grpc["circuit_breakers"]["thresholds"][0]["retry_budget"]["budget_percent"] == {
        "value": 50.0
    }
    assert (
        template["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        == 50051
    )  # the template itself is untouched
    done = validate(cfg, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # the HTTP API off: no HTTP listener or cluster
    grpc_only = render(template, ports, ("127.0.0.1", 7000), None, 7002)
    assert [x["name"] for x in grpc_only["static_resources"]["listeners"]] == ["grpc"]
    assert [c["name"] for c in grpc_only["static_resources"]["clusters"]] == [GRPC_CLUSTER]
    done = validate(grpc_only, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_configuration_without_the_expected_parts_is_refused_by_name(tmp_path):
    template = load_template()
    template["static_resources"]["clusters"][1]["name"] = "other"
    with pytest.raises(ValueError, match="no cluster named 'seq2seq_http'"):
        render(template, replica_ports(40001, 2), ("127.0.0.1", 1), ("127.0.0.1", 2), 3)
    with pytest.raises(ValueError, match="not an Envoy static configuration"):
        render({"admin": {}}, replica_ports(40001, 2), ("127.0.0.1", 1), None, 3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("admin: [unclosed\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        load_template(bad)
    with pytest.raises(ValueError, match="cannot read the Envoy configuration"):
        load_template(tmp_path / "missing.yaml")


# --- the roll: replicas of one repository, a version apart for a few seconds ----------------------


def test_a_replica_behind_says_unavailable_for_a_version_it_has_not_loaded_yet(tmp_path):
    models = tmp_path / "models"
    repo = models / "classify"
    write_version(repo, {"task": "classify"})
    manager = VersionManager(models, load=Loaded)
    write_version(repo, {"task": "classify"})  # v2 exported; the watcher has not loaded it
    with pytest.raises(ModelUnavailable, match="version 2 is in the repository but not loaded"):
        manager.acquire("classify", version=2)
    # a version that is not there, or that the policy does not serve, is not coming: NOT_FOUND
    with pytest.raises(VersionNotFound, match="version 3 is not loaded"):
        manager.acquire("classify", version=3)
    manager.set_versions({"classify": VersionPolicy(latest=None, specific=(1,))}, {})
    with pytest.raises(VersionNotFound, match="version 2 is not loaded"):
        manager.acquire("classify", version=2)


def test_a_version_that_failed_to_load_is_not_found_rather_than_coming(tmp_path):
    models = tmp_path / "models"
    repo = models / "classify"
    write_version(repo, {"task": "classify"})
    write_version(repo, {"task": "classify"})

    def load(path, task):
        if path.name == "2":
            raise ValueError("broken")
        return Loaded(path, task)

    manager = VersionManager(models, load=load)
    assert manager.served_versions()["classify"] == [1]
    with pytest.raises(VersionNotFound, match="version 2 is not loaded"):
        manager.acquire("classify", version=2)


class Gauge:
    """The version metric of a VersionManager's metrics sink."""

    def __init__(self):
        self.versions = {}

    def model_loaded(self, task: str, version: int) -> None:
        self.versions[task] = version

    def reload(self, task: str, ok: bool) -> None:
        pass


def test_a_replaced_version_is_served_for_retire_seconds_after_the_new_one_arrived(
    tmp_path, monkeypatch
):
    models = tmp_path / "models"
    repo = models / "classify"
    write_version(repo, {"task": "classify"})
    manager = VersionManager(models, load=Loaded, retire_seconds=30)
    assert manager.served_versions()["classify"] == [1]
    write_version(repo, {"task": "classify"})  # v2 arrives now
    manager.refresh("classify", wait_until_stable=False)
    assert manager.served_versions()["classify"] == [2, 1]
    assert manager.models["classify"].version == 2  # the default is the new one
    held = manager.acquire("classify", version=1)
    assert held.model.version == 1
    manager.release(held)
    # a replica that starts during the roll serves the old version too, until the same moment;
    # its metrics name the version served by default, the new one (loaded first)
    gauge = Gauge()
    late = VersionManager(models, load=Loaded, retire_seconds=30, metrics=gauge)
    assert late.served_versions()["classify"] == [2, 1] and gauge.versions["classify"] == 2
    arrived = (repo / "2").stat().st_ctime
    for m in (manager, late):
        monkeypatch.setattr(time, "time", lambda: arrived + 29)
        m.refresh("classify")
        assert m.served_versions()["classify"] == [2, 1]
        monkeypatch.setattr(time, "time", lambda: arrived + 31)
        m.refresh("classify")
        assert m.served_versions()["classify"] == [2]
        with pytest.raises(VersionNotFound):
            m.acquire("classify", version=1)
    monkeypatch.undo()
    # without it (one server: the default), a replaced version goes at once
    write_version(repo, {"task": "classify"})
    assert VersionManager(models, load=Loaded).served_versions()["classify"] == [3]
    assert VersionManager(models, load=Loaded, retire_seconds=30).served_versions()["classify"] == [
        3,
        2,
    ]


# --- the supervisor's command line ----------------------------------------------------------------


def replicas_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.replicas", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def test_bad_replica_settings_are_refused_with_a_clear_message(tmp_path):
    done = replicas_cli("--replicas", "0", "--", "--model-dir", str(tmp_path))
    assert done.returncode == 2 and "--replicas must be in [1, 32], got 0" in done.stderr
    done = replicas_cli("--first-port", "65533", "--", "--model-dir", str(tmp_path))
    assert done.returncode == 2 and "the replicas' ports would end at 65538" in done.stderr
    done = replicas_cli("--", "--port", "0")
    assert done.returncode == 2 and "give Envoy fixed ports" in done.stderr
    done = replicas_cli("--", "--tls-cert", "a.pem", "--tls-key", "b.pem")
    assert done.returncode != 0 and "terminate it at Envoy" in done.stderr
    bad = tmp_path / "envoy.yaml"
    bad.write_text("static_resources: {listeners: [], clusters: []}\nadmin: {}\n")
    done = replicas_cli("--envoy-config", str(bad), "--print-config")
    assert done.returncode == 2 and "no listener named 'grpc'" in done.stderr


def test_check_names_a_replica_port_that_is_taken(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        first = taken - 4  # the taken port is replica 1's HTTP port
        done = replicas_cli(
            "--first-port", str(first), "--admin-port", str(free_port()), "--check", "--",
            "--port", str(free_port()), "--http-port", str(free_port()),
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot listen for replica 1 on 127.0.0.1:{taken}" in done.stderr


def test_print_config_shows_envoy_as_it_would_run():
    done = replicas_cli("--replicas", "3", "--print-config", "--", "--port", "6000",
                        "--http-port", "6001")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "port_value: 6000" in done.stdout and "port_value: 21067" in done.stdout
    assert "grpc_health_check" in done.stdout and "&" not in done.stdout  # no YAML anchors


# --- two replicas behind a real Envoy, on loopback -----------------------------------------------


def metric(ports: Ports, name: str, **labels) -> float:
    """A replica's Prometheus value (0 when the series is absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{ports.metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{([^}]*)\} (\S+)$", line)
        if m and m.group(1) == name:
            have = ",".join(sorted(m.group(2).split(",")))
            if all(part in have.split(",") for part in want.split(",") if part):
                total += float(m.group(3))
    return total


def served(ports: Ports) -> float:
    """Translate and Classify calls a replica answered, over gRPC and HTTP."""
    grpc_calls = sum(
        metric(ports, "seq2seq_requests_total", rpc=r) for r in ("Translate", "Classify")
    )
    http_calls = sum(
        metric(ports, "seq2seq_http_requests_total", route=r)
        for r in ("/v1/translate", "/v1/classify")
    )
    return grpc_calls + http_calls


class Fleet:
    """Envoy (deploy/envoy.yaml, rendered) in front of replicas the test starts and stops."""

    def __init__(self, repo: Path, tmp_path: Path, count: int = 2):
        self.repo = repo
        # restarted on the same ports: a block below the ephemeral range (free_port_block)
        self.ports = replica_ports(free_port_block(3 * count), count)
        self.grpc, self.http, self.admin = free_port(), free_port(), free_port()
        config = render(
            load_template(), self.ports, ("127.0.0.1", self.grpc), ("127.0.0.1", self.http),
            self.admin,
        )  # fmt: skip
        path = tmp_path / "envoy.json"
        path.write_text(json.dumps(config))
        self.replicas: list[Server | None] = [None] * count
        starting = [threading.Thread(target=self.start, args=(i,)) for i in range(count)]
        for t in starting:
            t.start()
        self.envoy = subprocess.Popen(
            envoy_command(path, self.admin), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for t in starting:
            t.join()
        for i in range(count):
            wait_for(lambda i=i: self.in_rotation(i), 60, what=f"replica {i} in Envoy's rotation")

    def start(self, i: int) -> None:
        p = self.ports[i]
        self.replicas[i] = Server(
            self.repo, "--http-port", str(p.http), "--metrics-port", str(p.metrics),
            "--retire-seconds", "30", port=p.grpc,
        )  # fmt: skip

    def in_rotation(self, i: int) -> bool:
        hosts = healthy_hosts(self.admin) or {}
        p = self.ports[i]
        return p.grpc in hosts.get(GRPC_CLUSTER, ()) and p.http in hosts.get(HTTP_CLUSTER, ())

    def out_of_rotation(self, i: int) -> bool:
        hosts = healthy_hosts(self.admin) or {}
        p = self.ports[i]
        return p.grpc not in hosts.get(GRPC_CLUSTER, ()) and p.http not in hosts.get(
            HTTP_CLUSTER, ()
        )

    def stop(self) -> None:
        for server in self.replicas:
            if server is not None:
                server.stop()
        self.envoy.kill()
        self.envoy.wait(timeout=30)


def publish(repo: Path, task: str, source: Path, version: int) -> None:
    """An export as `make export-*` writes it: a hidden folder renamed into place."""
    tmp = repo / task / f".tmp-{version}"
    shutil.copytree(source, tmp)
    tmp.rename(repo / task / str(version))


TEXTS = {"translate": "Veo el gato.", "classify": "a good film 3"}


class Load:
    """`clients` threads sending translate and classify in turn through Envoy until `stop()`:
    the even ones over gRPC, the odd ones over HTTP, clients 2, 3 (mod 4) pinned to version 1.
    No retry of the client's own (retries=0): only Envoy may hide a failure."""

    def __init__(self, fleet: Fleet, clients: int):
        self.fleet = fleet
        self.answers: dict[tuple, set] = {}  # (task, version) → the answers seen
        self.versions_seen: dict[bool, set] = {True: set(), False: set()}  # pinned? → versions
        self.failures: list[str] = []
        self.counts = [0] * clients
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self.client, args=(k,)) for k in range(clients)]
        for t in self.threads:
            t.start()

    def call(self, rpc, task: str, pin: dict) -> tuple[int, str]:
        if rpc is not None:
            call = rpc.translate if task == "translate" else rpc.classify
            (result,) = call([TEXTS[task]], **pin)
            return result.model_version, result.text if task == "translate" else result.label
        status, body, _ = http_call(
            f"http://127.0.0.1:{self.fleet.http}", "POST", f"/v1/{task}",
            {"texts": [TEXTS[task]], **pin},
        )  # fmt: skip
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {body}")
        first = body["translations" if task == "translate" else "results"][0]
        answer = first["hypotheses"][0]["text"] if task == "translate" else first["label"]
        return int(body["model_version"]), answer

    def client(self, k: int) -> None:
        over_grpc, pinned = k % 2 == 0, k % 4 >= 2
        pin = {"model_version": 1} if pinned else {}
        target = f"127.0.0.1:{self.fleet.grpc}"
        rpc = Client(target, timeout=30, retries=0) if over_grpc else None
        n = 0
        while not self.done.is_set():
            task = ("translate", "classify")[n % 2]
            n += 1
            try:
                version, answer = self.call(rpc, task, pin)
            except (ServingError, RuntimeError, OSError) as err:
                with self.lock:
                    when = time.monotonic() - self.t0
                    self.failures.append(f"{when:5.1f} s client {k} {task}: {err}")
                continue
            with self.lock:
                self.counts[k] += 1
                self.answers.setdefault((task, version), set()).add(answer)
                self.versions_seen[pinned].add(version)
        if rpc is not None:
            rpc.close()

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(timeout=60)

    def check(self) -> None:
        failures = self.failures
        retries = admin_get(self.fleet.admin, "/stats?filter=retry") or ""  # Envoy's counters
        assert not failures, (
            f"{len(failures)} failed requests:\n" + "\n".join(failures[:20]) + "\n" + retries
        )
        assert sum(self.counts) > 5 * len(self.counts) and min(self.counts) > 0, self.counts
        counted = [line.strip() for line in retries.splitlines() if not line.endswith(": 0")]
        print(f"{sum(self.counts)} requests answered by {len(self.counts)} clients, 0 failed; "
              f"Envoy: {'; '.join(counted)}")  # fmt: skip


@pytest.mark.slow
def test_no_request_fails_while_a_replica_is_stopped_and_started_and_a_version_rolls_out(
    models, tmp_path
):
    """16 clients × 20 s of translate + classify through Envoy, half over gRPC, half over HTTP,
    half of each pinned to version 1; replica 0 gets SIGTERM at 5 s and starts again at 12 s;
    version 2 of both tasks is exported at 9 s, so that replica 1 loads it while replica 0 is
    down, and replica 0 starts with it: both still answer for version 1 (models.retire_seconds).
    """
    repo = tmp_path / "models"
    for task in ("translate", "classify"):
        publish(repo, task, models / task / "1", 1)
    fleet = Fleet(repo, tmp_path)
    load = Load(fleet, 16)
    t0 = load.t0
    try:
        time.sleep(max(0.0, t0 + 4.5 - time.monotonic()))
        before = served(fleet.ports[0])  # replica 0 has served its share
        time.sleep(max(0.0, t0 + 5 - time.monotonic()))
        first = fleet.replicas[0]
        first.proc.send_signal(signal.SIGTERM)  # leaves the rotation, drains, exits
        # out of both clusters (gRPC health NOT_SERVING, /readyz 503) within its 5-s drain
        # window, while it still answers
        # (each cluster has its own health checker: both must have taken it out)
        wait_for(lambda: fleet.out_of_rotation(0), 4, what="replica 0 out of both clusters")
        assert first.proc.poll() is None, "replica 0 stopped before it left the rotation"
        time.sleep(max(0.0, t0 + 9 - time.monotonic()))
        for task in ("translate", "classify"):
            publish(repo, task, models / task / "1", 2)
        time.sleep(max(0.0, t0 + 12 - time.monotonic()))
        assert first.proc.wait(timeout=60) == 0, first.log()
        restart = threading.Thread(target=fleet.start, args=(0,))
        restart.start()
        time.sleep(max(0.0, t0 + 20 - time.monotonic()))
        load.stop()
        restart.join(timeout=120)
        load.check()
        assert before > 0, "replica 0 served nothing before it was stopped"
        log = first.log()
        assert "not serving: health says NOT_SERVING" in log and "drained in" in log
        # the restarted replica is back in rotation and serves (its counters start at 0)
        wait_for(lambda: fleet.in_rotation(0), 60, what="replica 0 back in rotation")
        with Client(f"127.0.0.1:{fleet.grpc}", timeout=30, retries=0) as c:

            def both_served() -> bool:
                c.classify([TEXTS["classify"]])
                http_call(f"http://127.0.0.1:{fleet.http}", "POST", "/v1/classify",
                          {"texts": [TEXTS["classify"]]})  # fmt: skip
                return served(fleet.ports[0]) > 0 and served(fleet.ports[1]) > 0

            wait_for(both_served, 60, every=0.05, what="both replicas serving")
        # the new export reached both replicas
        for p in fleet.ports:
            for task in ("translate", "classify"):
                wait_for(
                    lambda p=p, task=task: metric(p, "seq2seq_model_version", task=task) == 2,
                    60,
                    what=f"version 2 of {task} on the replica at {p.grpc}",
                )
        # pinned requests were answered by version 1 only, unpinned ones by 1 then 2; every
        # replica gave the same answer for a version (the same weights, deterministic decoding)
        assert load.versions_seen[True] == {1}
        assert load.versions_seen[False] == {1, 2}
        for key, seen in load.answers.items():
            assert len(seen) == 1, (key, seen)
    finally:
        load.stop()
        fleet.stop()


def pids_of(module: str) -> list[int]:
    """Live processes running `python -m <module>`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if module.encode() in args:
            found.append(int(entry.name))
    return found


def pid_listening(port: int) -> int | None:
    """The pid of a live `python -m serving` started with `--port port` (None: none)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ")[1][0]
        except OSError:
            continue
        if state != "Z" and b"serving" in args and str(port).encode() in args:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_serve_replicas_restarts_a_dead_replica_rolls_on_sighup_and_ctrl_c_stops_all(
    models, tmp_path
):
    """`make serve-replicas`'s command (serving.launcher --replicas 2) over exported models:
    Envoy answers gRPC and HTTP, a replica killed with -9 is started again and comes back into
    rotation, SIGHUP restarts both one at a time under load with no failed request, and one
    Ctrl-C (SIGINT) stops the replicas and Envoy."""
    repo = tmp_path / "models"
    for task in ("translate", "classify"):
        publish(repo, task, models / task / "1", 1)
    first = free_port_block(6)
    admin, grpc_port, http_port = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "serving.launcher", "--preset", "tiny", "--model-dir", str(repo),
           "--replicas", "2", "--first-port", str(first), "--admin-port", str(admin), "--",
           "--port", str(grpc_port), "--http-port", str(http_port)]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    listening = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("seq2seq replicas listening on"):
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    ports = replica_ports(first, 2)
    try:
        assert listening.wait(120), "".join(lines)
        with Client(f"127.0.0.1:{grpc_port}", timeout=30, retries=0) as c:
            assert c.classify(["a good film 3"])[0].label in ("pos", "neg")
        base = f"http://127.0.0.1:{http_port}"
        status, body, _ = http_call(base, "POST", "/v1/translate", {"texts": ["Veo el gato."]})
        assert status == 200 and body["model_version"] == "1"
        status, page, _ = http_call(base, "GET", "/")
        assert status == 200 and "<html" in page
        # a request's own timeout header reaches the replica, which judges it
        status, body, _ = http_call(base, "POST", "/v1/classify", {"texts": ["a good film"]},
                                    headers=[("X-Request-Timeout-Ms", "soon")])  # fmt: skip
        assert status == 400 and "x-request-timeout-ms must be" in body["error"]["message"]
        # kill -9 replica 1: the supervisor starts it again, Envoy takes it back
        dead = pid_listening(ports[1].grpc)
        assert dead and pid_listening(ports[0].grpc)
        os.kill(dead, signal.SIGKILL)
        wait_for(lambda: any("replica 1 exited (-9)" in line for line in lines), 30,
                 what="the supervisor to see replica 1 die")  # fmt: skip
        wait_for(lambda: pid_listening(ports[1].grpc) not in (None, dead), 30, what="a new one")
        wait_for(
            lambda: ports[1].grpc in (healthy_hosts(admin) or {}).get(GRPC_CLUSTER, ()),
            120,
            what="replica 1 back in rotation",
        )
        # kill -HUP the supervisor: the replicas restart one at a time, under load, and no
        # request fails
        (supervisor,) = [pid for pid in pids_of("serving.replicas") if pid != proc.pid]
        before = [pid_listening(p.grpc) for p in ports]
        load = Load(SimpleNamespace(grpc=grpc_port, http=http_port, admin=admin), 4)
        os.kill(supervisor, signal.SIGHUP)
        try:
            wait_for(lambda: any("rolling restart done" in line for line in lines), 180,
                     what="the rolling restart")  # fmt: skip
        except AssertionError as err:
            raise AssertionError(f"{err}; the supervisor said:\n" + "".join(lines[-60:])) from None
        finally:
            load.stop()
        load.check()
        pids = [pid_listening(p.grpc) for p in ports]
        assert all(pids) and not set(pids) & set(before)  # both are new processes
        proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends (to the launcher)
        assert proc.wait(timeout=90) == 0, "".join(lines)
        text = "".join(lines)
        # two stopped by the roll, two by Ctrl-C (the one killed -9 says nothing)
        assert text.count("seq2seq server stopped") == 4 and "seq2seq replicas stopped" in text
        for pid in pids:
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists()
                     or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1],
                     10, what=f"replica process {pid} gone")  # fmt: skip
        assert healthy_hosts(admin) is None  # Envoy's admin is gone with it
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.slow
def test_a_replica_killed_under_load_fails_no_request(models, tmp_path):
    """kill -9 (no drain: requests in flight on it are cut, its port refuses) while 8 clients
    send through Envoy: Envoy retries those on the other replica."""
    repo = tmp_path / "models"
    for task in ("translate", "classify"):
        publish(repo, task, models / task / "1", 1)
    fleet = Fleet(repo, tmp_path)
    load = Load(fleet, 8)
    try:
        time.sleep(3)
        killed = fleet.replicas[1]
        killed.proc.kill()
        killed.proc.wait(timeout=30)
        time.sleep(4)
        load.stop()
        load.check()
        assert served(fleet.ports[0]) > 0
        wait_for(lambda: fleet.out_of_rotation(1), 10, what="the dead replica out of both")
    finally:
        load.stop()
        fleet.stop()


@pytest.mark.slow
def test_bench_replicas_compares_envoy_with_the_server_alone_beside_it(models, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"a good film {i}\n" for i in range(20)), encoding="utf-8")
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "serving.bench.replicas", "--model-dir", str(models), "--tasks",
         "classify", "--seconds", "0.5", "--texts-file", str(texts), "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    results = json.loads(out.read_text())
    setups = results["tasks"]["classify"]
    assert list(setups) == ["Envoy + 1 replica", "Envoy + 2 replicas"]
    for points in setups.values():
        assert list(points) == ["gRPC 1", "gRPC 32", "HTTP 32"]
        for point in points.values():
            direct, envoy = point["direct"], point["envoy"]
            assert direct["sentences_per_s"] > 0 and envoy["sentences_per_s"] > 0
            assert point["ratio"] == pytest.approx(
                envoy["sentences_per_s"] / direct["sentences_per_s"]
            )
    proxy = results["proxy"]
    assert set(proxy) == {"direct", "Envoy", "direct again"}
    assert all(r["errors"] == {} and r["requests"] > 0 for r in proxy.values())
    assert "Envoy adds" in run.stdout and "errors" not in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "serving.bench.replicas", "--model-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and "no exported translate model" in bad.stderr
