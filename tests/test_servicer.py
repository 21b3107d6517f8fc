"""The servicer alone, in process (grpc_testing, no socket), over a fake predictor: protobuf ↔
Python conversion, optional fields, and the one error → status mapping."""

import grpc
import grpc_testing
import pytest
from fakes import FakePredictor

from serving.server.errors import (
    DeadlineExceeded,
    InvalidRequest,
    ModelUnavailable,
    NotSupported,
    Overloaded,
    VersionNotFound,
)
from serving.server.servicer import Seq2SeqServicer
from serving.v1 import seq2seq_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Seq2SeqService"]


def invoke(predictor, method, request):
    server = grpc_testing.server_from_dictionary(
        {SERVICE: Seq2SeqServicer(predictor)}, grpc_testing.strict_real_time()
    )
    rpc = server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
    return rpc.termination()  # (response, trailing metadata, code, details)


def test_translate_converts_and_passes_only_set_options():
    fake = FakePredictor()
    response, _, code, _ = invoke(
        fake, "Translate", pb.TranslateRequest(texts=["Hola", "Adiós"], n_best=2)
    )
    assert code == grpc.StatusCode.OK
    assert [[h.text for h in t.hypotheses] for t in response.translations] == [
        ["HOLA", "hola"],
        ["ADIÓS", "adiós"],
    ]
    assert response.model_version == 7
    _, texts, options = fake.calls[0]
    assert texts == ["Hola", "Adiós"]
    assert options == {
        "beam_size": None,
        "n_best": 2,
        "max_length": None,
        "length_penalty": None,
        "model_version": None,
        "model_version_label": None,
        "timeout": None,
        "return_alignment": False,
        "alive": options["alive"],
    }
    assert callable(options["alive"])  # the call context's is_active
    assert not response.translations[0].hypotheses[0].source_tokens  # not asked for


def test_translate_with_alignment_fills_pieces_rows_and_words():
    fake = FakePredictor()
    request = pb.TranslateRequest(texts=["a b"], return_alignment=True)
    response, _, code, _ = invoke(fake, "Translate", request)
    assert code == grpc.StatusCode.OK and fake.calls[0][2]["return_alignment"] is True
    h = response.translations[0].hypotheses[0]
    assert list(h.source_tokens) == ["▁a", "b"] and list(h.target_tokens) == ["▁A", "<eos>"]
    assert list(h.alignment) == [0.75, 0.25, 0.5, 0.5]  # row-major, target × source
    assert [(w.target, w.source) for w in h.word_alignment] == [("A", "ab")]


def test_the_deadline_reaches_the_predictor():
    fake = FakePredictor()
    server = grpc_testing.server_from_dictionary(
        {SERVICE: Seq2SeqServicer(fake)}, grpc_testing.strict_real_time()
    )
    rpc = server.invoke_unary_unary(
        SERVICE.methods_by_name["Classify"], (), pb.ClassifyRequest(texts=["x"]), 5.0
    )
    assert rpc.termination()[2] == grpc.StatusCode.OK
    timeout = fake.calls[0][2]["timeout"]
    assert 4.0 < timeout <= 5.0


def test_classify_and_metadata_convert():
    response, _, code, _ = invoke(FakePredictor(), "Classify", pb.ClassifyRequest(texts=["x"]))
    assert code == grpc.StatusCode.OK and response.results[0].label == "pos"
    assert [(p.label, p.probability) for p in response.results[0].probabilities] == [
        ("neg", 0.25),
        ("pos", 0.75),
    ]
    response, _, code, _ = invoke(FakePredictor(), "GetModelMetadata", pb.GetModelMetadataRequest())
    assert code == grpc.StatusCode.OK
    assert response.models[0].task == pb.TASK_CLASSIFY and response.limits.max_texts == 64


@pytest.mark.parametrize(
    "error, code",
    [
        (InvalidRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (VersionNotFound("no v9"), grpc.StatusCode.NOT_FOUND),
        (ModelUnavailable("none"), grpc.StatusCode.UNAVAILABLE),
        (Overloaded("busy"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (DeadlineExceeded("late"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (NotSupported("no attention"), grpc.StatusCode.FAILED_PRECONDITION),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_errors_map_to_status_codes(error, code):
    _, _, got, details = invoke(FakePredictor(error), "Translate", pb.TranslateRequest(texts=["a"]))
    assert got == code
    assert str(error) in details if code != grpc.StatusCode.INTERNAL else "RuntimeError" in details


def test_servicer_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys, serving.server.servicer, serving.client; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
