"""Spec resolution: defaults from the operator's config, and every way a spec can be wrong."""

from __future__ import annotations

import pytest

from splitcore.config import ServerConfig
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.sources import HubSource
from splitlearn_operator.spec import SpecError, StorageClaim, resolve_spec


def test_resolves_paths_names_and_defaults(body, config):
    spec = resolve_spec(body, config)
    assert spec.model_id == "gpt2-a"  # defaults to metadata.name
    assert spec.model_path == "/source/checkpoints/gpt2"
    assert spec.storage_path == "/models"
    assert spec.storage == StorageClaim(name="models")
    assert (spec.model_type, spec.split_config, spec.file_format, spec.device) == (
        "gpt2",
        "2-10",
        "pt",
        "cpu",
    )
    assert (spec.auto_save, spec.verify, spec.allow_pickle, spec.deletion_policy) == (
        True,
        False,
        False,
        "Retain",
    )
    assert spec.resources == config.extras.job_default_resources
    assert spec.component_paths()[:2] == [
        "/models/bottom/gpt2-a_2-10_bottom.pt",
        "/models/bottom/gpt2-a_2-10_bottom_metadata.json",
    ]


def test_autosave_and_storage_path_default_to_the_operator_config(body):
    del body["spec"]["splitStorageConfig"]["storagePath"]
    config = OperatorConfig.from_server_config(
        ServerConfig(model_storage_dir="./split-models", auto_save_split_models=False)
    )
    spec = resolve_spec(body, config)
    assert spec.storage_path == "/split-models"
    assert spec.auto_save is False
    assert spec.storage is None  # plan only: no storage needed


def test_model_id_names_the_files(body, config):
    body["spec"]["modelId"] = "my-gpt2"
    assert (
        resolve_spec(body, config).component_paths()[0] == "/models/bottom/my-gpt2_2-10_bottom.pt"
    )


def test_operator_created_claim(body, config):
    body["spec"]["storage"] = {"size": "20Gi", "storageClassName": "fast"}
    assert resolve_spec(body, config).storage == StorageClaim(
        name="gpt2-a-storage", create=True, size="20Gi", storage_class="fast",
        access_modes=("ReadWriteOnce",),
    )  # fmt: skip


def test_a_hub_id_needs_no_source(body, config):
    del body["spec"]["source"]
    body["spec"]["modelPath"] = "openai-community/gpt2"
    spec = resolve_spec(body, config)
    assert (spec.model_path, spec.source_claim, spec.hub, spec.s3) == (
        "",
        None,
        HubSource("openai-community/gpt2"),
        None,
    )


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        (
            {"splitStorageConfig": {"splitConfig": "10-2"}},
            "InvalidSplitConfig",
            "0 < split_point_1",
        ),
        ({"splitStorageConfig": {"splitConfig": "a-b"}}, "InvalidSplitConfig", "must look like"),
        ({"modelType": "t5"}, "InvalidModelType", "not supported"),
        ({"modelPath": "../../etc/passwd"}, "InvalidPath", "must not contain '..'"),
        ({"modelPath": "a/../../b"}, "InvalidPath", "must not contain '..'"),
        ({"modelPath": "/"}, "InvalidPath", "names the volume's root"),
        ({"modelPath": "", "source": {"claimName": "src"}}, "InvalidPath", "must not be empty"),
        ({"source": {}, "modelPath": "/abs/dir"}, "InvalidPath", "is not a hub id"),
        ({"source": {}, "modelPath": "org/../x"}, "InvalidPath", "is not a hub id"),
        (
            {"splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/etc"}},
            "InvalidPath",
            "reserved or system path",
        ),
        (
            {"splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/source/x"}},
            "InvalidPath",
            "reserved",
        ),
        (
            {"splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/models/../etc"}},
            "InvalidPath",
            "must not contain '..'",
        ),
        ({"modelId": "../x"}, "InvalidModelId", "not a safe file name"),
        ({"storage": {}}, "InvalidStorage", "needs claimName"),
        ({"storage": {"claimName": "a", "size": "1Gi"}}, "InvalidStorage", "not both"),
        ({"storage": {"size": "lots"}}, "InvalidStorage", "not a quantity"),
        ({"format": "onnx"}, "InvalidSpec", "spec.format"),
        ({"device": "tpu"}, "InvalidSpec", "spec.device"),
        ({"deletionPolicy": "Orphan"}, "InvalidSpec", "Retain or Delete"),
    ],
)
def test_invalid_specs_name_their_reason(body, config, change, reason, message):
    body["spec"].update(change)
    with pytest.raises(SpecError, match=message.replace("(", r"\(")) as error:
        resolve_spec(body, config)
    assert error.value.reason == reason


def test_verify_needs_autosave(body, config):
    body["spec"]["verify"] = True
    body["spec"]["splitStorageConfig"]["autoSave"] = False
    with pytest.raises(SpecError, match="needs autoSave"):
        resolve_spec(body, config)


def test_the_spec_hash_follows_the_work_not_the_deletion_policy(body, config):
    base = resolve_spec(body, config).spec_hash
    assert len(base) == 10 and base == resolve_spec(body, config).spec_hash
    body["spec"]["deletionPolicy"] = "Delete"
    assert resolve_spec(body, config).spec_hash == base
    body["spec"]["splitStorageConfig"]["splitConfig"] = "3-9"
    assert resolve_spec(body, config).spec_hash != base


def test_a_nul_byte_in_a_path_is_named_as_such(body, config):
    body["spec"]["modelPath"] = "gpt2\0x"
    with pytest.raises(SpecError, match=r"spec\.modelPath must not contain a NUL byte") as error:
        resolve_spec(body, config)
    assert error.value.reason == "InvalidPath"
