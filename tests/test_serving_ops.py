"""The server in operation: TLS, token auth, Prometheus metrics, batching under load, hot reload
(also under load, and memory across reloads), SIGTERM under load. Real servers on loopback."""

import datetime
import http.client
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from servers import PAIRS, REVIEWS, ROOT, Server, free_port, wait_for
from servers import http_call as call

from serving.client import Client, ServingError
from serving.v1 import seq2seq_pb2 as pb

Code = grpc.StatusCode
TOKEN = "s3cret-token-0123456789"


# --- certificates ------------------------------------------------------------------------------


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(folder: Path) -> dict:
    """A CA, and a server certificate it signed for localhost and 127.0.0.1 (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    files = {}

    def write(name, data):
        files[name] = folder / name
        files[name].write_bytes(data)

    def key_pem(key):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def cert(subject, key, issuer, issuer_key, ca, sans=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    for prefix in ("", "other-"):  # "other-" is a CA the server's certificate does not chain to
        ca_key = ec.generate_private_key(ec.SECP256R1())
        write(f"{prefix}ca.pem", cert(f"{prefix}test CA", ca_key, f"{prefix}test CA", ca_key, True))
        if not prefix:
            key = ec.generate_private_key(ec.SECP256R1())
            sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            write("server.pem", cert("localhost", key, "test CA", ca_key, False, sans))
            write("server.key", key_pem(key))
    return files


@pytest.fixture(scope="module")
def secure(models, tmp_path_factory):
    """One server with TLS, token auth and metrics on (module-scoped: it starts in seconds)."""
    folder = tmp_path_factory.mktemp("pki")
    pki = make_pki(folder)
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    metrics_port, http_port = free_port(), free_port()
    srv = Server(
        models,
        "--tls-cert", str(pki["server.pem"]),
        "--tls-key", str(pki["server.key"]),
        "--token-file", str(token_file),
        "--metrics-port", str(metrics_port),
        "--http-port", str(http_port),
    )  # fmt: skip
    srv.pki, srv.token_file, srv.metrics_port = pki, token_file, metrics_port
    srv.https = f"https://localhost:{http_port}"
    yield srv
    srv.stop()


def scrape(port: int) -> dict:
    """{(sample name, frozenset(labels)): value} from the server's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests_total(metrics, rpc, code):
    return metrics.get(("seq2seq_requests_total", frozenset({"rpc": rpc, "code": code}.items())), 0)


# --- TLS and auth ------------------------------------------------------------------------------


def test_tls_with_the_right_token_serves(secure):
    ca = str(secure.pki["ca.pem"])
    with Client(secure.target, timeout=30, tls_ca=ca, token=TOKEN) as c:
        assert c.translate(["Veo el gato."])[0].text == "I see the cat."
        assert c.classify(["a good film 1"])[0].label == "pos"
    assert "TLS; token auth" in secure.log()


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1], "Bearer " + TOKEN])
def test_missing_or_wrong_token_is_unauthenticated(secure, token):
    with Client(secure.target, timeout=30, tls_ca=str(secure.pki["ca.pem"]), token=token) as c:
        with pytest.raises(ServingError) as err:
            c.translate(["Veo el gato."])
        assert err.value.code == Code.UNAUTHENTICATED
        assert ("missing" if not token else "invalid") in err.value.details
        with pytest.raises(ServingError) as err:
            c.metadata()
        assert err.value.code == Code.UNAUTHENTICATED


GARBAGE = {
    "random bytes": b"\xff\xff\xff\x07garbage",
    "a truncated length prefix": b"\x0a\x10abc",
    "invalid UTF-8 in texts": b"\x0a\x02\xc3\x28",
}


def raw_call(channel, method: str, payload: bytes, metadata=None):
    """(status code, details) of a call whose request bytes are sent as they are."""
    call = channel.unary_unary(f"/seq2seq.serving.v1.Seq2SeqService/{method}")
    try:
        call(payload, timeout=30, metadata=metadata)
    except grpc.RpcError as err:
        return err.code(), err.details()
    return Code.OK, ""


