"""Spec resolution, asserted exactly: what `make mutation` found no test pinning.

Every refusal is checked by its reason and its whole message (the message is what the user reads
in the Stalled condition), and every default by its resolved value.
"""

from __future__ import annotations

from typing import Any

import pytest

from splitcore.models import SUPPORTED_MODEL_TYPES
from splitcore.result import Reason
from splitcore.weights import FORMATS
from splitlearn_operator.spec import ACCESS_MODES, SpecError, StorageClaim, resolve_spec

STORAGE_PATH = "spec.splitStorageConfig.storagePath"


def _refusal(body: dict[str, Any], config: Any) -> tuple[str, str]:
    with pytest.raises(SpecError) as caught:
        resolve_spec(body, config)
    return caught.value.reason, str(caught.value)


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        ({"source": "models-src"}, Reason.INVALID_SPEC, "spec.source must be an object"),
        (
            {"modelType": "t5"},
            Reason.INVALID_MODEL_TYPE,
            f"spec.modelType 't5' is not supported; use one of {', '.join(SUPPORTED_MODEL_TYPES)}",
        ),
        (
            {"modelPath": "../x"},
            Reason.INVALID_PATH,
            "spec.modelPath '../x' must not contain '..'",
        ),
        (
            {"source": {}, "modelPath": "/abs/dir"},
            Reason.INVALID_PATH,
            "spec.modelPath '/abs/dir' is not a hub id (organisation/name); to read a checkpoint "
            "from a volume, set spec.source.claimName and a path inside it",
        ),
        (
            # The hub's own rule: no `..` anywhere in a repository id, not only as a segment.
            {"source": {}, "modelPath": "org/gpt2..x"},
            Reason.INVALID_PATH,
            "spec.modelPath 'org/gpt2..x' is not a hub id (organisation/name); to read a "
            "checkpoint from a volume, set spec.source.claimName and a path inside it",
        ),
        (
            {"splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/"}},
            Reason.INVALID_PATH,
            f"{STORAGE_PATH} '/' names the volume's root",
        ),
        (
            {"splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/etc"}},
            Reason.INVALID_PATH,
            f"{STORAGE_PATH} '/etc' is a reserved or system path; use a folder such as /models",
        ),
        (
            {"storage": {"claimName": "a", "size": "1Gi"}},
            Reason.INVALID_STORAGE,
            "spec.storage: set claimName or size, not both",
        ),
        (
            {"storage": {}},
            Reason.INVALID_STORAGE,
            "spec.storage needs claimName (an existing PersistentVolumeClaim) or size "
            "(for a claim the operator creates)",
        ),
        (
            {"storage": {"size": "1Gi", "accessModes": ["ReadOnlyMany"]}},
            Reason.INVALID_STORAGE,
            "spec.storage.accessModes ['ReadOnlyMany'] not supported",
        ),
        (
            {"format": "onnx"},
            Reason.INVALID_SPEC,
            f"spec.format must be one of {', '.join(FORMATS)}",
        ),
        (
            {"deletionPolicy": "Orphan"},
            Reason.INVALID_SPEC,
            "spec.deletionPolicy must be Retain or Delete",
        ),
    ],
)
def test_a_refusal_names_its_reason_and_says_exactly_what_to_change(
    body, config, change, reason, message
):
    body["spec"].update(change)
    assert _refusal(body, config) == (reason, message)


def test_a_body_without_a_spec_is_refused(body, config):
    del body["spec"]
    assert _refusal(body, config) == (Reason.INVALID_SPEC, "the SplitModel has no spec")


@pytest.mark.parametrize("metadata", [None, {}], ids=["no-metadata", "no-name"])
def test_without_a_name_or_model_id_the_files_have_no_name(body, config, metadata):
    """The model id falls back to metadata.name; with neither there is nothing to name files."""
    if metadata is None:
        del body["metadata"]
    else:
        body["metadata"] = metadata
    reason, message = _refusal(body, config)
    assert reason == Reason.INVALID_MODEL_ID
    assert message.startswith("spec.modelId: ")


def test_a_path_with_a_nul_byte_is_refused(body, config):
    """A NUL would cut the path short in the container; `PurePosixPath` lets it through."""
    body["spec"]["modelPath"] = "ckpt\0"
    assert _refusal(body, config)[0] == Reason.INVALID_PATH


def test_verify_without_autosave_is_an_invalid_spec(body, config):
    body["spec"]["verify"] = True
    body["spec"]["splitStorageConfig"]["autoSave"] = False
    assert _refusal(body, config) == (
        Reason.INVALID_SPEC,
        "spec.verify checks written files: it needs autoSave",
    )


def test_a_relative_storage_path_mounts_under_the_root(body, config):
    body["spec"]["splitStorageConfig"]["storagePath"] = "./split/models"
    assert resolve_spec(body, config).storage_path == "/split/models"


def test_model_type_defaults_to_auto_detection(body, config):
    del body["spec"]["modelType"]
    assert resolve_spec(body, config).model_type == "auto"


def test_every_access_mode_together_is_accepted(body, config):
    body["spec"]["storage"] = {"size": "1Gi", "accessModes": list(ACCESS_MODES)}
    assert resolve_spec(body, config).storage == StorageClaim(
        name="gpt2-a-storage", create=True, size="1Gi", access_modes=ACCESS_MODES
    )


def test_an_operator_created_claim_name_is_cut_to_63_characters(body, config):
    """The operator keeps the names it makes within a DNS label's 63 characters."""
    body["metadata"]["name"] = "m" * 60
    body["spec"]["storage"] = {"size": "1Gi"}
    assert resolve_spec(body, config).storage.name == "m" * 60 + "-st"


def test_component_paths_are_the_six_files_the_job_writes(body, config):
    assert resolve_spec(body, config).component_paths() == [
        "/models/bottom/gpt2-a_2-10_bottom.pt",
        "/models/bottom/gpt2-a_2-10_bottom_metadata.json",
        "/models/trunk/gpt2-a_2-10_trunk.pt",
        "/models/trunk/gpt2-a_2-10_trunk_metadata.json",
        "/models/top/gpt2-a_2-10_top.pt",
        "/models/top/gpt2-a_2-10_top_metadata.json",
    ]
