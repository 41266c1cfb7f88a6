"""One split, one spelling: every spelling an entry point accepts names the same files.

The rule (splitcore.points): surrounding whitespace and leading zeros are normalised away;
anything else is refused. `split`, `verify`, `clean`, the library and `ModelConfig` all apply it.
"""

from __future__ import annotations

import json
import random

import pytest

from splitcore import StorageManager
from splitcore.cli import main
from splitcore.config import ConfigError, ModelConfig
from splitcore.points import SplitPointError, SplitPoints
from support.cli import split_cli

COMPONENTS = ("bottom", "trunk", "top")


def spellings(first: int, second: int, count: int = 12, seed: int = 7) -> list[str]:
    """Accepted spellings of one split: leading zeros and surrounding whitespace, generated."""
    pick = random.Random(seed)
    blanks = ["", " ", "\n", "\t", " \n"]
    return [
        f"{pick.choice(blanks)}{'0' * pick.randint(0, 3)}{first}-"
        f"{'0' * pick.randint(0, 3)}{second}{pick.choice(blanks)}"
        for _ in range(count)
    ]


@pytest.mark.parametrize("text", ["2-10", *spellings(2, 10)])
def test_every_accepted_spelling_is_the_same_split(text):
    split = SplitPoints.parse(text)
    assert (split.first, split.second, str(split)) == (2, 10, "2-10")
    path = StorageManager.get_split_model_path("./models", "gpt2", "bottom", text)
    assert str(path) == "models/bottom/gpt2_2-10_bottom.pt"
    config = ModelConfig.from_dict(
        {"model_id": "m", "model_path": "p", "split_storage_config": {"split_config": text}}
    )
    assert config.split_storage_config is not None
    assert config.split_storage_config.split_config == "2-10"


@pytest.mark.parametrize(
    "text", ["2 - 10", "2:10", "2-10-12", "+2-10", "2-1e1", "٢-١٠", "", "2-", "10-2", "0-5", "2-2"]
)
def test_anything_else_is_refused_everywhere(text):
    with pytest.raises(SplitPointError):
        SplitPoints.parse(text)
    with pytest.raises(ConfigError, match="split_config"):
        ModelConfig.from_dict(
            {"model_id": "m", "model_path": "p", "split_storage_config": {"split_config": text}}
        )
    with pytest.raises(SystemExit) as usage:
        main(["clean", "--model-name", "m", "--split", text])
    assert usage.value.code == 2


@pytest.mark.parametrize("value", [True, 2.0, "2", None])
def test_split_points_are_integers_not_lookalikes(value):
    with pytest.raises(SplitPointError, match="integers"):
        SplitPoints(value, 10)


def test_split_verify_and_clean_agree_on_the_files_whatever_the_spelling(
    gpt2_checkpoint, tmp_path, capsys
):
    storage = tmp_path / "models"
    written, verified, cleaned = spellings(2, 10, count=3, seed=11)
    assert split_cli(gpt2_checkpoint, storage, "--quiet", "--model-name", "g", points=written) == 0
    expected = sorted(f"{c}/g_2-10_{c}{s}" for c in COMPONENTS for s in (".pt", "_metadata.json"))
    assert (
        sorted(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file()) == expected
    )
    capsys.readouterr()
    assert (
        main(["verify", "--storage", str(storage), "--model-name", "g", "--split", verified]) == 0
    )
    assert "2-10" in capsys.readouterr().out
    result = tmp_path / "clean.json"
    code = main(["clean", "--storage", str(storage), "--model-name", "g", "--split", cleaned,
                 "--result-file", str(result)])  # fmt: skip
    assert code == 0
    assert len(json.loads(result.read_text())["removed"]) == 6
    assert [p for p in storage.rglob("*") if p.is_file()] == []
