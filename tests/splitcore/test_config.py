"""`ServerConfig` and `ModelConfig`: the guide's defaults, YAML keys, round trip, strictness."""

from __future__ import annotations

import os

import pytest
import yaml

from splitcore.config import ConfigError, ModelConfig, ServerConfig, SplitStorageConfig

GUIDE_SERVER_YAML = """\
host: 0.0.0.0
port: 50051
max_workers: 10
max_models: 5
metrics_port: 8000
health_check_interval: 30.0
enable_monitoring: true
log_level: INFO
model_storage_dir: ./models
auto_save_split_models: true
config: {}
"""


def test_server_config_defaults():
    config = ServerConfig()
    assert config.to_dict() == {
        "host": "0.0.0.0",
        "port": 50051,
        "max_workers": 10,
        "max_models": 5,
        "metrics_port": 8000,
        "health_check_interval": 30.0,
        "enable_monitoring": True,
        "log_level": "INFO",
        "model_storage_dir": "./models",
        "auto_save_split_models": False,
        "config": {},
    }


def test_server_config_writes_the_guides_yaml(tmp_path):
    config = ServerConfig(
        host="0.0.0.0", port=50051, model_storage_dir="./models", auto_save_split_models=True
    )
    config.to_yaml(tmp_path / "server_config.yaml")
    assert (tmp_path / "server_config.yaml").read_text() == GUIDE_SERVER_YAML


def test_server_config_reads_the_guides_yaml_and_round_trips(tmp_path):
    path = tmp_path / "server_config.yaml"
    path.write_text(GUIDE_SERVER_YAML)
    config = ServerConfig.from_yaml(path)
    assert config == ServerConfig(auto_save_split_models=True)
    config.to_yaml(tmp_path / "again.yaml")
    assert ServerConfig.from_yaml(tmp_path / "again.yaml") == config


def test_model_config_from_the_guide_round_trips(tmp_path):
    config = ModelConfig(
        model_id="my_gpt2",
        model_path="./models/gpt2.pt",
        model_type="gpt2",
        split_storage_config={
            "storage_path": "./models",
            "auto_save": True,
            "split_config": "2-10",
        },
    )
    assert config.split_storage_config == SplitStorageConfig("./models", True, "2-10")
    assert config.split_storage_config.split_points == (2, 10)
    config.to_yaml(tmp_path / "model_config.yaml")
    assert yaml.safe_load((tmp_path / "model_config.yaml").read_text()) == {
        "model_id": "my_gpt2",
        "model_path": "./models/gpt2.pt",
        "model_type": "gpt2",
        "split_storage_config": {
            "storage_path": "./models",
            "auto_save": True,
            "split_config": "2-10",
        },
        "config": {},
    }
    assert ModelConfig.from_yaml(tmp_path / "model_config.yaml") == config


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("prot: 1\n", "unknown field 'prot'"),
        ("port: fifty\n", "port: expected an integer, got str 'fifty'"),
        ("port: true\n", "port: expected an integer, got bool True"),
        ("port: 70000\n", "port: expected a TCP port 1-65535, got 70000"),
        ("enable_monitoring: 1\n", "enable_monitoring: expected true or false, got int 1"),
        ("health_check_interval: soon\n", "health_check_interval: expected a number"),
        ("max_models: 0\n", "max_models: must be at least 1"),
        ("log_level: LOUD\n", "log_level: expected one of DEBUG, INFO, WARNING"),
        ("config: [1]\n", "config: expected a mapping"),
        ("- a\n", "expected a mapping at the top level"),
    ],
)
def test_server_config_rejects_bad_values_naming_the_field(tmp_path, document, message):
    path = tmp_path / "server_config.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError) as error:
        ServerConfig.from_yaml(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"model_id": "a", "model_path": "b", "oops": 1}, "unknown field 'oops'"),
        ({"model_path": "b"}, "model_id"),
        (
            {"model_id": "a", "model_path": "b", "split_storage_config": {"auto_save": "yes"}},
            "split_storage_config.auto_save: expected true or false",
        ),
        (
            {"model_id": "a", "model_path": "b", "split_storage_config": {"split_config": "10-2"}},
            "split_config",
        ),
        (
            {"model_id": "a", "model_path": "b", "split_storage_config": {"path": "x"}},
            "split_storage_config: unknown field 'path'",
        ),
    ],
)
def test_model_config_rejects_bad_values_naming_the_field(document, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(document)


def _laughs(depth: int = 9, width: int = 9) -> str:
    """The "billion laughs" shape: a few hundred bytes that alias-expand to width**depth."""
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join(lines) + f"\nmodel_id: *a{depth - 1}\nmodel_path: /m\n"


def test_yaml_aliases_are_refused_before_they_expand(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(_laughs())
    assert len(path.read_bytes()) < 600
    with pytest.raises(ConfigError, match=r"YAML aliases \(\*name\) are not accepted"):
        ModelConfig.from_yaml(path)


@pytest.mark.parametrize(
    "text",
    [
        "model_id: !!python/object/apply:os.system [id]\nmodel_path: /m\n",
        "model_id: !!python/name:os.system\nmodel_path: /m\n",
    ],
)
def test_python_tags_are_refused(tmp_path, text):
    path = tmp_path / "model.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        ModelConfig.from_yaml(path)


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    path = tmp_path / "model.yaml"
    os.mkfifo(path)
    with pytest.raises(ConfigError, match=f"{path} is a FIFO, not a regular file"):
        ModelConfig.from_yaml(path)


def test_a_huge_value_is_cut_in_the_error_message():
    with pytest.raises(ConfigError) as error:
        ModelConfig.from_dict({"model_id": ["x" * 10**6], "model_path": "/m"})
    assert len(str(error.value)) < 200
    assert str(error.value).startswith("model_id: expected a string, got list ['xxx")