def test_malformed_bytes_are_invalid_argument_after_auth_and_never_a_traceback(secure):
    creds = grpc.ssl_channel_credentials(secure.pki["ca.pem"].read_bytes())
    meta = (("authorization", f"Bearer {TOKEN}"),)
    lines_before = len(secure.lines)
    with grpc.secure_channel(secure.target, creds) as ch:
        for what, payload in GARBAGE.items():
            for method in ("Translate", "Classify"):
                # no token: refused before a byte is parsed
                assert raw_call(ch, method, payload)[0] == Code.UNAUTHENTICATED, what
                code, details = raw_call(ch, method, payload, meta)
                assert code == Code.INVALID_ARGUMENT, (what, details)
                assert f"not a valid seq2seq.serving.v1.{method}Request message" in details
        # a well-formed request still works over the same raw path
        ok = raw_call(
            ch, "Translate", pb.TranslateRequest(texts=["Veo el gato."]).SerializeToString(), meta
        )
        assert ok[0] == Code.OK
    time.sleep(0.5)
    new = "".join(secure.lines[lines_before:])
    assert "Traceback" not in new and "Exception deserializing" not in new
    assert new.count("malformed") <= 1  # one line per 10 s at most, however many arrive


def test_the_bearer_scheme_ignores_case_and_two_authorization_headers_are_refused(secure):
    creds = grpc.ssl_channel_credentials(secure.pki["ca.pem"].read_bytes())
    request = pb.ClassifyRequest(texts=["a good film 1"]).SerializeToString()
    with grpc.secure_channel(secure.target, creds) as ch:
        for scheme in ("bearer", "BEARER", "Bearer"):  # RFC 6750 / RFC 9110
            meta = (("authorization", f"{scheme} {TOKEN}"),)
            assert raw_call(ch, "Classify", request, meta) == (Code.OK, ""), scheme
        twice = (("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}"))
        code, details = raw_call(ch, "Classify", request, twice)
        assert code == Code.UNAUTHENTICATED and "authorization" in details, details


def test_health_is_open_but_reflection_needs_the_token(secure):
    creds = grpc.ssl_channel_credentials(secure.pki["ca.pem"].read_bytes())
    with grpc.secure_channel(secure.target, creds) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as err:
            list(refl.ServerReflectionInfo(iter([ask]), timeout=10))
        assert err.value.code() == Code.UNAUTHENTICATED
        meta = (("authorization", f"Bearer {TOKEN}"),)
        replies = list(refl.ServerReflectionInfo(iter([ask]), timeout=10, metadata=meta))
        names = {s.name for s in replies[0].list_services_response.service}
        assert "seq2seq.serving.v1.Seq2SeqService" in names


def test_plaintext_and_untrusted_ca_cannot_connect(secure):
    with Client(secure.target, timeout=10, token=TOKEN, retries=0) as c:
        with pytest.raises(ServingError) as err:
            c.classify(["a good film 1"])
        assert err.value.code == Code.UNAVAILABLE
    with Client(
        secure.target, timeout=10, tls_ca=str(secure.pki["other-ca.pem"]), token=TOKEN, retries=0
    ) as c:
        with pytest.raises(ServingError) as err:
            c.classify(["a good film 1"])
        assert err.value.code == Code.UNAVAILABLE


