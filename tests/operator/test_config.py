"""The operator's configuration file is a ServerConfig; its `config` extras are checked too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from splitcore.config import ConfigError, ServerConfig
from splitlearn_operator.config import OperatorConfig


def test_extras_come_from_server_config():
    config = OperatorConfig.from_server_config(
        ServerConfig(config={"log_format": "json", "job_backoff_limit": 0, "job_image": "x:1"})
    )
    assert (config.extras.log_format, config.extras.job_backoff_limit) == ("json", 0)
    assert config.extras.job_image == "x:1"


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        ({"log_fromat": "json"}, "config: unknown field 'log_fromat'"),
        ({"log_format": "xml"}, "config.log_format: expected text or json"),
        ({"job_backoff_limit": "3"}, "config.job_backoff_limit: expected an integer"),
        ({"job_active_deadline_seconds": 0}, "config.job_active_deadline_seconds: out of range"),
    ],
)
def test_bad_extras_name_the_field(extras, message):
    with pytest.raises(ConfigError, match=message):
        OperatorConfig.from_server_config(ServerConfig(config=extras))


@pytest.mark.parametrize(
    ("path", "mount"), [("./models", "/models"), ("/data/m", "/data/m"), ("models", "/models")]
)
def test_model_storage_dir_becomes_a_mount_path(path, mount):
    config = OperatorConfig.from_server_config(ServerConfig(model_storage_dir=path))
    assert config.default_storage_path == mount


REPOSITORY = Path(__file__).resolve().parents[2]


def test_help_and_a_bad_config_file(tmp_path):
    # Run from the repository root without -P: the operator/ folder shadows nothing.
    command = [sys.executable, "-m", "splitlearn_operator"]
    done = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, check=False, cwd=REPOSITORY
    )
    assert done.returncode == 0
    assert "--all-namespaces" in done.stdout and "ServerConfig" in done.stdout
    (tmp_path / "bad.yaml").write_text("max_modles: 3\n")
    done = subprocess.run(
        [*command, "--config", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown field 'max_modles'" in done.stderr


def test_the_repository_root_shadows_no_standard_module():
    """`python -m anything` from the root imports the standard library's `operator`, and
    `splitlearn_operator` resolves to operator/splitlearn_operator/."""
    code = (
        "import operator, splitlearn_operator, pathlib; print(operator.eq(1, 1)); "
        "print(pathlib.Path(splitlearn_operator.__file__).parent.relative_to(pathlib.Path.cwd()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPOSITORY
    )
    assert done.stdout.split() == ["True", "operator/splitlearn_operator"]
