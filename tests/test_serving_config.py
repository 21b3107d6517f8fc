"""Server settings: defaults < YAML file < flags, and clear errors for bad ones (no TensorFlow)."""

import argparse
from pathlib import Path

import pytest

from serving.server import config
from serving.server.main import FLAGS

EXAMPLE = Path(__file__).resolve().parents[1] / "serving" / "server" / "config.example.yaml"


def test_the_example_file_lists_exactly_the_defaults():
    assert config.load(EXAMPLE) == config.ServingConfig()
    text = EXAMPLE.read_text()
    for section in ("server", "models", "batching", "limits", "security", "metrics", "http"):
        keys = vars(getattr(config.ServingConfig(), section))
        assert all(f"  {key}:" in text for key in keys), section


def test_defaults_bind_loopback_with_batching_on_and_security_off():
    cfg = config.load()
    assert cfg.server.host == "127.0.0.1"
    assert cfg.batching.max_batch_size == 32 and cfg.batching.max_wait_us == 2000
    assert cfg.security.tls_cert == "" and cfg.security.token_file == ""
    assert cfg.metrics.port == -1
    assert cfg.http.port == -1 and cfg.http.host == "127.0.0.1"  # off unless asked (make serve)


def test_file_values_apply_and_flags_override_them(tmp_path):
    path = tmp_path / "serving.yaml"
    path.write_text("server:\n  port: 6000\n  host: 0.0.0.0\nbatching:\n  max_wait_us: 500\n")
    cfg = config.load(path, {"server.port": 7000, "models.poll_seconds": 0})
    assert cfg.server.port == 7000  # flag over file
    assert cfg.server.host == "0.0.0.0" and cfg.batching.max_wait_us == 500  # file over default
    assert cfg.models.poll_seconds == 0.0 and isinstance(cfg.models.poll_seconds, float)
    assert cfg.batching.max_batch_size == 32  # default


def test_every_flag_names_a_real_setting():
    for flag, (dotted, kind, _) in FLAGS.items():
        section, key = dotted.split(".")
        default = getattr(getattr(config.ServingConfig(), section), key)
        if kind is config.parse_threads:  # a number, or task=number pairs: the default's form
            assert kind("translate=2,classify=1") == default, flag
            continue
        assert type(default) is kind, flag


def test_batch_threads_are_one_number_or_one_per_task(tmp_path):
    assert config.load().batching.threads == {"translate": 2, "classify": 1}
    every = config.load(None, {"batching.threads": config.parse_threads("3")}).batching
    assert [every.threads_for(t) for t in ("translate", "classify")] == [3, 3]
    path = tmp_path / "serving.yaml"
    path.write_text("batching:\n  threads: {classify: 2}\n")
    per_task = config.load(path).batching
    assert [per_task.threads_for(t) for t in ("translate", "classify")] == [1, 2]
    assert config.parse_threads("translate=4, classify=1") == {"translate": 4, "classify": 1}
    for bad in ("two", "translate=x", "translate"):
        with pytest.raises(argparse.ArgumentTypeError, match="translate=2,classify=1"):
            config.parse_threads(bad)


@pytest.mark.parametrize(
    "text, message",
    [
        ("server:\n  prot: 1\n", "unknown setting server.prot"),
        ("serve:\n  port: 1\n", "unknown section 'serve'"),
        ("server:\n  port: high\n", "server.port must be int"),
        ("server:\n  port: 70000\n", "must be in [0, 65535]"),
        ("server:\n  device: tpu\n", "cpu or gpu"),
        ("batching:\n  queue_capacity: 0\n", "queue_capacity must be an integer ≥ 1"),
        ("batching:\n  threads: 0\n", "batching.threads must be an integer ≥ 1 or a mapping"),
        ("batching:\n  threads: {classify: 0}\n", "mapping of task to integer ≥ 1"),
        ("batching:\n  threads: {translat: 2}\n", "unknown task 'translat'"),
        ("batching:\n  threads: two\n", "batching.threads must be an integer or a mapping"),
        ("security:\n  tls_key: k.pem\n", "go together"),
        ("limits:\n  max_texts: 0\n", "limits.max_texts must be ≥ 1"),
        ("http:\n  port: -2\n", "http.port must be -1 (off) or in [0, 65535], got -2"),
        ("http:\n  prot: 8080\n", "unknown setting http.prot; http has: allowed_hosts, body_"),
        ("http:\n  allowed_hosts: localhost\n", "http.allowed_hosts must be list"),
        ("http:\n  allowed_hosts: ['']\n", "http.allowed_hosts must be a list of non-empty"),
        ("http:\n  cors_origins: [example.com]\n", "an origin is scheme://host[:port]"),
        ("http:\n  cors_origins: ['https://a.b/page']\n", "(no path), got 'https://a.b/page'"),
        ("http:\n  max_connections: 0\n", "http.max_connections must be ≥ 1, got 0"),
        ("http:\n  header_timeout_seconds: 0\n", "http.header_timeout_seconds must be > 0"),
        ("http:\n  request_timeout_seconds: -1\n", "request_timeout_seconds must be ≥ 0"),
        ("server:\n  drain_seconds: -1\n", "server.drain_seconds and models.poll_seconds"),
        ("- a\n- b\n", "expected sections"),
        ("server: [\n", "not valid YAML"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        config.load(path)
    assert message in str(err.value)


def test_a_missing_or_binary_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="cannot read the serving config"):
        config.load(tmp_path / "nope.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00server")
    with pytest.raises(ValueError, match=r"the serving config .*binary.yaml is not UTF-8 text"):
        config.load(binary)