def test_cli_speaks_tls_and_sends_the_token(secure):
    cli = [sys.executable, "-m", "serving.client.cli", "--target", f"localhost:{secure.port}"]
    tls = ["--tls-ca", str(secure.pki["ca.pem"])]

    def run(*args):
        return subprocess.run(
            [*cli, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env={}
        )

    out = run(*tls, "--token-file", str(secure.token_file), "translate", "Comen pan.")
    assert out.returncode == 0 and out.stdout == "They eat bread.\n", out.stderr
    out = run(*tls, "--token", TOKEN, "classify", "a bad film 4")
    assert out.returncode == 0 and out.stdout.startswith("neg\t"), out.stderr
    out = run(*tls, "translate", "Comen pan.")
    assert out.returncode == 1 and "UNAUTHENTICATED: missing bearer token" in out.stderr
    out = run("--tls-ca", "/no/such/ca.pem", "info")
    assert out.returncode == 2 and "no such file" in out.stderr


def test_bad_security_settings_stop_the_server_with_a_clear_message(models, tmp_path):
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    not_pem = tmp_path / "cert.txt"
    not_pem.write_text("hello")
    cases = [
        (["--token-file", str(empty)], "is empty"),
        (["--token-file", str(tmp_path / "missing")], "cannot read the token file"),
        (["--tls-cert", str(not_pem)], "tls_cert and security.tls_key go together"),
        (["--tls-cert", str(not_pem), "--tls-key", str(not_pem)], "is not a PEM file"),
        (["--max-batch-size", "0"], "max_batch_size must be an integer ≥ 1"),
        (["--config", str(not_pem)], "expected sections"),
    ]
    for args, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "serving", "--model-dir", str(models), "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr[-800:])


# --- metrics -----------------------------------------------------------------------------------


def test_the_http_api_has_the_same_tls_token_and_metrics(secure):
    tls = ssl.create_default_context(cafile=str(secure.pki["ca.pem"]))
    auth = [("Authorization", f"Bearer {TOKEN}")]
    before = scrape(secure.metrics_port)
    status, body, _ = call(
        secure.https, "POST", "/v1/classify", {"texts": ["a good film 3"]}, auth, tls
    )
    assert status == 200 and body["results"][0]["label"] == "pos"
    status, body, _ = call(secure.https, "POST", "/v1/classify", {"texts": ["x"]}, (), tls)
    assert status == 401 and body["error"]["message"].startswith("missing bearer token")
    assert call(secure.https, "GET", "/readyz", tls=tls)[0] == 200  # open, as gRPC health is
    with pytest.raises(ssl.SSLError):  # a CA the server's certificate does not chain to
        other = ssl.create_default_context(cafile=str(secure.pki["other-ca.pem"]))
        call(secure.https, "GET", "/healthz", tls=other)
    with pytest.raises((ConnectionError, http.client.HTTPException)):  # plaintext is refused
        call(secure.https.replace("https", "http"), "GET", "/healthz")
    after = scrape(secure.metrics_port)

    def delta(status):
        key = (
            "seq2seq_http_requests_total",
            frozenset({"route": "/v1/classify", "status": status}.items()),
        )
        return after.get(key, 0) - before.get(key, 0)

    assert delta("200") == 1 and delta("401") == 1


def test_metrics_count_requests_by_status_batches_and_versions(secure):
    ca = str(secure.pki["ca.pem"])
    before = scrape(secure.metrics_port)
    with Client(secure.target, timeout=30, tls_ca=ca, token=TOKEN) as c:
        for _ in range(3):
            c.translate(["Veo el gato.", "Comen pan."])
        with pytest.raises(ServingError):
            c.translate(["Veo el gato."], beam_size=99)
    with Client(secure.target, timeout=30, tls_ca=ca, token="wrong") as c:
        with pytest.raises(ServingError):
            c.classify(["x"])
    after = scrape(secure.metrics_port)

    def delta(rpc, code):
        return requests_total(after, rpc, code) - requests_total(before, rpc, code)

    assert delta("Translate", "OK") == 3
    assert delta("Translate", "INVALID_ARGUMENT") == 1
    assert delta("Classify", "UNAUTHENTICATED") == 1
    translate = frozenset({"task": "translate"}.items())
    assert (
        after[("seq2seq_batch_size_count", translate)]
        - before.get(("seq2seq_batch_size_count", translate), 0)
        == 3
    )  # three model calls …
    assert (
        after[("seq2seq_batch_size_sum", translate)]
        - before.get(("seq2seq_batch_size_sum", translate), 0)
        == 6
    )  # … of two texts each
    latency = frozenset({"rpc": "Translate"}.items())
    assert after[("seq2seq_request_latency_seconds_count", latency)] >= 4
    assert after[("seq2seq_model_version", translate)] == 1
    assert after[("seq2seq_model_version", frozenset({"task": "classify"}.items()))] == 1
    assert after[("seq2seq_queue_depth", translate)] == 0
    assert (
        after[("seq2seq_model_loads_total", frozenset({**dict(translate), "result": "ok"}.items()))]
        == 1
    )


# --- hot reload --------------------------------------------------------------------------------


def add_version(repo: Path, source: Path, version: int) -> Path:
    """Publishes a copy of `source` as `version` the way exports do: write, then rename."""
    tmp = repo / f".tmp-{version}"
    shutil.copytree(source, tmp)
    final = repo / str(version)
    tmp.rename(final)
    return final


def serving_version(client: Client, task: str = "translate") -> int:
    models = client.metadata(task)["models"]
    return models[0]["version"] if models else 0


@pytest.fixture
def repo(models, tmp_path):
    """A writable model repository holding version 1 of both tasks."""
    root = tmp_path / "models"
    for task in ("translate", "classify"):
        shutil.copytree(models / task / "1", root / task / "1")
    return root


def test_a_version_that_does_not_load_gives_way_to_the_next_older_one(repo):
    from serving.server.predictor import Predictor

    def broken(version):
        folder = repo / "translate" / str(version)
        (folder / "assets.extra").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"not a protobuf")
        shutil.copy(repo / "translate/1/assets.extra/metadata.json", folder / "assets.extra")

    broken(2)
    predictor = Predictor(repo)  # at start: the newest is broken, so version 1 is served
    try:
        assert predictor.models["translate"].version == 1
        results, version = predictor.translate(["Veo el gato."])
        assert (results[0].hypotheses[0].text, version) == ("I see the cat.", 1)
        add_version(repo / "translate", repo / "translate" / "1", 3)
        assert predictor.refresh("translate", wait_until_stable=False) == 3
        broken(4)
        assert predictor.refresh("translate", wait_until_stable=False) == 3  # 4 is skipped
        shutil.rmtree(repo / "translate" / "3")  # the served one removed: back past 2 to 1
        assert predictor.refresh("translate", wait_until_stable=False) == 1
        assert predictor.models["translate"].version == 1
    finally:
        predictor.close()


