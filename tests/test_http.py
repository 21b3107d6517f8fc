"""The HTTP/JSON API: every route and error status over a fake predictor (a real uvicorn server on
loopback, in process), then the real server's JSON against its gRPC answers."""

import http.client
import json
import threading
import time

import anyio
import grpc
import pytest
from fakes import FakePredictor
from google.protobuf import json_format
from servers import PAIRS, REVIEWS, Server, free_port, wait_for
from servers import http_call as call

from serving.server.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelUnavailable,
    NotSupported,
    Overloaded,
    VersionNotFound,
)
from serving.server.http_api import HttpApi, HttpServer
from serving.server.servicer import Seq2SeqServicer
from serving.v1 import seq2seq_pb2 as pb
from serving.v1 import seq2seq_pb2_grpc as pb_grpc

TOKEN = "http-token-42"


def asgi_post(app, path: str, chunks: list[bytes]):
    """(status, JSON) of a POST whose body arrives in `chunks`, straight through the ASGI app."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"transfer-encoding", b"chunked"), (b"host", b"localhost"),
                                   (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    incoming = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body)


def test_translate_classify_and_models_answer_in_the_proto_json_mapping(running):
    api = running()
    status, body, headers = api("POST", "/v1/translate", {"texts": ["Hola"], "n_best": 2})
    assert status == 200 and headers["content-type"] == "application/json"
    empty = {"source_tokens": [], "target_tokens": [], "alignment": [], "word_alignment": []}
    assert body == {
        "translations": [
            {
                "hypotheses": [
                    {"text": "HOLA", "score": -0.5, **empty},
                    {"text": "hola", "score": -1.5, **empty},
                ],
                "confidence": 0.25,
                "warnings": [],
                "language": {
                    "language": "es",
                    "probability": 0.75,
                    "expected": "es",
                    "expected_probability": 0.75,
                },
                "sentences": [],
            }
        ],
        "model_version": "7",  # int64 is a string in protobuf's JSON mapping
    }
    _, texts, options = api.predictor.calls[-1]
    assert texts == ["Hola"] and options["n_best"] == 2 and options["beam_size"] is None
    # the warnings, as JSON has them
    status, body, _ = api("POST", "/v1/translate", {"texts": ["The cat."]})
    assert body["translations"][0]["warnings"] == [
        {"code": "not_source_language", "message": "this does not look like Spanish"}
    ]
    assert body["translations"][0]["language"]["language"] == "en"
    # lowerCamelCase names are the mapping's too
    status, body, _ = api("POST", "/v1/translate", {"texts": ["a"], "returnAlignment": True})
    assert status == 200
    hyp = body["translations"][0]["hypotheses"][0]
    assert hyp["source_tokens"] == ["▁a", "b"] and hyp["alignment"] == [0.75, 0.25, 0.5, 0.5]
    assert hyp["word_alignment"] == [{"target": "A", "source": "ab"}]

    status, body, _ = api("POST", "/v1/classify", {"texts": ["good", "bad"]})
    assert status == 200 and body["model_version"] == "3"
    assert body["results"][1] == {
        "label": "pos",
        "probabilities": [
            {"label": "neg", "probability": 0.25},
            {"label": "pos", "probability": 0.75},
        ],
        "warnings": [],
    }

    status, body, _ = api("GET", "/v1/models?task=classify")
    assert status == 200
    assert body["models"][0]["task"] == "TASK_CLASSIFY" and body["models"][0]["version"] == "3"
    assert body["limits"]["max_texts"] == 64
    assert body["models"][0]["trained_steps"] == "250" and body["models"][0]["intermediate"]
    # the training status, as GetModelMetadata carries it
    training = body["training"][0]
    assert training["task"] == "TASK_CLASSIFY" and training["state"] == "training"
    assert (training["step"], training["total_steps"]) == ("300", "1500")
    assert training["versions"] == [
        {"version": "3", "step": "250", "valid_loss": 0.5, "valid_score": 75.0, "final": False}
    ]
    assert (training["next_check_step"], training["next_check_seconds"]) == ("375", 6.0)
    assert api("GET", "/v1/models")[0] == 200
    # /v1/training: the same with the curves, for the page
    status, body, _ = api("GET", "/v1/training")
    assert status == 200 and body["training"]["classify"]["train_loss"] == [[25, 0.7], [50, 0.69]]
    assert api("GET", "/v1/training?task=translate")[1] == {"training": {}}
    status, body, _ = api("GET", "/v1/training?task=nosuch")
    assert status == 400 and "unknown task 'nosuch'" in body["error"]["message"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[1, 2]", "must be a JSON object (a TranslateRequest), got list"),
        ('"hola"', "got str"),
        (
            {"textz": ["a"]},
            "unknown field 'textz' in TranslateRequest; its fields: texts, beam_size",
        ),
        ({"texts": "a"}, "texts"),
        ({"texts": [1]}, "texts"),
        ({"texts": ["a"], "beam_size": "five"}, "beam_size"),
        ({"texts": ["a"], "beam_size": 2.5}, "integer: 2.5 at TranslateRequest.beam_size"),
        ({"texts": ["a"], "return_alignment": "yes"}, "return_alignment"),
        ('{"texts": ["a"], "texts": ["b"]}', "'texts' is given twice"),
    ],
)
def test_bad_json_wrong_types_and_unknown_fields_are_400_naming_the_field(running, body, fragment):
    api = running()
    status, answer, _ = api("POST", "/v1/translate", body)
    assert status == 400, answer
    assert answer["error"]["code"] == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"
    assert fragment in answer["error"]["message"]
    assert api.predictor.calls == []  # nothing reached the model


@pytest.mark.parametrize(
    "error, status, grpc_code",
    [
        (InvalidRequest("texts[0] is empty or only whitespace"), 400, "INVALID_ARGUMENT"),
        (NotSupported("no attention, so no alignment"), 400, "FAILED_PRECONDITION"),
        (VersionNotFound("translate model version 9 is not loaded"), 404, "NOT_FOUND"),
        (Overloaded("the translate queue is full"), 429, "RESOURCE_EXHAUSTED"),
        (ModelUnavailable("no translate model is loaded"), 503, "UNAVAILABLE"),
        (DeadlineExceeded("the deadline passed"), 504, "DEADLINE_EXCEEDED"),
        (RuntimeError("boom"), 500, "INTERNAL"),
    ],
)
def test_predictor_errors_have_the_grpc_message_and_an_http_status(
    running, error, status, grpc_code
):
    api = running(FakePredictor(error))
    got, body, _ = api("POST", "/v1/translate", {"texts": ["a"]})
    assert got == status
    want = str(error) if grpc_code != "INTERNAL" else "internal error: RuntimeError"
    assert body == {"error": {"code": status, "status": grpc_code, "message": want}}


def test_unknown_routes_404_wrong_methods_405_bodies_over_8_mib_413(running):
    api = running()
    status, body, _ = api("POST", "/v1/translation", {"texts": ["a"]})
    assert status == 404 and "no such route /v1/translation" in body["error"]["message"]
    assert api("GET", "/nothing-here.js")[0] == 404
    status, body, headers = api("GET", "/v1/translate")
    assert status == 405 and headers["allow"] == "POST"
    assert body["error"]["message"] == "GET is not allowed on /v1/translate: use POST"
    assert api("POST", "/v1/models", {})[0] == 405
    assert api("POST", "/v1/models")[0] == 415  # no JSON body: the content type comes first
    status, body, headers = api("POST", "/app.js", {})  # the page's files: GET and HEAD
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert body["error"]["message"] == "POST is not allowed on /app.js: use GET, HEAD"
    status, body, _ = api("GET", "/v1/models?task=summarize")
    assert status == 400 and "unknown task 'summarize'" in body["error"]["message"]
    status, body, _ = api("GET", "/v1/models?tsak=translate")
    assert status == 400 and "unknown query parameter 'tsak'" in body["error"]["message"]
    # a declared length over the limit is refused before the body is read
    connection = http.client.HTTPConnection("127.0.0.1", api.server.port, timeout=30)
    connection.putrequest("POST", "/v1/translate")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(9 * 1024 * 1024))
    connection.endheaders()
    answer = connection.getresponse()
    body = json.loads(answer.read())
    assert answer.status == 413 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    connection.close()
    # so is a streamed (chunked) body once it passes the limit
    status, body = asgi_post(api.api.asgi, "/v1/translate", [b"x" * 1024 * 1024] * 9)
    assert status == 413 and "larger than 8388608 bytes" in body["error"]["message"]
    assert api.predictor.calls == []


def test_more_calls_at_once_than_allowed_are_429(running):
    hold = threading.Event()
    api = running(FakePredictor(hold=hold), max_concurrent=2)
    answers = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(api("POST", "/v1/translate", {"texts": ["a"]}))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: len(api.predictor.calls) == 2, 10, what="two calls running")
    status, body, _ = api("POST", "/v1/translate", {"texts": ["b"]})
    assert status == 429 and "max_concurrent_rpcs 2" in body["error"]["message"]
    hold.set()
    for t in threads:
        t.join(30)
    assert [a[0] for a in answers] == [200, 200]
    assert api("POST", "/v1/translate", {"texts": ["c"]})[0] == 200  # the slots were given back


def test_readyz_is_false_until_the_models_are_served_and_again_when_draining(running):
    api = running(serve=False)
    assert api("GET", "/healthz")[:2] == (200, {"status": "ok"})
    assert api("GET", "/readyz")[:2] == (503, {"ready": False, "reason": "loading models"})
    status, body, _ = api("POST", "/v1/classify", {"texts": ["a"]})
    assert status == 503 and "still loading" in body["error"]["message"]
    api.api.serve(Seq2SeqServicer(api.predictor))
    assert api("GET", "/readyz")[:2] == (
        200,
        {"ready": True, "models": {"translate": 7, "classify": 3}},
    )
    assert api("POST", "/v1/classify", {"texts": ["a"]})[0] == 200
    api.predictor.models = {}
    assert api("GET", "/readyz")[:2] == (503, {"ready": False, "reason": "no models loaded"})
    api.api.drain()
    assert api("GET", "/readyz")[0] == 503
    status, body, _ = api("POST", "/v1/classify", {"texts": ["a"]})
    assert status == 503 and body["error"]["message"] == "the server is shutting down"
    assert api("GET", "/healthz")[0] == 200  # alive while it drains


@pytest.mark.parametrize(
    "headers, status",
    [
        ((), 401),
        ((("Authorization", "Bearer wrong"),), 401),
        ((("Authorization", f"Basic {TOKEN}"),), 401),
        ((("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")), 401),
        ((("Authorization", f"Bearer {TOKEN}"),), 200),
        ((("Authorization", f"bearer {TOKEN}"),), 200),  # RFC 6750: the scheme ignores case
    ],
)
def test_the_token_guards_the_api_but_not_health_or_the_page(running, headers, status):
    api = running(token=TOKEN)
    got, body, answer_headers = api("POST", "/v1/classify", {"texts": ["a"]}, headers)
    assert got == status
    if status == 401:
        assert body["error"]["status"] == "UNAUTHENTICATED"
        assert answer_headers["www-authenticate"] == "Bearer"
        assert api.predictor.calls == []
        assert api("GET", "/v1/models", headers=headers)[0] == 401
    for open_path in ("/healthz", "/readyz", "/", "/app.js"):
        assert api("GET", open_path)[0] == 200


def test_auth_off_needs_no_header(running):
    assert running()("POST", "/v1/classify", {"texts": ["a"]})[0] == 200


def test_metrics_count_http_requests_by_route_and_status(running):
    api = running(FakePredictor(InvalidRequest("bad")))
    api("POST", "/v1/translate", {"texts": ["a"]})
    api("POST", "/v1/translate", {"texts": ["a"]})
    api("POST", "/v1/classify", {"textz": []})
    api("GET", "/v1/models")
    api("GET", "/no/such/path")
    api("GET", "/")

    def count(route, status):
        return api.metrics.registry.get_sample_value(
            "seq2seq_http_requests_total", {"route": route, "status": status}
        )

    # the count is taken once the answer is sent: the last one may lag behind its client
    wait_for(lambda: count("/", "200") == 1, 10, what="the page's request counted")
    assert count("/v1/translate", "400") == 2
    assert count("/v1/classify", "400") == 1
    assert count("/v1/models", "200") == 1
    assert count("other", "404") == 1
    latency = api.metrics.registry.get_sample_value(
        "seq2seq_http_request_latency_seconds_count", {"route": "/v1/translate"}
    )
    assert latency == 2


def test_the_page_and_its_files_are_served_with_a_strict_policy(running):
    api = running()
    status, html, headers = api("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert 'id="translate-form"' in html and 'src="app.js"' in html
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "http" not in html.replace("http-equiv", "").split("<body>")[0]  # no CDN
    status, js, headers = api("GET", "/app.js")
    assert status == 200 and "javascript" in headers["content-type"]
    assert "v1/translate" in js
    assert api("GET", "/app.css")[0] == 200


def test_a_taken_http_port_is_a_clear_error():
    taken = HttpServer(HttpApi().asgi, "127.0.0.1", 0)
    try:
        with pytest.raises(SystemExit, match=f"cannot listen for HTTP on 127.0.0.1:{taken.port}"):
            HttpServer(HttpApi().asgi, "127.0.0.1", taken.port)
    finally:
        taken._socket.close()


# --- the real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both(models):
    """The real server with its HTTP API on: (server, HTTP base URL)."""
    port = free_port()
    srv = Server(models, "--http-port", str(port))
    yield srv, f"http://127.0.0.1:{port}"
    srv.stop()


def test_json_answers_equal_the_grpc_answers_for_the_same_request(both):
    srv, base = both
    sources = [es for _, es in PAIRS[:3]]
    cases = [
        ("Translate", "/v1/translate", pb.TranslateRequest(texts=sources, beam_size=3, n_best=2)),
        (
            "Translate",
            "/v1/translate",
            pb.TranslateRequest(texts=sources[:1], return_alignment=True),
        ),
        ("Classify", "/v1/classify", pb.ClassifyRequest(texts=[t for _, t in REVIEWS[:4]])),
    ]
    with grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.Seq2SeqServiceStub(channel)
        for method, path, request in cases:
            want = getattr(stub, method)(request, timeout=60)
            body = json_format.MessageToJson(request)  # lowerCamelCase, as most clients send
            status, answer, _ = call(base, "POST", path, body)
            assert status == 200, answer
            got = json_format.ParseDict(answer, type(want)())
            assert got == want  # every field, every float bit
        want = stub.GetModelMetadata(pb.GetModelMetadataRequest(), timeout=60)
        got = json_format.ParseDict(
            call(base, "GET", "/v1/models")[1], pb.GetModelMetadataResponse()
        )
        assert got == want and len(got.models) == 2
    aligned = (
        json_format.ParseDict(
            call(
                base, "POST", "/v1/translate", {"texts": ["Veo el gato."], "return_alignment": True}
            )[1],
            pb.TranslateResponse(),
        )
        .translations[0]
        .hypotheses[0]
    )
    assert aligned.text == "I see the cat."
    assert len(aligned.alignment) == len(aligned.source_tokens) * len(aligned.target_tokens)


def test_the_same_checks_give_the_same_messages_on_both_apis(both):
    srv, base = both
    bad = [
        ("Translate", "/v1/translate", pb.TranslateRequest(texts=["a"], beam_size=99)),
        ("Translate", "/v1/translate", pb.TranslateRequest(texts=["  "])),
        ("Translate", "/v1/translate", pb.TranslateRequest(texts=["a"], model_version=5)),
        ("Classify", "/v1/classify", pb.ClassifyRequest(texts=["a"] * 65)),
    ]
    with grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.Seq2SeqServiceStub(channel)
        for method, path, request in bad:
            with pytest.raises(grpc.RpcError) as caught:
                getattr(stub, method)(request, timeout=60)
            status, body, _ = call(base, "POST", path, json_format.MessageToJson(request))
            assert body["error"]["status"] == caught.value.code().name
            assert body["error"]["message"] == caught.value.details()
            assert status == {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404}[caught.value.code().name]


def test_the_server_says_where_the_page_is_and_is_ready(both):
    srv, base = both
    assert f"web page and HTTP/JSON API on {base}/" in srv.log()
    status, body, _ = call(base, "GET", "/readyz")
    assert status == 200 and body == {"ready": True, "models": {"translate": 1, "classify": 1}}


def test_http_stays_off_unless_asked(models):
    with Server(models) as srv:
        assert "HTTP" not in srv.log()


def test_sigterm_lets_a_running_http_call_finish(models):
    port = free_port()
    srv = Server(models, "--http-port", str(port))
    base = f"http://127.0.0.1:{port}"
    answers = []
    long_request = {"texts": [es for _, es in PAIRS] * 10, "beam_size": 8, "max_length": 60}
    t = threading.Thread(
        target=lambda: answers.append(call(base, "POST", "/v1/translate", long_request))
    )
    t.start()
    time.sleep(0.3)
    srv.proc.terminate()
    t.join(60)
    assert srv.proc.wait(60) == 0
    assert answers and answers[0][0] == 200 and len(answers[0][1]["translations"]) == 60


def test_the_load_generator_speaks_http(running):
    from serving.bench.loadgen import run_load

    api = running()
    texts = [f"frase {i}" for i in range(10)]
    out = run_load(api.base, texts, 2, 0.5, warmup=0.1, texts_per_request=3)
    assert out["protocol"] == "http" and out["errors"] == {} and out["requests"] > 0
    sent = [(texts_, options["beam_size"]) for _, texts_, options in api.predictor.calls]
    assert {len(t) for t, _ in sent[2:]} == {3} and {b for _, b in sent} == {1}  # greedy
    refusing = running(FakePredictor(Overloaded("the translate queue is full")))
    with pytest.raises(RuntimeError, match="first request failed: RESOURCE_EXHAUSTED"):
        run_load(refusing.base, texts, 2, 0.5, warmup=0.1)


def test_the_load_generator_starts_its_clock_once_its_clients_are_connected(running, monkeypatch):
    """Clients that take longer to connect than the warm-up and the window together still get
    the whole window: the clock starts when the last of them is connected."""
    import contextlib
    import time

    from serving.bench import loadgen

    real = loadgen.connect

    @contextlib.contextmanager
    def slow_connect(*args, **kwargs):
        time.sleep(0.8)  # > warm-up 0.1 s + window 0.5 s
        with real(*args, **kwargs) as call:
            yield call

    monkeypatch.setattr(loadgen, "connect", slow_connect)
    api = running()
    out = loadgen.run_load(api.base, ["uno", "dos"], 2, 0.5, warmup=0.1)
    assert out["errors"] == {} and out["requests"] >= 2, out
