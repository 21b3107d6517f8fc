"""Two training workers on localhost under MultiWorkerMirroredStrategy keep identical weights."""

import json
import sys

import pytest
from workers import run_workers

from seq2seq.config import load_config
from seq2seq.data import prepare


@pytest.mark.slow
def test_two_workers_train_in_lockstep(tmp_path):
    pairs = [(f"I see {n} cats.", f"Veo {n} gatos.") for n in range(40)]
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{en}\t{es}\tx\n" for en, es in pairs))
    common = [
        f"data.dir={tmp_path / 'prepared'}",
        f"data.data_file={data}",
        "data.valid_fraction=0.1",
        "data.test_fraction=0",
        "train.max_steps=6",
        "train.batch_size=8",
        "train.eval_every=3",
        "train.checkpoint_every=3",
    ]
    prepare(load_config("translate", "tiny", overrides=common))

    def args_of(index):
        args = [sys.executable, "-m", "seq2seq", "train", "--preset", "tiny", "--no-progress"]
        for item in [*common, f"train.run_dir={tmp_path / f'runs{index}'}"]:
            args += ["--set", item]
        return args

    outputs = [json.loads(out[out.index("{") :]) for out in run_workers(args_of)]
    assert [o["workers"] for o in outputs] == [2, 2]
    assert [o["steps"] for o in outputs] == [6, 6]
    assert outputs[0]["weights_digest"] == outputs[1]["weights_digest"]
