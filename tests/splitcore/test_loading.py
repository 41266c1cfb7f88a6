"""`load_component` / `load_split`: saved components come back as the modules that were saved."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import splitcore
from splitcore import ModelFactory
from splitcore.storage import CorruptComponentError, StorageManager

TOLERANCE = 1e-5
VOCAB = 96


def _save(checkpoint: Path, storage: Path, file_format: str = "pt") -> None:
    ModelFactory.create_split_models(
        "auto",
        str(checkpoint),
        2,
        4,
        storage_path=str(storage),
        auto_save=True,
        model_name="m",
        file_format=file_format,
    )


def _padded_inputs(is_encoder: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (3, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    padding = slice(-3, None) if is_encoder else slice(0, 3)
    mask[0, padding] = 0
    return ids, mask


def test_loaded_chain_equals_full_model(family, family_checkpoint, full_model, tmp_path):
    _save(family_checkpoint, tmp_path)
    bottom, trunk, top = splitcore.load_split(tmp_path, "m", "2-4")
    reference = full_model(family_checkpoint)
    is_encoder = bottom.adapter.is_encoder
    ids, mask = _padded_inputs(is_encoder)
    keep = mask.bool()
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask)
        output = top(trunk(bottom(ids, attention_mask=mask), attention_mask=mask), mask)
    if is_encoder:
        actual, wanted = output.last_hidden_state, expected.last_hidden_state
        assert (output.pooler_output - expected.pooler_output).abs().max() <= TOLERANCE
    else:
        actual, wanted = output, expected.logits
    assert actual.shape == wanted.shape
    assert (actual - wanted).abs()[keep].max().item() <= TOLERANCE
    combined = {k: v for m in (bottom, trunk, top) for k, v in m.state_dict().items()}
    assert combined.keys() == reference.state_dict().keys()
    assert [(m.start_layer, m.end_layer) for m in (bottom, trunk, top)] == [(0, 2), (2, 4), (4, 6)]
    assert not any(m.training for m in (bottom, trunk, top))


def test_gpt2_from_safetensors_equals_full_model(gpt2_checkpoint, full_model, tmp_path):
    _save(gpt2_checkpoint, tmp_path, "safetensors")
    path = StorageManager.get_split_model_path(tmp_path, "m", "trunk", "2-4", "safetensors")
    trunk = splitcore.load_component(path)
    assert type(trunk).__name__ == "GPT2TrunkModel"
    assert (trunk.start_layer, trunk.end_layer) == (2, 4)
    assert sorted(trunk.split_layers) == ["2", "3"]
    bottom, _, top = splitcore.load_split(tmp_path, "m", "2-4")
    ids, mask = _padded_inputs(is_encoder=False)
    with torch.no_grad():
        output = top(trunk(bottom(ids, attention_mask=mask), attention_mask=mask), mask)
        expected = full_model(gpt2_checkpoint)(ids, attention_mask=mask).logits
    assert (output - expected).abs()[mask.bool()].max().item() <= TOLERANCE


def test_corrupt_component_is_refused(gpt2_checkpoint, tmp_path):
    _save(gpt2_checkpoint, tmp_path)
    path = StorageManager.get_split_model_path(tmp_path, "m", "trunk", "2-4")
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptComponentError, match=r"sha256 \w+ differs from the metadata"):
        splitcore.load_component(path)
    with pytest.raises(CorruptComponentError, match="trunk"):
        splitcore.load_split(tmp_path, "m", "2-4")


def test_missing_split_names_the_paths_it_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        splitcore.load_split(tmp_path, "absent", "2-4")
    message = str(error.value)
    assert str(tmp_path / "bottom" / "absent_2-4_bottom.pt") in message
    assert str(tmp_path / "bottom" / "absent_2-4_bottom.safetensors") in message
