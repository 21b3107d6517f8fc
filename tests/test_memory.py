"""The server's memory budget (serving.server.memory) and oneDNN setting: requests refused while
the RSS is over the budget, the auto budget, the start-up refusal, what metadata reports."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import grpc
import grpc_testing
import pytest
from fakes import FakePredictor
from servers import ROOT, Server, free_port

from serving.server.errors import Overloaded
from serving.server.memory import MemoryBudget, MiB, rss_bytes
from serving.server.servicer import Seq2SeqServicer
from serving.v1 import seq2seq_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["Seq2SeqService"]


class FakeRss:
    def __init__(self, mib):
        self.mib = mib

    def __call__(self):
        return int(self.mib * MiB)


def sampled(budget, over: bool):
    """`budget` once its sampler has seen the new RSS (over the budget or not). The first
    crossing also runs a garbage collection, which takes a while in a big test process."""
    deadline = time.monotonic() + 10
    while budget.over() != over:
        assert time.monotonic() < deadline, "the sampler never saw the new RSS"
        time.sleep(0.01)
    return budget


def test_requests_are_refused_only_while_over_the_budget():
    rss = FakeRss(300)
    budget = MemoryBudget(400, rss=rss, every=0.01).start()
    try:
        assert budget.budget_mib == 400
        sampled(budget, over=False).check()  # 300 ≤ 400
        rss.mib = 450
        with pytest.raises(Overloaded) as err:
            sampled(budget, over=True).check()
        assert str(err.value) == (
            "the server's memory (450 MiB) is over its budget (server.memory_budget_mib 400): "
            "retry after a short backoff"
        )
        rss.mib = 390
        sampled(budget, over=False).check()  # back under: taken again
    finally:
        budget.stop()


def test_the_auto_budget_follows_the_loaded_models():
    rss = FakeRss(600)
    budget = MemoryBudget(0, rss=rss, every=0.01)
    budget.models_changed()  # a load at start, before start(): not counted alone
    assert budget.budget_mib == 0
    budget.start(models_loaded=True)
    try:
        assert budget.budget_mib == 900  # 1.5 × 600
        rss.mib = 901
        with pytest.raises(Overloaded):
            sampled(budget, over=True).check()
        rss.mib = 1000  # the other task's model (or a bigger version) is loaded
        budget.models_changed()
        assert budget.budget_mib == 1500
        sampled(budget, over=False).check()  # taken again at once, not refused forever
        rss.mib = 700  # a version let go
        budget.models_changed()
        assert budget.budget_mib == 1050
    finally:
        budget.stop()


def test_a_set_budget_does_not_follow_the_models():
    rss = FakeRss(600)
    budget = MemoryBudget(1000, rss=rss, every=0.01).start()
    try:
        rss.mib = 1200
        budget.models_changed()
        assert budget.budget_mib == 1000 and budget.over()
    finally:
        budget.stop()


def test_an_auto_budget_without_models_at_start_is_set_at_the_first_load():
    rss = FakeRss(200)
    budget = MemoryBudget(0, rss=rss, every=0.01).start(models_loaded=False)
    try:
        assert budget.budget_mib == 0
        time.sleep(0.05)
        budget.check()  # none yet: nothing refused
        rss.mib = 500
        budget.models_changed()
        assert budget.budget_mib == 750
    finally:
        budget.stop()


def test_no_budget_never_refuses_and_bad_values_are_refused():
    budget = MemoryBudget(-1, rss=FakeRss(10**6)).start()
    assert budget.budget_mib == 0 and not budget.over()
    budget.check()
    budget.stop()
    for bad in (-2, 1.5, "1G"):
        with pytest.raises(ValueError, match="memory_budget_mib must be -1"):
            MemoryBudget(bad)
    assert 10 * MiB < rss_bytes() < 100_000 * MiB  # this process, read from /proc


def test_over_the_budget_model_rpcs_are_resource_exhausted_and_metadata_still_answers():
    rss = FakeRss(100)
    budget = MemoryBudget(200, rss=rss, every=0.01).start()
    fake = FakePredictor()
    server = grpc_testing.server_from_dictionary(
        {SERVICE: Seq2SeqServicer(fake, budget)}, grpc_testing.strict_real_time()
    )

    def invoke(method, request):
        rpc = server.invoke_unary_unary(SERVICE.methods_by_name[method], (), request, None)
        return rpc.termination()

    try:
        assert invoke("Translate", pb.TranslateRequest(texts=["hola"]))[2] == grpc.StatusCode.OK
        rss.mib = 250
        sampled(budget, over=True)
        for method, request in (
            ("Translate", pb.TranslateRequest(texts=["hola"])),
            ("Classify", pb.ClassifyRequest(texts=["good"])),
        ):
            _, _, code, details = invoke(method, request)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "over its budget (server.memory_budget_mib 200)" in details
        assert len(fake.calls) == 1  # the refused ones never reached the model
        response, _, code, _ = invoke("GetModelMetadata", pb.GetModelMetadataRequest())
        assert code == grpc.StatusCode.OK and response.limits.memory_budget_mib == 200
    finally:
        budget.stop()


@pytest.mark.slow
def test_the_server_reports_its_auto_budget_on_both_apis(models):
    http_port = free_port()
    with Server(models, "--http-port", str(http_port)) as server:
        rss = server.rss_mib()
        with grpc.insecure_channel(server.target) as channel:
            from serving.v1 import seq2seq_pb2_grpc as pb_grpc

            meta = pb_grpc.Seq2SeqServiceStub(channel).GetModelMetadata(
                pb.GetModelMetadataRequest(), timeout=10
            )
        budget = meta.limits.memory_budget_mib
        assert 1.3 * rss < budget < 1.6 * rss, (budget, rss)  # 1.5 × the RSS at start
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v1/models", timeout=10) as r:
            assert json.load(r)["limits"]["memory_budget_mib"] == budget
        assert f"budget {budget} MiB" in server.log()


@pytest.mark.slow
def test_the_servers_auto_budget_follows_a_model_loaded_later(models, tmp_path):
    """A server that starts with the classifier only and gets a translator later: its auto
    budget is set again after the load (it used to stay at 1.5 × the classifier alone, and
    the server could stay over it, refusing everything, until restarted)."""
    import shutil

    from servers import wait_for

    repo = tmp_path / "models"
    shutil.copytree(models / "classify", repo / "classify")
    with Server(repo, "--poll-seconds", "0.2") as server:
        with grpc.insecure_channel(server.target) as channel:
            from serving.v1 import seq2seq_pb2_grpc as pb_grpc

            stub = pb_grpc.Seq2SeqServiceStub(channel)

            def meta():
                return stub.GetModelMetadata(pb.GetModelMetadataRequest(), timeout=10)

            first = meta().limits.memory_budget_mib
            shutil.copytree(models / "translate", repo / "translate")
            wait_for(lambda: len(meta().models) == 2, 60, what="the translator loaded")
            wait_for(lambda: meta().limits.memory_budget_mib != first, 10, what="a new budget")
            after = meta().limits.memory_budget_mib
            rss = server.rss_mib()
    assert after > first, (first, after)
    assert 1.3 * rss < after < 1.6 * rss, (after, rss)  # 1.5 × the RSS with both loaded


@pytest.mark.slow
def test_a_budget_below_the_loaded_models_is_refused_at_start(models):
    out = subprocess.run(
        [sys.executable, "-m", "serving", "--model-dir", str(models), "--port", "0",
         "--memory-budget-mib", "50"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr[-1000:]
    assert "MiB once its models are loaded, over server.memory_budget_mib 50: raise it" in (
        out.stderr
    )


@pytest.mark.parametrize(("config", "expected"), [("", "0"), ("server:\n  onednn: true\n", None)])
def test_onednn_is_off_unless_configured_on(tmp_path, monkeypatch, config, expected):
    from serving.server import main as server_main

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    path = tmp_path / "serving.yaml"
    path.write_text(config or "server: {}\n")
    port = free_port()
    assert server_main.main(["--config", str(path), "--check", "--port", str(port)]) == 0
    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == expected
