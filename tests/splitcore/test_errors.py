"""Bad input gets a clear error, never a traceback from deep inside torch."""

from __future__ import annotations

import json

import pytest

from splitcore import ModelFactory
from splitcore.checkpoint import CheckpointError, HubDownloadError


def test_unknown_model_type_lists_the_supported_ones(gpt2_checkpoint):
    with pytest.raises(ValueError, match=r"unsupported model_type 'gpt3'; supported: gpt2.*auto"):
        ModelFactory.create_split_models("gpt3", str(gpt2_checkpoint), 2, 10)


def test_model_type_must_match_the_checkpoint(gpt2_checkpoint, tmp_path):
    config = json.loads((gpt2_checkpoint / "config.json").read_text())
    config["model_type"] = "gpt-neo"
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(
        (gpt2_checkpoint / "model.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match=r"does not match the checkpoint's config\.json"):
        ModelFactory.create_split_models("gpt2", str(tmp_path), 2, 10)


def test_auto_reads_the_model_type_from_config(gpt2_checkpoint):
    bottom, _, _ = ModelFactory.create_split_models("auto", str(gpt2_checkpoint), 2, 10)
    assert type(bottom).__name__ == "GPT2BottomModel"


@pytest.mark.parametrize("path", ["/no/such/checkpoint", "./missing-dir", "../missing", "a/b/c"])
def test_missing_local_path_is_file_not_found(path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory at"):
        ModelFactory.create_split_models("gpt2", path, 2, 10)


def test_hub_id_without_network_says_a_download_was_attempted():
    # conftest sets HF_HUB_OFFLINE=1: the hub client refuses before opening any connection.
    with pytest.raises(HubDownloadError) as error:
        ModelFactory.create_split_models("gpt2", "openai-community/gpt2", 2, 10)
    message = str(error.value)
    assert "download from the Hugging Face Hub was attempted" in message
    assert "pass the path of a directory holding config.json" in message


def test_a_file_instead_of_a_directory_is_refused(gpt2_checkpoint):
    with pytest.raises(CheckpointError, match="is a file"):
        ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint / "config.json"), 2, 10)


def test_directory_without_weights_is_refused(tmp_path, gpt2_checkpoint):
    (tmp_path / "config.json").write_text((gpt2_checkpoint / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors weights"):
        ModelFactory.create_split_models("gpt2", str(tmp_path), 2, 10)


def test_the_library_refuses_layers_that_disagree_with_the_config_before_building(
    gpt2_checkpoint, tmp_path
):
    """The same structural check as the streaming split, not torch's load_state_dict."""
    checkpoint = tmp_path / "gpt2"
    checkpoint.mkdir()
    config = json.loads((gpt2_checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "n_inner": 256}))
    (checkpoint / "model.safetensors").symlink_to(gpt2_checkpoint / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"config\.json describes no size 128"):
        ModelFactory.create_split_models("gpt2", str(checkpoint), 2, 10)


@pytest.mark.parametrize("point", [True, 2.0, "2"])
def test_split_points_that_are_not_integers_are_a_value_error(gpt2_checkpoint, point):
    with pytest.raises(ValueError, match="split points must be integers"):
        ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), point, 10)
