"""The guide's storage contract: paths, folders, printed block, files and metadata."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest
import torch

from splitcore import ModelFactory, StorageManager
from splitcore.atomic import (
    HashingSink,
    OutputLockedError,
    StagedFile,
    hidden_name,
    output_lock,
    temp_prefix,
)
from splitcore.storage import (
    model_name_from_path,
    remove_components,
    remove_stale_temp_files,
    validate_model_name,
)

GUIDE_METADATA_KEYS = [
    "model_class",
    "component",
    "start_layer",
    "end_layer",
    "num_layers",
    "num_parameters",
    "memory_mb",
    "config",
    "saved_at",
]
ADDED_METADATA_KEYS = [
    "memory_bytes",
    "sha256",
    "dtype",
    "model_type",
    "split_config",
    "source",
    "format",
    "format_version",
]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_get_split_model_path_matches_the_guide():
    path = StorageManager.get_split_model_path(
        base_path="./models", model_name="gpt2", component="bottom", split_config="2-10"
    )
    assert path == Path("models/bottom/gpt2_2-10_bottom.pt")
    assert str(path) == "models/bottom/gpt2_2-10_bottom.pt"
    assert StorageManager.get_split_model_path("/data", "my-gpt2", "top", "3-7") == Path(
        "/data/top/my-gpt2_3-7_top.pt"
    )


def test_get_model_metadata_path_matches_the_guide():
    model_path = Path("./models/bottom/gpt2_2-10_bottom.pt")
    metadata_path = StorageManager.get_model_metadata_path(model_path)
    assert str(metadata_path) == "models/bottom/gpt2_2-10_bottom_metadata.json"


def test_create_storage_directories(tmp_path):
    base = tmp_path / "models"
    folders = StorageManager.create_storage_directories(str(base))
    assert folders == {"bottom": base / "bottom", "trunk": base / "trunk", "top": base / "top"}
    assert all(folder.is_dir() for folder in folders.values())
    assert StorageManager.create_storage_directories(str(base)) == folders  # idempotent


@pytest.mark.parametrize(
    ("component", "split_config", "model_name"),
    [
        ("middle", "2-10", "gpt2"),
        ("top", "2_10", "gpt2"),
        ("top", "10-2", "gpt2"),
        ("top", "2-10", "../x"),
        ("top", "2-10", "a/b"),
        ("top", "2-10", ".hidden"),
    ],
)
def test_get_split_model_path_refuses_bad_parts(component, split_config, model_name):
    with pytest.raises(ValueError):
        StorageManager.get_split_model_path("./models", model_name, component, split_config)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("gpt2", "gpt2"),
        ("/data/ckpt/my-gpt2", "my-gpt2"),
        ("/data/ckpt/my-gpt2/", "my-gpt2"),
        ("openai-community/gpt2", "gpt2"),
        ("./checkpoints/Llama-3.2-1B", "Llama-3.2-1B"),
    ],
)
def test_model_name_is_the_last_path_component(path, name):
    assert model_name_from_path(path) == name


@pytest.mark.parametrize("name", ["", "..", "a/b", "../etc", "x..y", ".git", "a\\b", "a b"])
def test_unsafe_model_names_are_refused(name):
    with pytest.raises(ValueError, match="not a safe file name"):
        validate_model_name(name)


def test_auto_save_prints_the_guides_block_and_writes_the_layout(
    gpt2_checkpoint, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    ModelFactory.create_split_models(
        model_type="gpt2",
        model_name_or_path=str(gpt2_checkpoint),
        split_point_1=2,
        split_point_2=10,
        storage_path="./models",
        auto_save=True,
    )
    assert capsys.readouterr().out.splitlines() == [
        "=" * 60,
        "Saving split models to storage...",
        "=" * 60,
        "Storage directory: ./models",
        "  Bottom model saved: models/bottom/gpt2_2-10_bottom.pt",
        "  Trunk model saved: models/trunk/gpt2_2-10_trunk.pt",
        "  Top model saved: models/top/gpt2_2-10_top.pt",
        "=" * 60,
    ]
    assert _files(tmp_path / "models") == [
        "bottom/gpt2_2-10_bottom.pt",
        "bottom/gpt2_2-10_bottom_metadata.json",
        "top/gpt2_2-10_top.pt",
        "top/gpt2_2-10_top_metadata.json",
        "trunk/gpt2_2-10_trunk.pt",
        "trunk/gpt2_2-10_trunk_metadata.json",
    ]


def test_auto_save_false_writes_nothing_anywhere(gpt2_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = _files(gpt2_checkpoint)
    ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), 2, 10, storage_path=str(tmp_path / "models")
    )
    assert list(tmp_path.iterdir()) == []
    assert _files(gpt2_checkpoint) == before
    assert capsys.readouterr().out == ""


def test_auto_save_without_storage_path_is_an_error(gpt2_checkpoint):
    with pytest.raises(ValueError, match="storage_path"):
        ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10, auto_save=True)


@pytest.mark.parametrize("as_string", [True, False])
def test_save_split_model_creates_parents_and_metadata(gpt2_checkpoint, tmp_path, as_string):
    bottom, _, _ = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10)
    target = tmp_path / "custom_path" / "deeper" / "bottom_model.pt"
    bottom.save_split_model(str(target) if as_string else target)
    assert _files(tmp_path) == [
        "custom_path/deeper/bottom_model.pt",
        "custom_path/deeper/bottom_model_metadata.json",
    ]


def test_save_split_model_without_metadata(gpt2_checkpoint, tmp_path):
    _, trunk, _ = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10)
    trunk.save_split_model(tmp_path / "trunk_model.pt", save_metadata=False)
    assert _files(tmp_path) == ["trunk_model.pt"]


def test_metadata_has_the_guides_keys_and_true_values(gpt2_checkpoint, tmp_path, capsys):
    components = ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), 2, 10, storage_path=str(tmp_path), auto_save=True
    )
    config = json.loads((gpt2_checkpoint / "config.json").read_text())
    for module, name, (start, end) in zip(
        components, ("bottom", "trunk", "top"), ((0, 2), (2, 10), (10, 12)), strict=True
    ):
        weights = tmp_path / name / f"gpt2_2-10_{name}.pt"
        metadata = json.loads((tmp_path / name / f"gpt2_2-10_{name}_metadata.json").read_text())
        assert list(metadata) == GUIDE_METADATA_KEYS + ADDED_METADATA_KEYS
        tensors = module.state_dict()
        num_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
        assert metadata["model_class"] == f"GPT2{name.capitalize()}Model"
        assert metadata["component"] == name
        assert (metadata["start_layer"], metadata["end_layer"]) == (start, end)
        assert metadata["num_layers"] == end - start
        assert metadata["num_parameters"] == sum(t.numel() for t in tensors.values())
        assert metadata["memory_bytes"] == num_bytes
        assert metadata["memory_mb"] == round(num_bytes / 2**20, 2)
        assert metadata["config"] == config
        assert datetime.fromisoformat(metadata["saved_at"]).tzinfo is not None
        assert metadata["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert metadata["dtype"] == "float32"
        assert metadata["model_type"] == "gpt2"
        assert metadata["split_config"] == "2-10"
        assert metadata["source"] == str(gpt2_checkpoint)
        assert metadata["format"] == "pt"
        assert metadata["format_version"] == 1
    # The top carries the tied head: the vocabulary matrix appears in bottom and top.
    bottom_meta = json.loads((tmp_path / "bottom/gpt2_2-10_bottom_metadata.json").read_text())
    assert bottom_meta["num_parameters"] == 96 * 32 + 64 * 32 + 2 * (
        sum(p.numel() for p in components[1].split_layers["2"].parameters())
    )


def test_saved_components_load_standalone_as_the_guide_shows(gpt2_checkpoint, tmp_path, capsys):
    originals = ModelFactory.create_split_models(
        "gpt2", str(gpt2_checkpoint), 2, 10, storage_path=str(tmp_path), auto_save=True
    )
    # Each component loads on its own (the top's tied head included), no missing/unexpected keys.
    fresh = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10)
    for module, original, name in zip(fresh, originals, ("bottom", "trunk", "top"), strict=True):
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.zero_()
        state = torch.load(tmp_path / name / f"gpt2_2-10_{name}.pt", weights_only=True)
        result = module.load_state_dict(state)
        assert (result.missing_keys, result.unexpected_keys) == ([], [])
        for key, tensor in module.state_dict().items():
            assert torch.equal(tensor, original.state_dict()[key]), key
    # After loading, the top's head is its own copy, not shared with the bottom's embedding.
    bottom, _, top = fresh
    assert top.lm_head.weight.data_ptr() != bottom.transformer.wte.weight.data_ptr()
    assert torch.equal(top.lm_head.weight, bottom.transformer.wte.weight)


def test_files_never_appear_half_written(gpt2_checkpoint, tmp_path, monkeypatch, capsys):
    """A failure while writing leaves neither the final file nor a temp file behind."""
    bottom, _, _ = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10)
    real_write = HashingSink.write

    def write_then_fill_the_disk(self, data):
        if self.position > 1000:
            raise OSError(28, "No space left on device")
        real_write(self, data)

    monkeypatch.setattr(HashingSink, "write", write_then_fill_the_disk)
    with pytest.raises(OSError, match="No space left"):
        bottom.save_split_model(tmp_path / "bottom.pt")
    assert list(tmp_path.iterdir()) == []


def test_written_files_are_world_readable(gpt2_checkpoint, tmp_path, capsys):
    bottom, _, _ = ModelFactory.create_split_models("gpt2", str(gpt2_checkpoint), 2, 10)
    bottom.save_split_model(tmp_path / "bottom.pt")
    assert (tmp_path / "bottom.pt").stat().st_mode & 0o777 == 0o644


def test_temp_and_lock_names_stay_within_the_file_name_limit():
    final = "m" * 229 + "_2-10_bottom_metadata.json"
    assert len(final) == 255
    prefix = temp_prefix(final)
    assert len(prefix) + 8 + len(".tmp") <= 255  # mkstemp's random part and suffix
    assert prefix.startswith(".mmm") and prefix.endswith(".")
    assert temp_prefix(final) == prefix != temp_prefix("n" + final[1:])
    assert temp_prefix("gpt2_2-10_bottom.pt") == ".gpt2_2-10_bottom.pt."
    assert hidden_name("gpt2_2-10", ".lock") == ".gpt2_2-10.lock"
    assert len(hidden_name("m" * 300, ".lock")) == 255


def test_stale_temp_cleanup_removes_only_temps_whose_writer_is_gone(tmp_path):
    final = StorageManager.get_split_model_path(tmp_path, "gpt2", "trunk", "2-10")
    live = StagedFile(final)
    dead = final.with_name(f"{temp_prefix(final.name)}abandoned.tmp")
    dead.write_bytes(b"partial")
    try:
        remove_stale_temp_files(tmp_path, "gpt2", "2-10")
        assert live.temp.exists() and not dead.exists()
    finally:
        live.abort()
    assert list(final.parent.iterdir()) == []


def test_a_second_writer_of_the_same_files_is_refused(tmp_path):
    with output_lock(tmp_path, "gpt2_2-10"):
        with (
            pytest.raises(OutputLockedError, match="another process is writing gpt2_2-10"),
            output_lock(tmp_path, "gpt2_2-10"),
        ):
            pass
        with output_lock(tmp_path, "gpt2_2-11"):  # other files: no conflict
            pass
    assert list(tmp_path.iterdir()) == []  # the lock file goes with its holder
    with output_lock(tmp_path, "gpt2_2-10"):  # free again
        pass


def test_clean_refuses_while_a_split_writes_the_same_files(tmp_path):
    """`clean` during a split of the same files fails (retried) instead of racing it."""
    (tmp_path / "bottom").mkdir()
    kept = tmp_path / "bottom" / "gpt2_2-10_bottom.pt"
    kept.write_bytes(b"weights")
    with output_lock(tmp_path, "gpt2_2-10"), pytest.raises(OutputLockedError):
        remove_components(tmp_path, "gpt2", "02-10")
    assert kept.exists()
    assert remove_components(tmp_path, "gpt2", "02-10") == [kept]
