"""`make bench-rnn` (seq2seq.bench_rnn): its table and the ratio it reports, on a tiny shape."""

import re
import subprocess
import sys

import pytest
from servers import ROOT


@pytest.mark.slow
def test_bench_rnn_reports_keras_best_over_ours_from_its_own_timings():
    run = subprocess.run(
        [sys.executable, "-m", "seq2seq.bench_rnn", "--shapes", "2,3,4,5", "--rounds", "2",
         "--seconds", "0.01"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert re.search(r"anchor: 2048³ float32 matmul [\d.]+ ms = [\d.]+ GFLOP/s", out)
    rows = {
        (layer, jit): float(ms)
        for layer, jit, ms in re.findall(r"2,3,4,5 +(ours|keras) +(True|False) +([\d.]+)", out)
    }
    assert set(rows) == {(i, j) for i in ("ours", "keras") for j in ("True", "False")}
    assert all(ms > 0 for ms in rows.values())
    ratio = float(re.search(r"2,3,4,5 +([\d.]+)x +1\.3x", out)[1])
    want = min(rows["keras", "False"], rows["keras", "True"]) / rows["ours", "False"]
    assert ratio == pytest.approx(want, rel=0.05, abs=0.01)  # printed values are rounded


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shapes", "2,3,4"], "--shapes must be B,T,D,N groups of four integers"),
        (["--shapes", "2,3,x,5"], "--shapes must be B,T,D,N groups"),
        (["--shapes", "2,0,4,5"], "--shapes must be B,T,D,N groups"),
        (["--rounds", "0"], "--rounds must be ≥ 1 and --seconds > 0"),
        (["--seconds", "-1"], "--rounds must be ≥ 1 and --seconds > 0"),
    ],
)
def test_bench_rnn_names_a_bad_option(argv, message, capsys):
    from seq2seq import bench_rnn

    with pytest.raises(SystemExit) as exit_:
        bench_rnn.main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