def test_new_versions_are_picked_up_half_written_ones_never_and_removal_rolls_back(repo):
    srv = Server(repo, "--poll-seconds", "0.2")
    try:
        with Client(srv.target, timeout=30) as c:
            assert serving_version(c) == 1
            # A half-written version: a numeric folder with a broken SavedModel.
            broken = repo / "translate" / "5"
            (broken / "assets.extra").mkdir(parents=True)
            (broken / "saved_model.pb").write_bytes(b"not a protobuf")
            shutil.copy(repo / "translate/1/assets.extra/metadata.json", broken / "assets.extra")
            wait_for(lambda: "cannot be loaded" in srv.log(), 30, what="the load failure log")
            assert serving_version(c) == 1
            assert c.translate(["Veo el gato."])[0].model_version == 1
            shutil.rmtree(broken)
            # A complete new version is loaded, warmed up and swapped in.
            add_version(repo / "translate", repo / "translate" / "1", 2)
            wait_for(lambda: serving_version(c) == 2, 30, what="version 2")
            result = c.translate(["Veo el gato."])[0]
            assert (result.text, result.model_version) == ("I see the cat.", 2)
            assert c.classify(["a good film 2"])[0].model_version == 1  # the other task stays
            with pytest.raises(ServingError) as err:
                c.translate(["Veo el gato."], model_version=1)
            assert err.value.code == Code.NOT_FOUND
            wait_for(lambda: "released translate version 1" in srv.log(), 30, what="release")
            # Removing the newest version rolls back to the newest one left.
            shutil.rmtree(repo / "translate" / "2")
            wait_for(lambda: serving_version(c) == 1, 30, what="roll back to version 1")
            assert c.translate(["Comen pan."])[0].model_version == 1
    finally:
        srv.stop()


