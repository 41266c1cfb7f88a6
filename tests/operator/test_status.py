"""Status transitions and the CRD declaring all of it (kstatus: test_kstatus_documented)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from splitlearn_operator import status as states
from splitlearn_operator.status import SplitModelStatus
from support.kubernetes import Schema
from support.status_fixtures import COMPONENTS, KSTATUS, T0, T1, T2, fixtures

CRD = Path(__file__).resolve().parents[2] / "crds" / "splitmodels.splitlearn.io.yaml"


def _conditions(status: SplitModelStatus) -> dict[str, tuple[str, str, int]]:
    return {c.type: (c.status, c.reason, c.observed_generation) for c in status.conditions}


def test_transitions_set_the_three_conditions():
    running = states.reconciling(SplitModelStatus(), 4, "job", "hash", "claim", T0)
    assert _conditions(running) == {
        "Ready": ("False", "JobRunning", 4),
        "Reconciling": ("True", "JobRunning", 4),
        "Stalled": ("False", "JobRunning", 4),
    }
    assert (running.observed_generation, running.job_name, running.spec_hash) == (4, "job", "hash")
    ready = states.ready(running, 4, COMPONENTS, True, None, T1)
    assert _conditions(ready)["Ready"] == ("True", "Succeeded", 4)
    assert ready.components == COMPONENTS
    planned = states.ready(running, 4, COMPONENTS, False, None, T1)
    assert _conditions(planned)["Ready"] == ("True", "Planned", 4)
    failed = states.stalled(running, 4, "DeadlineExceeded", "too slow", T1)
    assert _conditions(failed) == {
        "Ready": ("False", "DeadlineExceeded", 4),
        "Reconciling": ("False", "DeadlineExceeded", 4),
        "Stalled": ("True", "DeadlineExceeded", 4),
    }
    assert failed.last_failure == states.Failure("DeadlineExceeded", "too slow", T1)


def test_last_transition_time_moves_only_with_the_status():
    first = states.reconciling(SplitModelStatus(), 1, "a", "h", None, T0)
    again = states.reconciling(first, 2, "b", "h2", None, T1)
    assert again.condition("Reconciling").last_transition_time == T0
    done = states.ready(again, 2, COMPONENTS, True, None, T2)
    assert done.condition("Ready").last_transition_time == T2
    assert done.condition("Stalled").last_transition_time == T0  # False all along


def test_status_round_trips_through_json():
    status = SplitModelStatus.from_dict(fixtures()["ready"]["status"])
    assert status.to_dict() == fixtures()["ready"]["status"]
    assert SplitModelStatus.from_dict(None) == SplitModelStatus()


def _floats(value: Any) -> list[Any]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for item in value.values() for f in _floats(item)]
    if isinstance(value, list):
        return [f for item in value for f in _floats(item)]
    return []


@pytest.mark.parametrize("name", list(KSTATUS))
def test_the_crd_declares_everything_the_operator_writes(name):
    """A real apiserver silently prunes undeclared fields and rejects floats in integers."""
    crd = yaml.safe_load(CRD.read_text())
    schema = Schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    body = fixtures()[name]
    expected = copy.deepcopy(body)
    if "status" in expected:
        expected["status"] = {k: v for k, v in expected["status"].items() if v is not None}
        body["status"] = expected["status"]
    applied, errors = schema.apply(body)
    assert errors == []
    assert applied.get("status") == expected.get("status")
    assert _floats(body) == []


def test_every_schema_field_is_described():
    crd = yaml.safe_load(CRD.read_text())
    missing = []

    def walk(schema: dict[str, Any], path: str) -> None:
        if path not in ("", ".metadata") and "description" not in schema:
            missing.append(path)
        for key, child in schema.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
    assert missing == []


def test_the_crd_names_and_columns():
    crd = yaml.safe_load(CRD.read_text())
    assert crd["metadata"]["name"] == "splitmodels.splitlearn.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["shortNames"], names["categories"]) == (
        "SplitModel",
        ["sm"],
        ["splitlearn"],
    )
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Model",
        "Split",
        "Ready",
        "Reason",
        "Serving",
        "Endpoint",
        "Age",
    ]
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Serving"]["jsonPath"] == '.status.conditions[?(@.type=="Serving")].status'
    assert columns["Endpoint"] == {
        "name": "Endpoint", "type": "string", "priority": 1,
        "description": "The trunk server's address, host:port.",
        "jsonPath": ".status.serving.endpoint",
    }  # fmt: skip
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    # Defaults the operator's config owns are not schema defaults (they would override it).
    assert "default" not in spec["splitStorageConfig"]["properties"]["autoSave"]
    assert "default" not in spec["splitStorageConfig"]["properties"]["storagePath"]
