"""The streaming split (the Job's path): shards, formats, pickles, atomic files, memory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from splitcore import ModelFactory
from splitcore.atomic import output_lock
from splitcore.checkpoint import Checkpoint
from splitcore.split import split_checkpoint
from support.cli import in_private_mount, split_cli

COMPONENTS = ("bottom", "trunk", "top")


def _component_bytes(storage: Path, name: str = "gpt2", suffix: str = "pt") -> dict[str, bytes]:
    return {c: (storage / c / f"{name}_2-10_{c}.{suffix}").read_bytes() for c in COMPONENTS}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def sharded_gpt2(tmp_path_factory, checkpoint_writer, gpt2_config) -> Path:
    """The same random GPT-2 as `gpt2_checkpoint`, saved in several shards with an index."""
    return checkpoint_writer(
        tmp_path_factory.mktemp("sharded") / "gpt2", gpt2_config, max_shard_size="40KB"
    )


def test_sharded_checkpoint_splits_to_the_same_bytes(
    gpt2_checkpoint, sharded_gpt2, tmp_path, capsys
):
    shards = sorted(p.name for p in sharded_gpt2.glob("*.safetensors"))
    assert len(shards) > 3 and (sharded_gpt2 / "model.safetensors.index.json").is_file()
    split_checkpoint(str(gpt2_checkpoint), "gpt2", 2, 10, tmp_path / "single")
    split_checkpoint(str(sharded_gpt2), "gpt2", 2, 10, tmp_path / "sharded")
    assert _component_bytes(tmp_path / "single") == _component_bytes(tmp_path / "sharded")


def test_each_component_reads_only_its_own_tensors(gpt2_checkpoint, tmp_path, monkeypatch, capsys):
    reads: list[set[str]] = []
    original = Checkpoint.read

    def recording_read(self, names):
        names = set(names)
        reads.append(names)
        return original(self, names)

    monkeypatch.setattr(Checkpoint, "read", recording_read)
    split_checkpoint(str(gpt2_checkpoint), "gpt2", 2, 10, tmp_path)
    everything = set(Checkpoint.open(gpt2_checkpoint).names)
    assert len(reads) == 3
    assert all(names < everything for names in reads)
    bottom, trunk, top = reads
    assert bottom == {
        n
        for n in everything
        if n.startswith(
            ("transformer.wte.", "transformer.wpe.", "transformer.h.0.", "transformer.h.1.")
        )
    }
    assert trunk == {
        n for n in everything if any(n.startswith(f"transformer.h.{i}.") for i in range(2, 10))
    }
    # GPT-2's head is tied: the top reads the embedding again for its own copy.
    assert top == {
        n
        for n in everything
        if n.startswith(("transformer.h.10.", "transformer.h.11.", "transformer.ln_f."))
    } | {"transformer.wte.weight"}


def test_safetensors_format_with_metadata_in_the_header(gpt2_checkpoint, tmp_path, capsys):
    assert split_cli(gpt2_checkpoint, tmp_path / "cli", "--format", "safetensors") == 0
    components = ModelFactory.create_split_models(
        "gpt2",
        str(gpt2_checkpoint),
        2,
        10,
        storage_path=str(tmp_path / "lib"),
        auto_save=True,
        file_format="safetensors",
    )
    assert _files(tmp_path / "cli") == [
        f"{c}/gpt2_2-10_{c}{suffix}"
        for c in ("bottom", "top", "trunk")
        for suffix in (".safetensors", "_metadata.json")
    ]
    assert _component_bytes(tmp_path / "cli", suffix="safetensors") == _component_bytes(
        tmp_path / "lib", suffix="safetensors"
    )
    for module, component in zip(components, COMPONENTS, strict=True):
        path = tmp_path / "cli" / component / f"gpt2_2-10_{component}.safetensors"
        metadata = json.loads(path.with_name(path.stem + "_metadata.json").read_text())
        with safe_open(str(path), "pt") as handle:
            header = handle.metadata()
        assert header["model_class"] == metadata["model_class"]
        assert header["component"] == component
        assert json.loads(header["num_parameters"]) == metadata["num_parameters"]
        assert json.loads(header["config"]) == metadata["config"]
        assert "saved_at" not in header and "sha256" not in header
        assert metadata["format"] == "safetensors"
        result = module.load_state_dict(load_file(path))
        assert (result.missing_keys, result.unexpected_keys) == ([], [])


def test_pickled_checkpoint_needs_an_explicit_opt_in(gpt2_checkpoint, tmp_path, capsys):
    pickled = tmp_path / "gpt2"
    pickled.mkdir()
    shutil.copy(gpt2_checkpoint / "config.json", pickled)
    torch.save(load_file(gpt2_checkpoint / "model.safetensors"), pickled / "pytorch_model.bin")
    result_file = tmp_path / "r.json"
    result = ("--result-file", str(result_file))
    assert split_cli(pickled, tmp_path / "refused", *result) == 2
    error = json.loads(result_file.read_text())["error"]
    assert error["reason"] == "InvalidCheckpoint"
    assert "--allow-pickle" in error["message"]
    assert not (tmp_path / "refused").exists()
    assert split_cli(pickled, tmp_path / "pickled", *result, "--allow-pickle") == 0
    split_checkpoint(str(gpt2_checkpoint), "gpt2", 2, 10, tmp_path / "safe")
    assert _component_bytes(tmp_path / "pickled") == _component_bytes(tmp_path / "safe")


def test_allow_pickle_still_never_runs_pickled_code(gpt2_checkpoint, tmp_path, capsys):
    """`--allow-pickle` loads with weights_only=True: a code-running pickle is refused."""
    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(gpt2_checkpoint / "config.json", evil)
    marker = tmp_path / "pwned"
    torch.save({"x": _ExploitTouch(marker)}, evil / "pytorch_model.bin")
    code = split_cli(evil, tmp_path / "out", "--allow-pickle")
    assert code == 2
    err = capsys.readouterr().err
    assert "could not be loaded safely" in err
    assert "weights_only" not in err  # never torch's advice to load it unsafely
    assert not marker.exists()


class _ExploitTouch:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_disk_full_leaves_no_file_under_a_final_name(gpt2_checkpoint, tmp_path):
    """A small tmpfs as the storage volume: ENOSPC -> exit 2, StorageFull, nothing left."""
    storage = tmp_path / "volume"
    storage.mkdir()
    done = in_private_mount(
        f'mount -t tmpfs -o size=160k tmpfs "{storage}"',
        f'"$SPLITCORE" split --model "{gpt2_checkpoint}" --split 2-10 --storage "{storage}" '
        f'--result-file /dev/stderr; echo "exit=$?"; find "{storage}" -type f | sort',
    )
    lines = done.stdout.splitlines()
    assert "exit=2" in lines, done.stderr
    left = lines[lines.index("exit=2") + 1 :]
    assert '"reason":"StorageFull"' in done.stderr
    # Whatever finished before the disk filled is complete; nothing else is there, no temp file.
    assert all(not Path(p).name.startswith(".") for p in left)
    assert f"{storage}/trunk/gpt2_2-10_trunk.pt" not in left


def test_a_killed_writer_leaves_only_its_temp_and_lock_files_which_the_next_run_removes(
    gpt2_checkpoint, tmp_path
):
    storage = tmp_path / "models"
    crash = (
        "import os, signal\n"
        "import splitcore.weights\n"
        "from splitcore.split import split_checkpoint\n"
        "def write_then_die(tensors, sink, **options):\n"
        "    sink.write(b'partial bytes')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "splitcore.weights.write_torch_zip = write_then_die\n"
        f"split_checkpoint({str(gpt2_checkpoint)!r}, 'gpt2', 2, 10, {str(storage)!r})\n"
    )
    done = subprocess.run([sys.executable, "-P", "-c", crash], capture_output=True, check=False)
    assert done.returncode == -9
    left = _files(storage)
    # The dead writer's lock file (free: the next run takes it over) and its temp file.
    assert len(left) == 2 and left[0] == ".gpt2_2-10.lock"
    assert left[1].startswith("bottom/.gpt2_2-10_bottom.pt.") and left[1].endswith(".tmp")
    split_checkpoint(str(gpt2_checkpoint), "gpt2", 2, 10, storage)
    assert _files(storage) == sorted(
        f"{c}/gpt2_2-10_{c}{s}" for c in COMPONENTS for s in (".pt", "_metadata.json")
    )


def _files_match_their_metadata(storage: Path) -> list[str]:
    """Components that were committed, each checked against its metadata's sha256."""
    committed = []
    for metadata_path in sorted(storage.rglob("*_metadata.json")):
        weights = metadata_path.with_name(metadata_path.name.replace("_metadata.json", ".pt"))
        recorded = json.loads(metadata_path.read_text())["sha256"]
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == recorded
        committed.append(weights.name)
    return committed