@pytest.mark.slow
def test_memory_after_ten_reloads_is_within_ten_percent_of_after_one(repo):
    srv = Server(repo, "--poll-seconds", "0.1")
    try:
        with Client(srv.target, timeout=30) as c:
            rss = {}
            for version in range(2, 12):
                add_version(repo / "translate", repo / "translate" / "1", version)
                wait_for(lambda v=version: serving_version(c) == v, 60, what=f"version {version}")
                for _ in range(5):
                    c.translate(["Veo el gato.", "Comen pan."], beam_size=2)
                wait_for(
                    lambda v=version: f"released translate version {v - 1}" in srv.log(),
                    30,
                    what="the old version's release",
                )
                rss[version - 1] = srv.rss_mib()
            print(f"server RSS after reload 1: {rss[1]:.1f} MiB, after 10: {rss[10]:.1f} MiB")
            assert rss[10] <= 1.10 * rss[1], rss
    finally:
        srv.stop()


# --- under load --------------------------------------------------------------------------------


class Load:
    """`clients` threads, each with its own channel, sending requests until stopped."""

    def __init__(self, target, clients, texts=1):
        self.ok, self.failed, self.versions = 0, [], set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(target, i, texts), daemon=True)
            for i in range(clients)
        ]
        for t in self.threads:
            t.start()

    def _run(self, target, i, texts):
        with Client(target, timeout=60, retries=0) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                sent = time.monotonic()
                try:
                    if (i + n) % 2:
                        pairs = [PAIRS[(i + n + k) % len(PAIRS)] for k in range(texts)]
                        got = c.translate([es for _, es in pairs])
                        right = [r.text for r in got] == [en for en, _ in pairs]
                    else:
                        reviews = [REVIEWS[(i * 7 + n + k) % len(REVIEWS)] for k in range(texts)]
                        got = c.classify([text for _, text in reviews])
                        right = [r.label for r in got] == [label for label, _ in reviews]
                    with self.lock:
                        if right:
                            self.ok += 1
                            self.versions.add(("translate" if (i + n) % 2 else "classify",
                                               got[0].model_version))  # fmt: skip
                        else:
                            self.failed.append("wrong answer")
                except ServingError as err:
                    with self.lock:
                        self.failed.append((err.code, sent))

    def finish(self, timeout=120):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        return self


@pytest.mark.slow
def test_64_clients_for_30_seconds_no_failures_bounded_memory_real_batches(models):
    metrics_port = free_port()
    srv = Server(models, "--metrics-port", str(metrics_port))
    try:
        load = Load(srv.target, 64)
        time.sleep(5)
        rss_warm = srv.rss_mib()
        time.sleep(25)
        rss_end = srv.rss_mib()
        load.finish()
        metrics = scrape(metrics_port)
    finally:
        srv.stop()
    assert load.failed == []
    assert load.ok > 300, load.ok
    print(f"{load.ok} requests in 30 s; RSS {rss_warm:.0f} → {rss_end:.0f} MiB")
    assert rss_end <= 1.10 * rss_warm
    for task in ("translate", "classify"):
        labels = frozenset({"task": task}.items())
        calls = metrics[("seq2seq_batch_size_count", labels)]
        texts = metrics[("seq2seq_batch_size_sum", labels)]
        assert texts / calls > 2, (task, texts, calls)  # concurrent requests really merged
    assert (
        requests_total(metrics, "Translate", "OK") + requests_total(metrics, "Classify", "OK")
        == load.ok
    )


@pytest.mark.slow
def test_a_new_version_dropped_in_during_load_fails_nothing(repo):
    srv = Server(repo, "--poll-seconds", "0.2")
    try:
        load = Load(srv.target, 16, texts=2)
        time.sleep(3)
        add_version(repo / "translate", repo / "translate" / "1", 2)
        add_version(repo / "classify", repo / "classify" / "1", 7)
        with Client(srv.target, timeout=30) as c:
            wait_for(
                lambda: serving_version(c) == 2 and serving_version(c, "classify") == 7,
                60,
                what="the new versions",
            )
        seen_before = set(load.versions)
        time.sleep(3)
        load.finish()
    finally:
        srv.stop()
    assert load.failed == []
    assert {("translate", 1), ("classify", 1)} <= seen_before
    assert {("translate", 2), ("classify", 7)} <= load.versions


