"""Shared test setup: quiet TensorFlow, Keras on the TensorFlow backend, fixed seeds."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Tiny translate + classify exports (version 1 of each) shared by the serving tests."""
    from servers import export_models

    return export_models(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def running():
    """running(...) starts a servers.Running (the HTTP API over a fake predictor, in this
    process); all are stopped after the test."""
    from servers import Running

    started = []

    def start(*args, **kwargs):
        started.append(Running(*args, **kwargs))
        return started[-1]

    yield start
    for r in started:
        r.stop()
