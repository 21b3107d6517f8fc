"""Health as an orchestrator sees it: answered while model calls saturate the server, malformed
probes refused without a traceback, and a SIGTERM that says NOT_SERVING for the drain window
while requests are still answered. Real servers on loopback."""

import signal
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import PAIRS, Server, free_port, http_call, wait_for

from serving.client import Client, ServingError

Code = grpc.StatusCode
SERVING = health_pb2.HealthCheckResponse.SERVING
HEAVY = "Veo el gato y el perro duerme. " * 8  # 160 pieces: the tiny model reads it whole


# 64 clients of worst-case translations for `seconds`, in a process of their own (so that the
# probes below measure the server, not this process's interpreter lock shared with 64 threads):
# prints the status counts once after `report` seconds, and again at the end.
SATURATE = """
import json, sys, threading, time
from serving.client import Client, ServingError
target, seconds, report = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
text = "Veo el gato y el perro duerme. " * 8
codes, lock, end = {}, threading.Lock(), time.monotonic() + seconds
def client():
    with Client(target, timeout=60, retries=0) as c:
        while time.monotonic() < end:
            try:
                c.translate([text] * 8, beam_size=16, n_best=4, max_length=256)
                code = "OK"
            except ServingError as err:
                code = err.code.name
            with lock:
                codes[code] = codes.get(code, 0) + 1
threads = [threading.Thread(target=client) for _ in range(64)]
for t in threads:
    t.start()
time.sleep(report)
with lock:
    print(json.dumps(codes), flush=True)
for t in threads:
    t.join()
print(json.dumps(codes), flush=True)
"""


@pytest.mark.slow
def test_health_answers_within_100_ms_while_64_clients_saturate_the_model_calls(models, tmp_path):
    """64 clients send worst-case translations to a server that admits 16 model calls at once:
    every admitted call holds a thread, the rest are refused, and health still has threads of
    its own (it used to share gRPC's pool and maximum_concurrent_rpcs with the model calls)."""
    import json
    import subprocess
    import sys

    from servers import ROOT

    config = tmp_path / "serving.yaml"
    config.write_text(
        "server:\n  max_concurrent_rpcs: 16\nlimits:\n  max_request_cost: 1000000000\n"
    )
    srv = Server(models, "--config", str(config))
    load = subprocess.Popen(
        [sys.executable, "-c", SATURATE, srv.target, "8", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    latencies, answers = [], []
    try:
        early = json.loads(load.stdout.readline() or "{}")  # after 3 s of load
        with grpc.insecure_channel(srv.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # the channel is up
            for _ in range(20):
                t0 = time.monotonic()
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                latencies.append(time.monotonic() - t0)
                answers.append(answer.status)
                time.sleep(0.05)
        out, err = load.communicate(timeout=120)
    finally:
        if load.poll() is None:
            load.kill()
        srv.stop()
    assert load.returncode == 0, err[-2000:]
    final = json.loads(out.strip().splitlines()[-1])
    print(f"health under saturation: max {max(latencies) * 1000:.1f} ms over 20 checks; {final}")
    assert answers == [SERVING] * 20
    assert max(latencies) < 0.1, f"health took up to {max(latencies):.3f} s"
    # the model calls were saturated before the probes and throughout: many refused, some
    # answered, nothing else
    assert early.get("RESOURCE_EXHAUSTED", 0) > 50, early
    assert final.get("OK", 0) > early.get("OK", 0) and final["RESOURCE_EXHAUSTED"] > 200, final
    assert set(final) <= {"OK", "RESOURCE_EXHAUSTED"}, final


def test_malformed_health_probes_are_invalid_argument_without_a_traceback(models):
    srv = Server(models)
    try:
        with grpc.insecure_channel(srv.target) as channel:
            for method in ("Check", "Watch"):
                call = (channel.unary_unary if method == "Check" else channel.unary_stream)(
                    f"/grpc.health.v1.Health/{method}"
                )
                for _ in range(5):
                    with pytest.raises(grpc.RpcError) as err:
                        answer = call(b"\xff\xff\xff\x07garbage", timeout=10)
                        if method == "Watch":
                            next(iter(answer))
                    assert err.value.code() == Code.INVALID_ARGUMENT
                    assert "not a valid grpc.health.v1.HealthCheckRequest" in err.value.details()
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
            assert next(iter(watch)).status == SERVING
            watch.cancel()
        time.sleep(0.3)
        log = srv.log()
    finally:
        srv.stop()
    assert "Traceback" not in log and "Exception deserializing" not in log
    assert log.count("malformed Health/") == 1  # one line per 10 s, however many arrive


@pytest.mark.slow
def test_sigterm_under_load_is_not_serving_for_the_drain_window_and_fails_nothing(models):
    """A load balancer's view: 16 clients over gRPC and HTTP stop sending once health says
    NOT_SERVING. The server says so for `drain_seconds` (2 here) while it still answers, so the
    requests sent before the clients noticed are answered too: 0 failed requests."""
    http_port = free_port()
    srv = Server(models, "--drain-seconds", "2", "--http-port", str(http_port))
    base = f"http://127.0.0.1:{http_port}"
    leaving = threading.Event()  # health said NOT_SERVING
    seen: list[tuple[float, str]] = []  # (time, health status or "gone")
    failed, answered, lock = [], [0], threading.Lock()

    def watch_health():
        with grpc.insecure_channel(srv.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                except grpc.RpcError:
                    name = "gone"
                seen.append((time.monotonic(), name))
                if name != "SERVING":
                    leaving.set()
                if name == "gone":
                    return
                time.sleep(0.02)

    def grpc_client(i):
        with Client(srv.target, timeout=60, retries=0) as c:
            n = 0
            while not leaving.is_set():
                n += 1
                es, en = PAIRS[(i + n) % len(PAIRS)][::-1]
                try:
                    ok = c.translate([es])[0].text == en
                except ServingError as err:
                    ok = err.code.name
                with lock:
                    answered[0] += ok is True
                    if ok is not True:
                        failed.append(("grpc", ok))

    def http_client(i):
        while not leaving.is_set():
            status, body, _ = http_call(base, "POST", "/v1/classify", {"texts": ["a good film"]})
            with lock:
                answered[0] += status == 200
                if status != 200:
                    failed.append(("http", status, body))

    threads = [threading.Thread(target=watch_health, daemon=True)]
    threads += [threading.Thread(target=grpc_client, args=(i,), daemon=True) for i in range(12)]
    threads += [threading.Thread(target=http_client, args=(i,), daemon=True) for i in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        before = answered[0]
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        wait_for(leaving.is_set, 10, what="NOT_SERVING")
        readyz = http_call(base, "GET", "/readyz")
        for t in threads:
            t.join(60)
        code = srv.proc.wait(timeout=60)
    finally:
        srv.stop()
    assert failed == [], failed[:5]
    assert before > 20 and code == 0
    assert readyz[:2] == (503, {"ready": False, "reason": "shutting down"})
    not_serving = [t for t, name in seen if name == "NOT_SERVING"]
    gone = [t for t, name in seen if name == "gone"]
    assert not_serving and gone, seen[-5:]
    assert not_serving[0] - signalled < 0.5  # at once
    window = gone[0] - not_serving[0]
    print(
        f"drain: NOT_SERVING {not_serving[0] - signalled:.3f} s after SIGTERM, for {window:.2f}"
        f" s; {answered[0]} answered, {len(failed)} failed"
    )
    assert 1.8 < window < 10, f"NOT_SERVING for {window:.2f} s before the server stopped"
    assert "not serving: health says NOT_SERVING; requests still answered for 2.0 s" in srv.log()