@pytest.mark.slow
def test_sigterm_during_load_drains_cleanly(models):
    srv = Server(models)
    load = Load(srv.target, 32, texts=4)
    time.sleep(4)
    ok_before = load.ok
    signalled = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        code = srv.proc.wait(timeout=90)  # the watchdog ends a stuck drain after grace + 30 s
    finally:
        load.finish()
        srv.stop()
    print(srv.log()[-3000:])
    assert code == 0 and "seq2seq server stopped" in srv.log()
    assert ok_before > 20
    # Every request sent before the signal was on its way (0.1 s: signal delivery) was answered.
    # Requests that reached the closing server were refused (UNAVAILABLE, or CANCELLED when
    # they met the shutdown itself); none got a wrong answer or an internal error.
    failed_codes = {c for c, _ in load.failed}
    assert failed_codes <= {Code.UNAVAILABLE, Code.CANCELLED}, failed_codes
    assert all(sent > signalled - 0.1 for _, sent in load.failed), [
        (c, round(sent - signalled, 3)) for c, sent in load.failed if sent <= signalled - 0.1
    ]


# --- make bench-serve --------------------------------------------------------------------------


@pytest.mark.slow
def test_bench_serve_reports_ratios_against_the_mean_anchor_and_the_ceiling(models, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(es for _, es in PAIRS) + "\n", encoding="utf-8")
    out = tmp_path / "bench.json"
    # run from the repository, as `make bench-serve` runs it, with a relative --model-dir
    model_dir = os.path.relpath(models, ROOT)
    run = subprocess.run(
        [sys.executable, "-m", "serving.bench", "--model-dir", model_dir, "--clients", "1,4",
         "--seconds", "0.5", "--texts-file", str(texts), "--json", str(out),
         "--texts-per-request", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(out.read_text())
    assert set(results) == {"translate", "classify"}
    for r in results.values():
        runs = r["in_process"]["runs"]
        assert len(runs) == 2 and min(runs) > 0  # before and after the gRPC points
        a = r["in_process"]["sentences_per_s"]
        assert a == pytest.approx(sum(runs) / 2)
        assert [b["clients"] for b in r["grpc"]] == [1, 4]
        for b in r["grpc"]:
            assert b["requests"] > 0 and b["errors"] == {} and b["texts_per_request"] == 2
            assert b["ratio"] == pytest.approx(b["sentences_per_s"] / a)
        assert [b["clients"] for b in r["http"]] == [1, 4]  # the fewest and the most
        for b in r["http"]:
            assert b["protocol"] == "http" and b["requests"] > 0 and b["errors"] == {}
            assert b["ratio"] == pytest.approx(b["sentences_per_s"] / a)
        f = r["rpc_alone"]["sentences_per_s"]
        assert r["rpc_alone"]["clients"] == 4 and f > 0
        assert r["rpc_alone"]["ceiling"] == pytest.approx(f / (a + f))
    assert "ceiling on this machine" not in run.stdout  # the verdicts are for 32 clients only
    assert "rpc path alone" in run.stdout
    assert "translate  HTTP        4" in run.stdout  # a row of the summary table

    bad = subprocess.run(
        [sys.executable, "-m", "serving.bench", "--model-dir", str(models), "--clients", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--clients must list client counts" in bad.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "serving.bench", "--texts-per-request", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--texts-per-request must be ≥ 1" in bad.stderr


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--clients", "a,b"], "--clients must list client counts ≥ 1, e.g. 1,8,32; got 'a,b'"),
        (["--tasks", "summarize"], "--tasks must list translate and/or classify once each"),
        (["--tasks", "classify,classify"], "--tasks must list translate and/or classify"),
        (["--seconds", "-1"], "--seconds must be > 0, got -1.0"),
        (["--max-batch-size", "0"], "--max-batch-size must be ≥ 1, got 0"),
        (["--max-wait-us", "-5"], "--max-wait-us must be ≥ 0, got -5"),
        (["--texts", "0"], "--texts must be ≥ 1, got 0"),
        (["--tf-threads", "-1"], "--tf-threads must be ≥ 0, got -1"),
        (["--texts-file", "/nonexistent/t.txt"], "--texts-file /nonexistent/t.txt: no such file"),
    ],
)
def test_bench_serve_names_a_bad_option_before_loading_anything(argv, message, capsys):
    # these used to end in a traceback (--clients a,b), or run a whole benchmark on a bad value
    from serving.bench import throughput as bench

    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--clients", "0"], "--clients and --texts-per-request must be ≥ 1 and --seconds > 0"),
        (["--seconds", "nan"], "--clients and --texts-per-request must be ≥ 1"),
        (["--warmup", "-1"], "--warmup must be ≥ 0 seconds, got -1.0"),
        ([], "has no texts"),  # the texts file holds only blank lines
        (["--texts-file", "/nonexistent"], "cannot read --texts-file /nonexistent"),
        ("not utf-8", "cannot read --texts-file"),
    ],
)
def test_load_generator_names_a_bad_option(argv, message, tmp_path, capsys):
    from serving.bench import loadgen

    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"\xff\xfe\n" if argv == "not utf-8" else b"\n  \n")
    argv = [] if argv == "not utf-8" else argv
    with pytest.raises(SystemExit) as exit_:
        loadgen.main(["--target", "127.0.0.1:1", "--texts-file", str(texts), *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_load_generator_sends_k_texts_per_request_and_counts_texts():
    from serving.bench.loadgen import run_load
    from serving.bench.throughput import NullPredictor
    from serving.server import config as serving_config
    from serving.server.main import build_server

    sizes, beams = [], set()

    class Recording(NullPredictor):
        def translate(self, texts, **options):
            sizes.append(list(texts))
            beams.add(options["beam_size"])
            return super().translate(texts, **options)

    server, port, _ = build_server(Recording(), serving_config.load(None, {"server.port": 0}))
    server.start()
    try:
        texts = [f"frase {i}" for i in range(10)]
        out = run_load(f"127.0.0.1:{port}", texts, 2, 0.5, warmup=0.1, texts_per_request=4)
    finally:
        server.stop(None)
    assert out["texts_per_request"] == 4 and out["errors"] == {}
    assert beams == {1}  # greedy, as the in-process anchor
    assert out["requests"] > 0
    assert out["sentences_per_s"] == pytest.approx(out["requests"] * 4 / 0.5)
    assert {len(s) for s in sizes[2:]} == {4}  # after each client's one-text connect call
    for sent in sizes[2:]:  # consecutive texts of the file, wrapping around
        first = texts.index(sent[0])
        assert sent == [texts[(first + j) % 10] for j in range(4)]
    with pytest.raises(ValueError, match="texts_per_request must be ≥ 1"):
        run_load(f"127.0.0.1:{port}", texts, 1, 0.1, texts_per_request=0)


def test_load_generator_stops_with_the_reason_when_a_client_cannot_start(tmp_path, capsys):
    # a client whose first request failed used to leave the others waiting for it forever
    from serving.bench import loadgen
    from serving.bench.throughput import NullPredictor
    from serving.server import config as serving_config
    from serving.server.errors import ModelUnavailable
    from serving.server.main import build_server

    class Empty(NullPredictor):
        def translate(self, texts, **options):
            raise ModelUnavailable("no translate model is loaded")

    server, port, _ = build_server(Empty(), serving_config.load(None, {"server.port": 0}))
    server.start()
    texts = tmp_path / "texts.txt"
    texts.write_text("hola\n")
    try:
        argv = ["--target", f"127.0.0.1:{port}", "--texts-file", str(texts), "--clients", "4"]
        assert loadgen.main([*argv, "--seconds", "0.5"]) == 2
    finally:
        server.stop(None)
    err = capsys.readouterr().err
    assert "first request failed: UNAVAILABLE: no translate model is loaded" in err
