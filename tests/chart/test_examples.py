"""Every example validates against the CRD's schema and CEL rules, and resolves in the
operator exactly as documented."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from splitcore.config import ModelConfig, ServerConfig, model_config_to_split_model
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.spec import resolve_spec
from support.kubernetes import Schema
from support.repo import CRD, REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
SCHEMA = Schema(yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
CONFIG = OperatorConfig.from_server_config(ServerConfig(auto_save_split_models=True))


def documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_the_examples_cover_the_documented_cases():
    assert [p.name for p in EXAMPLES] == [
        "delete-policy.yaml", "gpt2-source-pvc.yaml", "llama.yaml", "plan-only.yaml",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "path", [p for p in EXAMPLES if p.name != "model_config.yaml"], ids=lambda p: p.name
)
def test_example_objects_are_valid(path):
    for obj in documents(path):
        if obj["kind"] == "SplitModel":
            obj["metadata"].setdefault("namespace", "ml")
            defaulted, errors = SCHEMA.apply(obj)
            assert errors == [], errors
            body = {**defaulted, "metadata": {**defaulted["metadata"], "uid": "u"}}
            spec = resolve_spec(body, CONFIG)
            assert spec.split_config == obj["spec"]["splitStorageConfig"]["splitConfig"]
        else:
            kubernetes_validate.validate(obj, "1.33.0", strict=True)


def test_specific_examples_mean_what_they_say():
    by_name = {p.name: next(d for d in documents(p) if d["kind"] == "SplitModel")
               for p in EXAMPLES}  # fmt: skip

    def resolved(name):
        obj = by_name[name]
        defaulted, _ = SCHEMA.apply({**obj, "metadata": {**obj["metadata"], "namespace": "ml"}})
        return resolve_spec(
            {**defaulted, "metadata": {**defaulted["metadata"], "uid": "u"}}, CONFIG
        )

    assert resolved("plan-only.yaml").auto_save is False
    assert resolved("delete-policy.yaml").deletion_policy == "Delete"
    llama = resolved("llama.yaml")
    assert (llama.model_type, llama.file_format, llama.verify) == ("llama", "safetensors", True)
    assert llama.storage.create and llama.storage.size == "20Gi"
    gpt2 = resolved("gpt2-source-pvc.yaml")
    assert gpt2.component_paths()[0] == "/models/bottom/gpt2_2-10_bottom.pt"


def test_model_config_example_converts_to_a_valid_split_model():
    config = ModelConfig.from_yaml(REPO / "examples" / "model-config" / "model_config.yaml")
    manifest = model_config_to_split_model(
        config, storage_claim="models", source_claim="checkpoints"
    )
    manifest["metadata"]["namespace"] = "ml"
    _, errors = SCHEMA.apply(manifest)
    assert errors == []
