"""ModelConfig <-> SplitModel: the guide's model configuration as a Kubernetes resource."""

from __future__ import annotations

from pathlib import Path

import yaml

from splitcore.cli import main
from splitcore.config import (
    ModelConfig,
    model_config_to_split_model,
    split_model_to_model_config,
)
from support.kubernetes import Schema

CRD = Path(__file__).resolve().parents[2] / "crds" / "splitmodels.splitlearn.io.yaml"
GUIDE = ModelConfig(
    model_id="my_gpt2",
    model_path="./models/gpt2.pt",
    model_type="gpt2",
    split_storage_config={"storage_path": "./models", "auto_save": True, "split_config": "2-10"},
)


def test_model_config_becomes_a_valid_split_model():
    manifest = model_config_to_split_model(
        GUIDE, namespace="ml", storage_claim="models", source_claim="checkpoints"
    )
    assert manifest == {
        "apiVersion": "splitlearn.io/v1alpha1",
        "kind": "SplitModel",
        "metadata": {"name": "my-gpt2", "namespace": "ml"},
        "spec": {
            "modelId": "my_gpt2",
            "modelPath": "./models/gpt2.pt",
            "modelType": "gpt2",
            "splitStorageConfig": {
                "storagePath": "./models", "autoSave": True, "splitConfig": "2-10"
            },
            "storage": {"claimName": "models"},
            "source": {"claimName": "checkpoints"},
        },
    }  # fmt: skip
    crd = yaml.safe_load(CRD.read_text())
    _, errors = Schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]).apply(manifest)
    assert errors == []


def test_round_trip():
    assert split_model_to_model_config(model_config_to_split_model(GUIDE)) == GUIDE


def test_cli_converts_both_ways(tmp_path, capsys):
    GUIDE.to_yaml(tmp_path / "model_config.yaml")
    assert main(["manifest", str(tmp_path / "model_config.yaml"), "--storage-claim", "models"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert manifest["kind"] == "SplitModel" and manifest["spec"]["storage"] == {
        "claimName": "models"
    }
    (tmp_path / "sm.yaml").write_text(yaml.safe_dump(manifest))
    assert main(["manifest", str(tmp_path / "sm.yaml")]) == 0
    assert ModelConfig.from_dict(yaml.safe_load(capsys.readouterr().out)) == GUIDE
