"""One worker of the two-worker NaN-guard test (tests/test_nan_guard.py): under
MultiWorkerMirroredStrategy (TF_CONFIG from the environment) it trains a tiny model one good
step, then one step where only worker 0's batch holds a NaN, then one good step, and prints the
digests of every weight and optimizer variable after each step as JSON."""

import json
import sys
from pathlib import Path

import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_nan_guard import Tiny, batch, digest  # noqa: E402

from seq2seq.config import TrainConfig  # noqa: E402
from seq2seq.training import make_optimizer, make_train_step  # noqa: E402


def main() -> int:
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    worker = strategy.cluster_resolver.task_id
    cfg = TrainConfig(learning_rate=0.01, warmup_steps=0, max_steps=10)
    with strategy.scope():
        model = Tiny()
        model(batch()[0])
        optimizer = make_optimizer(cfg)
        optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, cfg, strategy, {})
    out = {"worker": worker, "digests": [digest(model, optimizer)], "losses": []}
    for poisoned in (False, worker == 0, False):
        loss, _, _ = step(batch(seed=worker, nan=poisoned))
        out["losses"].append(float(loss))
        out["digests"].append(digest(model, optimizer))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
