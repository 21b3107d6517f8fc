"""End to end: a real server on a free loopback port, tiny exported models, the client library."""

import filecmp
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import grpc
import pytest
from fresh import run_blocked
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from servers import PAIRS, ROOT, Server, free_port, wait_for

from serving.client import Client, ServingError
from serving.v1 import seq2seq_pb2 as pb
from serving.v1 import seq2seq_pb2_grpc as pb_grpc

Code = grpc.StatusCode


@pytest.fixture(scope="module")
def server(models):
    srv = Server(models)
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    with Client(server.target, timeout=60) as c:
        yield c


def test_translate_greedy_beam_and_n_best(client):
    sources = [es for _, es in PAIRS]
    want = [en for en, _ in PAIRS]
    assert [r.text for r in client.translate(sources)] == want
    assert [r.text for r in client.translate(sources, beam_size=4)] == want
    results = client.translate(["Veo el gato.", "Comen pan."], beam_size=4, n_best=3)
    assert [len(r.hypotheses) for r in results] == [3, 3]
    for r in results:
        scores = [h.score for h in r.hypotheses]
        assert scores == sorted(scores, reverse=True) and r.score == scores[0]
        assert len({h.text for h in r.hypotheses}) == 3
    assert results[0].text == "I see the cat." and results[0].model_version == 1


def test_classify_returns_labels_and_probabilities_in_order(client):
    results = client.classify(["a good film 3", "a bad film 7", "a good film 11"])
    assert [r.label for r in results] == ["pos", "neg", "pos"]
    for r in results:
        assert set(r.probabilities) == {"neg", "pos"}
        assert math.isclose(sum(r.probabilities.values()), 1.0, rel_tol=1e-5)
        assert r.probabilities[r.label] == max(r.probabilities.values())


def test_metadata_describes_models_and_limits(client):
    meta = client.metadata()
    by_task = {m["task"]: m for m in meta["models"]}
    assert set(by_task) == {"translate", "classify"}
    assert by_task["translate"]["source_language"] == "spa"
    assert by_task["translate"]["target_language"] == "eng"
    assert by_task["classify"]["labels"] == ["neg", "pos"]
    assert by_task["translate"]["version"] == 1
    assert meta["limits"]["max_texts"] == 64 and meta["limits"]["max_beam_size"] == 16
    assert [m["task"] for m in client.metadata("classify")["models"]] == ["classify"]