@pytest.mark.parametrize(
    ("change", "at_read"),
    [
        (lambda path: os.truncate(path, path.stat().st_size // 2), 40),  # was SIGBUS, exit 135
        (lambda path: os.truncate(path, path.stat().st_size - 1000), 140),
        (lambda path: path.open("r+b").write(b"\x7f" * 4096), 100),  # new bytes, same size
    ],
)
def test_a_source_changed_during_the_split_fails_with_source_changed(
    gpt2_checkpoint, tmp_path, monkeypatch, capsys, change, at_read
):
    """The bytes written are the bytes hashed; a change is detected: exit 1 (retried), no temp
    file, and whatever was committed before matches its metadata."""
    import splitcore.formats

    checkpoint = Path(shutil.copytree(gpt2_checkpoint, tmp_path / "gpt2"))
    real_read, reads = splitcore.formats.read_span, []

    def read_then_change(span, offset, length):
        reads.append(offset)
        if len(reads) == at_read:
            change(span.path)
        return real_read(span, offset, length)

    monkeypatch.setattr(splitcore.formats, "read_span", read_then_change)
    result_file = tmp_path / "r.json"
    code = split_cli(checkpoint, tmp_path / "models", "--quiet", "--result-file", str(result_file))
    assert code == 1
    error = json.loads(result_file.read_text())["error"]
    assert error["reason"] == "SourceChanged"
    assert str(checkpoint / "model.safetensors") in error["message"]
    assert not [p for p in (tmp_path / "models").rglob("*") if p.name.startswith(".")]
    assert len(_files_match_their_metadata(tmp_path / "models")) < 3


def test_a_second_split_of_the_same_files_fails_with_output_locked(
    gpt2_checkpoint, tmp_path, capsys
):
    storage = tmp_path / "models"
    storage.mkdir()
    result_file = tmp_path / "r.json"
    with output_lock(storage, "gpt2_2-10"):  # the first writer, still at work
        code = split_cli(gpt2_checkpoint, storage, "--quiet", "--result-file", str(result_file))
    assert code == 1
    assert json.loads(result_file.read_text())["error"]["reason"] == "OutputLocked"
    assert [p for p in storage.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    ("state_dict", "message"),
    [
        ({"transformer.wte.weight": 3}, "holds 'transformer.wte.weight': int, not a named tensor"),
        ({"x": torch.zeros(2, dtype=torch.complex64)}, "'x' has unsupported dtype complex64"),
    ],
)
def test_an_opted_in_pickle_must_hold_plain_tensors(
    gpt2_checkpoint, tmp_path, capsys, state_dict, message
):
    pickled = tmp_path / "gpt2"
    pickled.mkdir()
    shutil.copy(gpt2_checkpoint / "config.json", pickled)
    torch.save(state_dict, pickled / "pytorch_model.bin")
    assert split_cli(pickled, tmp_path / "models", "--allow-pickle") == 2
    err = capsys.readouterr().err
    assert err.startswith("error (InvalidCheckpoint): ") and message in err
    assert "Traceback" not in err


def test_an_opted_in_pickle_replaced_during_the_split_fails_with_source_changed(
    gpt2_checkpoint, tmp_path, monkeypatch, capsys
):
    """torch reopens a pickle for every component: a replaced file is detected, not mixed in."""
    pickled = tmp_path / "gpt2"
    pickled.mkdir()
    shutil.copy(gpt2_checkpoint / "config.json", pickled)
    weights = pickled / "pytorch_model.bin"
    torch.save(load_file(gpt2_checkpoint / "model.safetensors"), weights)
    real_load, loads = Checkpoint._load_pickle, []

    def load_then_replace(path):
        loads.append(path)
        if len(loads) == 4:  # opened, checked, bottom read: replaced before trunk is read
            replacement = path.with_name("new.bin")
            shutil.copy(path, replacement)
            replacement.replace(path)
        return real_load(path)

    monkeypatch.setattr(Checkpoint, "_load_pickle", staticmethod(load_then_replace))
    code = split_cli(pickled, tmp_path / "models", "--allow-pickle", "--quiet")
    assert code == 1
    err = capsys.readouterr().err
    assert err == f"error (SourceChanged): {weights} changed while it was being split\n"
    assert _files_match_their_metadata(tmp_path / "models") == ["gpt2_2-10_bottom.pt"]