def test_health_per_service_and_reflection(server):
    with grpc.insecure_channel(server.target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for name in ("", "seq2seq.serving.v1.Seq2SeqService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert err.value.code() == Code.NOT_FOUND
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = list(
            refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
            )
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert {"seq2seq.serving.v1.Seq2SeqService", "grpc.health.v1.Health"} <= names


LONG = "x" * 2001
BAD_TRANSLATE = [
    ("empty list", dict(texts=[]), Code.INVALID_ARGUMENT, "at least one text"),
    ("empty string", dict(texts=[""]), Code.INVALID_ARGUMENT, "empty"),
    ("whitespace only", dict(texts=[" \t\n "]), Code.INVALID_ARGUMENT, "whitespace"),
    ("one blank among good", dict(texts=["Hola.", "  "]), Code.INVALID_ARGUMENT, "texts[1]"),
    ("over-long text", dict(texts=[LONG]), Code.INVALID_ARGUMENT, "max_text_chars"),
    ("too many texts", dict(texts=["Hola."] * 65), Code.INVALID_ARGUMENT, "max_texts"),
    ("beam 0", dict(texts=["Hola."], beam_size=0), Code.INVALID_ARGUMENT, "beam_size"),
    ("beam negative", dict(texts=["Hola."], beam_size=-2), Code.INVALID_ARGUMENT, "beam_size"),
    ("beam huge", dict(texts=["Hola."], beam_size=10**6), Code.INVALID_ARGUMENT, "max_beam_size"),
    (
        "n_best > beam",
        dict(texts=["Hola."], beam_size=2, n_best=3),
        Code.INVALID_ARGUMENT,
        "n_best",
    ),
    ("n_best 0", dict(texts=["Hola."], n_best=0), Code.INVALID_ARGUMENT, "n_best"),
    ("n_best negative", dict(texts=["Hola."], n_best=-1), Code.INVALID_ARGUMENT, "n_best"),
    (
        "max_length negative",
        dict(texts=["Hola."], max_length=-5),
        Code.INVALID_ARGUMENT,
        "max_length",
    ),
    ("max_length 0", dict(texts=["Hola."], max_length=0), Code.INVALID_ARGUMENT, "max_length"),
    (
        "max_length huge",
        dict(texts=["Hola."], max_length=10**7),
        Code.INVALID_ARGUMENT,
        "max_output_length",
    ),
    (
        "length_penalty negative",
        dict(texts=["Hola."], beam_size=2, length_penalty=-1.0),
        Code.INVALID_ARGUMENT,
        "length_penalty",
    ),
    (
        "length_penalty NaN",
        dict(texts=["Hola."], beam_size=2, length_penalty=float("nan")),
        Code.INVALID_ARGUMENT,
        "length_penalty",
    ),
    (
        "length_penalty inf",
        dict(texts=["Hola."], beam_size=2, length_penalty=float("inf")),
        Code.INVALID_ARGUMENT,
        "length_penalty",
    ),
    ("NUL character", dict(texts=["Ho\x00la"]), Code.INVALID_ARGUMENT, "U+0000"),
    ("bell character", dict(texts=["Hola\x07"]), Code.INVALID_ARGUMENT, "U+0007"),
    ("escape sequence", dict(texts=["\x1b[31mHola"]), Code.INVALID_ARGUMENT, "U+001B"),
    (
        "unknown model version",
        dict(texts=["Hola."], model_version=999),
        Code.NOT_FOUND,
        "version 999",
    ),
    (
        "negative model version",
        dict(texts=["Hola."], model_version=-1),
        Code.NOT_FOUND,
        "version -1",
    ),
]
GOOD_ODD_TRANSLATE = [
    ("emoji", ["😀 Veo el gato 🐱"]),
    ("mixed scripts", ["Hola мир 世界 γειά"]),
    ("right-to-left script", ["مرحبا بالعالم"]),
    ("combining marks", ["Veo el gato\u0301."]),
    ("only punctuation", ["¿¡...!?"]),
    ("tabs and newlines inside", ["Veo\tel\ngato."]),
]
BAD_CLASSIFY = [
    ("classify empty list", dict(texts=[]), Code.INVALID_ARGUMENT, "at least one text"),
    ("classify whitespace", dict(texts=["   "]), Code.INVALID_ARGUMENT, "whitespace"),
    ("classify too many", dict(texts=["ok"] * 100), Code.INVALID_ARGUMENT, "max_texts"),
    ("classify over-long", dict(texts=[LONG]), Code.INVALID_ARGUMENT, "max_text_chars"),
    ("classify control character", dict(texts=["good\x01"]), Code.INVALID_ARGUMENT, "U+0001"),
    (
        "classify unknown version",
        dict(texts=["good"], model_version=5),
        Code.NOT_FOUND,
        "version 5",
    ),
]


def _call(stub_method, request):
    try:
        return stub_method(request, timeout=30), None
    except grpc.RpcError as err:
        return None, err


def test_bad_input_gets_the_right_status_and_the_server_keeps_serving(server):
    seen = 0
    with grpc.insecure_channel(server.target) as ch:
        from serving.v1 import seq2seq_pb2_grpc as pb_grpc

        stub = pb_grpc.Seq2SeqServiceStub(ch)
        cases = [
            (n, pb.TranslateRequest(**kw), stub.Translate, c, m) for n, kw, c, m in BAD_TRANSLATE
        ]
        cases += [
            (n, pb.ClassifyRequest(**kw), stub.Classify, c, m) for n, kw, c, m in BAD_CLASSIFY
        ]
        cases.append(
            (
                "unknown task enum value",
                pb.GetModelMetadataRequest(task=7),
                stub.GetModelMetadata,
                Code.INVALID_ARGUMENT,
                "unknown task",
            )
        )
        for name, request, method, code, message in cases:
            _, err = _call(method, request)
            assert err is not None, f"{name}: expected {code.name}, got OK"
            assert err.code() == code, f"{name}: {err.code().name} {err.details()}"
            assert message in err.details(), f"{name}: unclear message {err.details()!r}"
            seen += 1
        for name, texts in GOOD_ODD_TRANSLATE:
            reply, err = _call(stub.Translate, pb.TranslateRequest(texts=texts, beam_size=2))
            assert err is None, f"{name}: {err.code().name} {err.details()}"
            assert len(reply.translations) == 1 and reply.translations[0].hypotheses
            seen += 1
        reply, err = _call(stub.Classify, pb.ClassifyRequest(texts=["🙂🙂", "δοκιμή"]))
        assert err is None and len(reply.results) == 2
        seen += 1
        # a deadline that has passed before the work is done
        with pytest.raises(grpc.RpcError) as err:
            stub.Translate(
                pb.TranslateRequest(texts=["Veo el gato."] * 64, beam_size=16), timeout=0.001
            )
        assert err.value.code() == Code.DEADLINE_EXCEEDED
        seen += 1
        # bytes that are not a TranslateRequest at all, and an rpc that does not exist
        raw = ch.unary_unary("/seq2seq.serving.v1.Seq2SeqService/Translate")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff\xff", timeout=10)
        assert err.value.code() in (Code.INTERNAL, Code.INVALID_ARGUMENT)
        missing = ch.unary_unary("/seq2seq.serving.v1.Seq2SeqService/Summarize")
        with pytest.raises(grpc.RpcError) as err:
            missing(b"", timeout=10)
        assert err.value.code() == Code.UNIMPLEMENTED
        seen += 2
        # and it still serves
        reply = stub.Translate(pb.TranslateRequest(texts=["Veo el gato."]), timeout=30)
        assert reply.translations[0].hypotheses[0].text == "I see the cat."
    assert seen >= 30


def test_missing_model_answers_unavailable(models, tmp_path):
    only_classify = tmp_path / "models"
    (only_classify / "classify").mkdir(parents=True)
    os.symlink(models / "classify" / "1", only_classify / "classify" / "1")
    srv = Server(only_classify)
    try:
        with Client(srv.target, timeout=30, retries=0) as c:
            with pytest.raises(ServingError) as err:
                c.translate(["Hola."])
            assert err.value.code == Code.UNAVAILABLE
            assert "no translate model is loaded" in err.value.details
            assert c.classify(["a good film 1"])[0].label == "pos"
            assert [m["task"] for m in c.metadata()["models"]] == ["classify"]
    finally:
        srv.stop()


def test_a_server_without_models_says_where_it_looked_and_whether_it_will_look_again(tmp_path):
    nowhere = tmp_path / "modles"  # a typo'd --model-dir
    srv = Server(nowhere, "--poll-seconds", "0")
    try:
        assert f"no models under {nowhere} (no such folder)" in srv.log()
        assert "poll_seconds 0: the folder is not looked at again" in srv.log()
        with Client(srv.target, timeout=30, retries=0) as c:
            with pytest.raises(ServingError) as err:
                c.classify(["a good film"])
            assert err.value.code == Code.UNAVAILABLE
    finally:
        srv.stop()


CLIENT_WITHOUT_TF = textwrap.dedent(
    """
    import sys
    from serving.client import Client

    with Client(sys.argv[1], timeout=30) as c:
        print(c.translate(["Veo el perro."])[0].text)
        print(c.classify(["a bad film 2"])[0].label)
    assert not any(m in sys.modules for m in ("tensorflow", "keras", "numpy"))
    """
)


def run_without_tf(script: str, target: str):
    """`script` in a process where TensorFlow, Keras, numpy and the model side cannot load."""
    blocked = ("tensorflow", "keras", "seq2seq", "sentencepiece", "numpy")
    return run_blocked(script, target, cwd=ROOT, timeout=120, blocked=blocked)


def test_client_works_with_tensorflow_blocked(server):
    proc = run_without_tf(CLIENT_WITHOUT_TF, server.target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["I see the dog.", "neg"]


CLI_WITHOUT_TF = textwrap.dedent(
    """
    import sys
    from serving.client.cli import main

    code = main(["--target", sys.argv[1], "--timeout", "30", "translate", "Veo el perro."])
    code += main(["--target", sys.argv[1], "--timeout", "30", "classify", "a bad film 2"])
    assert not any(m in sys.modules for m in ("tensorflow", "keras", "numpy"))
    sys.exit(code)
    """
)


def test_cli_works_with_tensorflow_blocked(server):
    proc = run_without_tf(CLI_WITHOUT_TF, server.target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == "I see the dog."
    assert proc.stdout.splitlines()[1].startswith("neg\tneg=")


@pytest.mark.slow
def test_a_client_only_pip_install_has_the_cli_and_no_tensorflow(server, tmp_path):
    """`pip install .` without extras, in a virtualenv of its own: the client and its CLI
    work, and neither TensorFlow nor Keras was installed."""
    import venv

    env_dir = tmp_path / "client-venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    build = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    import shutil

    top = {".venv", ".git", "runs", "models", "models-tiny", "data", "build"}

    def skip(folder, names):
        junk = {n for n in names if n.endswith(".egg-info") or n.endswith("_cache")}
        return (top & set(names) if Path(folder) == ROOT else set()) | junk | {"__pycache__"}

    shutil.copytree(ROOT, build, ignore=skip)
    done = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", str(build)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = subprocess.run(
        [
            str(env_dir / "bin" / "seq2seq-client"),
            "--target",
            server.target,
            "translate",
            "Veo el perro.",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout == "I see the dog.\n", out.stderr
    installed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format=json"], capture_output=True, text=True
    )
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert {"grpcio", "protobuf", "seq2seq-service"} <= names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "numpy", "sentencepiece"}


def run_cli(server, *args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "serving.client.cli", "--target", server.target, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_cli_reads_arguments_and_stdin(server):
    def cli(*args, stdin=None):
        return run_cli(server, *args, stdin=stdin)

    out = cli("translate", "Veo el gato.")
    assert out.returncode == 0 and out.stdout == "I see the cat.\n", out.stderr
    out = cli("translate", "--beam-size", "3", stdin="Comen pan.\n\nVeo el perro.\n")
    assert out.stdout.splitlines() == ["They eat bread.", "I see the dog."], out.stderr
    assert cli("classify", "a good film 9").stdout.startswith("pos\t")
    assert json.loads(cli("info").stdout)["limits"]["max_texts"] == 64
    out = cli("translate", "--beam-size", "0", "Hola.")
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr
    out = cli("--json", "classify", "--model-version", "1", "a good film 9")
    answer = json.loads(out.stdout)
    assert answer["label"] == "pos" and answer["model_version"] == 1, out.stderr
    out = cli("translate", "--model-version", "7", "Hola.")
    assert out.returncode == 1 and "NOT_FOUND" in out.stderr and "version 7" in out.stderr
    # the shared options may also follow the command, and then win
    out = cli("classify", "a good film 9", "--json", "--timeout", "30")
    assert json.loads(out.stdout)["label"] == "pos", out.stderr
    # warnings go to stderr, numbered as the input (stdout stays one answer per line)
    out = cli("translate", "Veo el gato.", "The weather is nice today.")
    assert out.returncode == 0 and out.stdout.splitlines()[0] == "I see the cat.", out.stderr
    assert (
        "warning: texts[1]: not_source_language: this does not look like Spanish "
        "(it looks like English)"
    ) in out.stderr.splitlines()
    assert "texts[0]" not in out.stderr
    answer = json.loads(cli("--json", "translate", "The weather is nice today.").stdout)
    assert answer["warnings"][0]["code"] == "not_source_language"
    assert answer["language"]["language"] == "en" and answer["language"]["expected"] == "es"
    out = cli("info", "--target", "127.0.0.1:1", "--timeout", "5")
    assert out.returncode == 1 and "UNAVAILABLE" in out.stderr
    assert "is a server running at 127.0.0.1:1?" in out.stderr


def test_cli_stops_quietly_when_its_reader_goes_away(server):
    # `seq2seq-client info | head -c 20` used to end in a BrokenPipeError traceback
    command = f"{sys.executable} -m serving.client.cli --target {server.target} info | head -c 20"
    out = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.startswith("{") and len(out.stdout) == 20
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr, out.stderr


def test_cli_refuses_input_that_is_not_utf8_before_sending_anything():
    # it used to read the bytes as lone surrogates and fail inside protobuf with a traceback
    proc = subprocess.run(
        [sys.executable, "-m", "serving.client.cli", "--target", "127.0.0.1:1", "classify"],
        input=b"a good film\r\n\xff\xfe bad bytes\n",
        capture_output=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stderr.decode() == "error: standard input line 2 is not valid UTF-8\n"


@pytest.mark.parametrize(
    "content, message",
    [(b"\n  \n", "is empty"), (b"\xff\xfe", "cannot read --token-file"), (None, "No such file")],
)
def test_cli_refuses_a_token_file_it_cannot_use(tmp_path, capsys, content, message):
    from serving.client import cli

    path = tmp_path / "token"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--target", "127.0.0.1:1", "--token-file", str(path), "info"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"--token-file {path}" in err and message in err, err


def test_cli_sends_any_number_of_texts_in_requests_of_max_texts(server):
    def cli(*args, stdin):
        return run_cli(server, *args, stdin=stdin)

    # 150 texts > max_texts 64: three requests, one answer per text, in order
    labels = ["pos" if i % 3 else "neg" for i in range(150)]
    lines = "".join(
        f"a {'good' if lab == 'pos' else 'bad'} film {i % 30}\n" for i, lab in enumerate(labels)
    )
    out = cli("--json", "classify", stdin=lines)
    assert out.returncode == 0, out.stderr
    answers = [json.loads(line) for line in out.stdout.splitlines()]
    assert [a["label"] for a in answers] == labels
    assert {a["model_version"] for a in answers} == {1}
    # an error numbers the texts as in the whole input (the server saw texts[36] of its request)
    bad = lines.splitlines()
    bad[100] = "x" * 2001
    out = cli("classify", stdin="\n".join(bad) + "\n")
    assert out.returncode == 1 and "INVALID_ARGUMENT" in out.stderr
    assert "texts[100] has 2001 characters > max_text_chars" in out.stderr, out.stderr
    assert len(out.stdout.splitlines()) == 64  # the first request's answers were printed


def test_sigterm_drains_in_flight_requests_and_exits_zero(models):
    srv = Server(models)
    results, errors = [], []

    def work():
        try:
            with Client(srv.target, timeout=120, retries=0) as c:
                results.append(
                    c.translate(
                        ["Veo el gato.", "Comen pan."] * 32, beam_size=16, n_best=2, max_length=120
                    )
                )
        except Exception as err:  # noqa: BLE001 - recorded and asserted below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the requests are in flight
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=120)
    code = srv.proc.wait(timeout=60)
    assert errors == []
    assert len(results) == 8 and all(len(r) == 64 for r in results)
    assert results[0][0].text == "I see the cat."
    assert code == 0
    assert any("draining" in line for line in srv.lines)


# 160 pieces for the tiny model: under its 200-piece limit, so a request of 64 of them at beam 16
# and 256 steps is as heavy as a request can be (refused by max_request_cost unless raised)
HEAVY = "Veo el gato y el perro duerme. " * 8


@pytest.fixture(scope="module")
def roomy(models, tmp_path_factory):
    """A server that admits the heaviest requests (no max_request_cost to speak of), with one
    translation worker and HTTP on: for the deadline and cancellation tests, which need
    requests that run long and nothing else to answer the small request while they do (with
    two workers the costly-call rule keeps one free, and the tests could not fail)."""
    config = tmp_path_factory.mktemp("roomy") / "serving.yaml"
    config.write_text(
        "limits:\n  max_request_cost: 1000000000\n"
        "batching:\n  threads: {translate: 1, classify: 1}\n"
    )
    http_port = free_port()
    srv = Server(models, "--config", str(config), "--http-port", str(http_port))
    srv.http_port = http_port
    yield srv
    srv.stop()


def test_a_request_over_max_request_cost_is_refused_naming_it(server):
    texts = [HEAVY] * 64
    with Client(server.target, timeout=30) as c:
        assert c.metadata()["limits"]["max_request_cost"] == 4_000_000
        with pytest.raises(ServingError) as err:
            c.translate(texts, beam_size=16, max_length=256)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "is over max_request_cost 4,000,000" in err.value.details
        assert "× beam_size 16 × max_length 256" in err.value.details
        # the same texts at the default decoding, or a few of them, are within it
        assert len(c.translate(texts[:4], beam_size=2, max_length=32)) == 4


@pytest.fixture(scope="module")
def heavy_seconds(roomy):
    """How long one worst-case request holds the only translation worker when nobody stops it:
    what the small request in the tests below would wait for, were the guard gone."""
    with Client(roomy.target, timeout=60) as c:
        t0 = time.monotonic()
        c.translate([HEAVY] * 64, beam_size=16, n_best=16, max_length=256)
        took = time.monotonic() - t0
    assert took > 0.25, f"a worst-case request took only {took:.3f} s: the tests cannot fail"
    return took


def test_a_worst_case_request_past_its_deadline_frees_its_worker(roomy, heavy_seconds):
    server = roomy
    """Two worst-case requests (64 long texts, beam 16, n-best 16, 256 steps) with a 50 ms
    deadline are dropped at their next bounded model call, or from the queue, so a small
    request right after their deadlines is answered at once, though the one translation worker
    would have been theirs for 2 × `heavy_seconds` (measured: 2 × ~0.3 s)."""
    texts = [HEAVY] * 64
    codes = []

    def worst():
        with Client(server.target, timeout=0.05, retries=0) as c:
            try:
                c.translate(texts, beam_size=16, n_best=16, max_length=256)
                codes.append("OK")
            except ServingError as err:
                codes.append(err.code.name)

    threads = [threading.Thread(target=worst) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.08)  # both deadlines have passed; one request is running, one queued
    with Client(server.target, timeout=30) as c:
        t0 = time.monotonic()
        assert c.translate(["Veo el gato."], beam_size=1)[0].text == "I see the cat."
        waited = time.monotonic() - t0
    for t in threads:
        t.join(timeout=60)
    assert codes == ["DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"]
    assert waited < 0.1, f"the small request waited {waited:.3f} s for a worker"


def test_a_cancelled_clients_work_stops_and_frees_its_worker(roomy, heavy_seconds):
    """The servicer passes `alive=context.is_active` down: a cancelled call is dropped at its
    next model call, or from the queue."""
    server = roomy
    texts = [HEAVY] * 64
    request = pb.TranslateRequest(texts=texts, beam_size=16, n_best=16, max_length=256)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.Seq2SeqServiceStub(channel)
        calls = [stub.Translate.future(request, timeout=60) for _ in range(2)]
        time.sleep(0.05)  # one runs on the translation worker, one waits
        for call in calls:
            call.cancel()  # the clients go away
        time.sleep(0.03)
        with Client(server.target, timeout=30) as c:
            t0 = time.monotonic()
            assert c.translate(["Veo el gato."], beam_size=1)[0].text == "I see the cat."
            waited = time.monotonic() - t0
    assert all(call.cancelled() for call in calls)
    assert waited < 0.1, f"the small request waited {waited:.3f} s for a worker"


def test_an_http_client_that_goes_away_frees_the_workers(roomy, heavy_seconds):
    """The HTTP API watches for disconnects: a client that goes away stops its work."""
    import json as json_
    import socket

    from servers import http_call

    port = roomy.http_port
    texts = [HEAVY] * 64
    body = json_.dumps({"texts": texts, "beam_size": 16, "n_best": 16, "max_length": 256})
    head = "POST /v1/translate HTTP/1.1\r\nHost: localhost\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    socks = []
    for _ in range(4):  # one runs on the translation worker, three wait in the queue
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall((head + body).encode())
        socks.append(sock)
    time.sleep(0.1)
    for sock in socks:
        sock.close()  # the clients go away
    time.sleep(0.1)  # the server notices within 50 ms, the workers at their next call
    t0 = time.monotonic()
    status, answer, _ = http_call(
        f"http://127.0.0.1:{port}",
        "POST",
        "/v1/translate",
        {"texts": ["Veo el gato."], "beam_size": 1},
    )
    waited = time.monotonic() - t0
    assert status == 200
    assert answer["translations"][0]["hypotheses"][0]["text"] == "I see the cat."
    assert waited < 0.1, f"the small request waited {waited:.3f} s for a worker"


def test_an_http_request_past_its_timeout_header_is_504_on_a_busy_server(roomy, heavy_seconds):
    """HTTP requests have deadlines: X-Request-Timeout-Ms (or http.request_timeout_seconds)
    bounds the wait for the model, as a gRPC deadline does (it used to be none at all)."""
    from servers import http_call

    def heavy():
        with Client(roomy.target, timeout=60) as c:
            c.translate([HEAVY] * 64, beam_size=16, n_best=16, max_length=256)

    worker = threading.Thread(target=heavy)
    worker.start()
    time.sleep(0.05)  # the one translation worker is busy for ~heavy_seconds
    t0 = time.monotonic()
    status, answer, _ = http_call(
        f"http://127.0.0.1:{roomy.http_port}",
        "POST",
        "/v1/translate",
        {"texts": ["Veo el gato."], "beam_size": 1},
        headers=(("X-Request-Timeout-Ms", "50"),),
    )
    waited = time.monotonic() - t0
    worker.join(60)
    print(f"HTTP 50 ms timeout on a busy server: {status} after {waited * 1000:.1f} ms")
    assert status == 504 and answer["error"]["status"] == "DEADLINE_EXCEEDED", answer
    # in the queue behind the busy worker ("… before the model answered"), or, on a loaded
    # machine, before its handler even ran ("… before the call ran"): both are the deadline
    assert answer["error"]["message"].startswith(
        ("the deadline passed before the model answered", "the deadline passed before the call ran")
    ), answer
    assert waited < min(0.2, heavy_seconds / 2), f"answered after {waited:.3f} s"


def test_a_long_text_is_translated_in_sentences_and_a_part_too_long_is_cut_and_flagged(server):
    """Inputs used to be cut silently at the model's limit (200 source pieces): the answer was
    about the text's beginning only. A text is now translated sentence by sentence, and a
    part the model cannot read whole is cut with a `truncated` warning; a text to classify
    longer than its model reads is refused, naming the limit."""
    with Client(server.target, timeout=60) as c:
        short, long = c.translate(["Veo el gato.", HEAVY * 2])  # 16 sentences, 320 pieces
        assert short.sentences == [] and "truncated" not in short.warning_codes
        assert [s.source for s in long.sentences] == ["Veo el gato y el perro duerme."] * 16
        assert long.text == " ".join(s.hypothesis.text for s in long.sentences)
        assert "truncated" not in long.warning_codes
        (cut,) = c.translate([f"Veo {'elgatoduerme' * 50}."])  # one "word" of 600 letters
        notes = [w for w in cut.warnings if w.code == "truncated"]
        assert notes and "pieces long and the model reads 200: its end was not translated" in (
            notes[0].message
        ), cut.warnings
        with pytest.raises(ServingError) as err:
            c.classify(["a good film " * 40])
        assert "texts[0] is 480 pieces long, over the classify model's limit of 256" in (
            err.value.details
        )


def test_a_second_signal_at_any_moment_exits_with_a_defined_code(models):
    """During the drain a second signal exits at once with 1; once drained, signals are
    ignored and the exit status stays 0 — never death by signal (-15)."""
    srv = Server(models)

    def work():  # a long request keeps the drain going
        try:
            with Client(srv.target, timeout=120, retries=0) as c:
                c.translate(["Veo el gato."] * 64, beam_size=16, max_length=200)
        except ServingError:
            pass  # the process went away under it: expected here

    worker = threading.Thread(target=work)
    worker.start()
    time.sleep(0.5)
    srv.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any("draining" in line for line in srv.lines), what="the drain to start")
    srv.proc.send_signal(signal.SIGTERM)  # while draining
    code = srv.proc.wait(timeout=60)
    worker.join(timeout=120)
    if any("drained in" in line for line in srv.lines):  # the drain won the race
        assert code == 0
    else:
        assert code == 1
        assert any("again: exiting without draining" in line for line in srv.lines)

    srv = Server(models)
    srv.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: any("drained in" in line for line in srv.lines), what="the drain")
    while srv.proc.poll() is None:  # between "drained" and the exit
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.01)
    assert srv.proc.returncode == 0


def test_gpu_requested_without_gpu_exits_with_a_clear_message(models):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving",
            "--model-dir",
            str(models),
            "--port",
            str(free_port()),
            "--device",
            "gpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "DEVICE=gpu but TensorFlow sees no GPU" in proc.stderr


def test_a_taken_port_exits_with_a_clear_message(server, tmp_path):
    # gRPC would share a port between processes (SO_REUSEPORT) and split the traffic between
    # them; a second server on the same port must fail instead.
    proc = subprocess.run(
        [sys.executable, "-m", "serving", "--model-dir", str(tmp_path), "--port", str(server.port)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{server.port} (in use" in proc.stderr
    assert "Traceback" not in proc.stderr
    # `--check` (what `make serve` runs before training) finds the same, and passes a free port
    check = [sys.executable, "-m", "serving", "--check", "--model-dir", str(tmp_path), "--port"]
    run = dict(capture_output=True, text=True, timeout=120, cwd=ROOT)
    proc = subprocess.run([*check, str(server.port)], **run)
    assert proc.returncode == 1
    assert f"error: cannot listen on 127.0.0.1:{server.port}: Address already in use" in proc.stderr
    port = free_port()
    proc = subprocess.run([*check, str(port)], **run)
    assert proc.returncode == 0, proc.stderr
    assert f"would listen on 127.0.0.1:{port}" in proc.stdout
    with Client(server.target, timeout=60) as c:  # the first server is untouched
        assert c.translate(["Veo el gato."])[0].text == "I see the cat."


def test_generated_protocol_code_is_up_to_date(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            "serving/v1/seq2seq.proto",
        ],
        check=True,
        cwd=ROOT,
    )
    for name in ("seq2seq_pb2.py", "seq2seq_pb2.pyi", "seq2seq_pb2_grpc.py"):
        fresh, committed = tmp_path / "serving" / "v1" / name, ROOT / "serving" / "v1" / name
        assert filecmp.cmp(fresh, committed, shallow=False), (
            f"serving/v1/{name} is stale: run `make protos`"
        )


def test_cli_pins_the_version_that_answered_its_first_request(monkeypatch, capsys):
    """Requests after the first name its version, so a version loaded meanwhile answers none."""
    from serving.client import ClassificationResult, cli

    calls = []

    class Server:  # the Client the CLI opens, answering as a server with max_texts 2 would
        def __init__(self, target, **options):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def metadata(self):
            return {"limits": {"max_texts": 2}}

        def classify(self, texts, model_version=None, model_version_label=None):
            calls.append((list(texts), model_version, model_version_label))
            version = model_version or 3 + len(calls)  # unpinned: the newest, which changes
            return [ClassificationResult("pos", {"pos": 0.9, "neg": 0.1}, version) for _ in texts]

    monkeypatch.setattr(cli, "Client", Server)
    assert cli.main(["classify", "a", "b", "c", "d", "e"]) == 0
    assert calls == [(["a", "b"], None, None), (["c", "d"], 4, None), (["e"], 4, None)]
    assert capsys.readouterr().out.splitlines() == ["pos\tpos=0.900 neg=0.100"] * 5
    # a label names the version of the first request only; the rest name the version it got
    calls.clear()
    assert cli.main(["classify", "--version-label", "stable", "a", "b", "c"]) == 0
    assert calls == [(["a", "b"], None, "stable"), (["c"], 4, None)]
    capsys.readouterr()
    with pytest.raises(SystemExit):  # one or the other
        cli.main(["classify", "--version-label", "stable", "--model-version", "2", "a"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["0", "-1", "nan"])
def test_the_cli_refuses_a_deadline_that_is_not_positive(timeout, capsys):
    from serving.client import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--timeout", timeout, "info"])
    assert exit_.value.code == 2
    assert (
        f"--timeout must be a number of seconds > 0, got {float(timeout)}"
        in capsys.readouterr().err
    )
    from serving.client import Client

    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0, got"):
        Client("localhost:1", timeout=float(timeout))
