"""The Job-to-operator contract (splitcore.result) against everything that repeats it: the CRD's
status schema and enums, the result document a real split writes, the README's reason table,
and the tests that produce each reason, Event and exit code."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import fields

import pytest
import yaml

from splitcore.models import SUPPORTED_MODEL_TYPES
from splitcore.points import CANONICAL_PATTERN, SplitPoints
from splitcore.result import (
    COMPONENT_KEYS,
    REASON_DOCS,
    ComponentResult,
    ExitCode,
    Reason,
    SplitResult,
    camel,
)
from splitcore.weights import FORMATS
from splitlearn_operator.status import EventReason, Progress, SplitModelStatus
from support.cli import split_cli
from support.repo import CRD, REPO


@pytest.fixture(scope="module")
def schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]


def test_status_components_in_the_crd_are_the_result_fields(schema):
    item = schema["status"]["properties"]["components"]["items"]["properties"]
    assert sorted(item) == sorted(COMPONENT_KEYS)


def test_the_crd_enums_are_the_codes_lists(schema):
    spec = schema["spec"]["properties"]
    assert sorted(spec["modelType"]["enum"]) == sorted(SUPPORTED_MODEL_TYPES)
    assert sorted(spec["format"]["enum"]) == sorted(FORMATS)
    split = spec["splitStorageConfig"]["properties"]["splitConfig"]
    assert split["pattern"] == CANONICAL_PATTERN


@pytest.mark.parametrize("text", ["2-10", "02-10", "2-010", " 2-10", "2-10\n", "0-5", "10-2"])
def test_the_crd_admits_a_spelling_only_if_it_is_canonical(text):
    admitted = re.fullmatch(CANONICAL_PATTERN.strip("^$"), text) is not None
    canonical = text == text.strip() and text.split("-") == [
        str(int(p)) for p in text.strip().split("-")
    ]
    assert admitted == canonical
    if admitted and text not in ("0-5", "10-2"):  # the CEL rule refuses those two
        assert str(SplitPoints.parse(text)) == text


def test_a_real_result_document_round_trips_through_status(gpt2_checkpoint, tmp_path):
    """What a split writes is what the operator reads and what status carries, key for key."""
    result_file = tmp_path / "result.json"
    code = split_cli(gpt2_checkpoint, tmp_path / "m", "--quiet", "--result-file", str(result_file))
    assert code == ExitCode.OK
    document = json.loads(result_file.read_text())
    assert sorted(document) == sorted(
        camel(f.name) for f in fields(SplitResult) if f.name not in ("verification", "source")
    )
    for component in document["components"]:
        assert sorted(component) == sorted(COMPONENT_KEYS)
    result = SplitResult.from_json(document)
    assert result.to_json() == document
    status = SplitModelStatus(components=result.components).to_dict()
    assert status["components"] == document["components"]  # saved: no null to leave out
    metadata = json.loads((tmp_path / "m/trunk/gpt2_2-10_trunk_metadata.json").read_text())
    trunk = ComponentResult.from_metadata(metadata, "p", "q")
    assert trunk == ComponentResult.from_json(document["components"][1]) or trunk.path == "p"
    assert {f.name for f in fields(ComponentResult)} - set(ComponentResult.PATH_FIELDS) <= {
        "name",
        *metadata,
    }


def _readme_table() -> str:
    rows = [
        f"| `{reason}` | {doc.origin} | "
        f"{'' if doc.exit_code is None else int(doc.exit_code)} | {doc.action} |"
        for reason, doc in REASON_DOCS.items()
    ]
    return "\n".join(["| reason | from | exit code | what to do |", "|---|---|---|---|", *rows])


def test_every_reason_is_documented_once_and_the_readme_table_is_generated_from_them():
    assert set(REASON_DOCS) == set(Reason)
    assert _readme_table() in (REPO / "README.md").read_text()


def _string_literals_in_tests() -> set[str]:
    literals: set[str] = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        if path.name == "test_contract.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                literals.add(f"{node.value.id}.{node.attr}")
    return literals


@pytest.mark.parametrize(
    "member", [*Reason, *EventReason, *Progress], ids=lambda m: f"{type(m).__name__}.{m.name}"
)
def test_every_reason_and_event_is_asserted_by_some_test(member):
    """Each member is named in at least one test outside this file (a case that produces it)."""
    literals = _string_literals_in_tests()
    assert (
        str(member) in literals
        or f'"reason":"{member}"' in "".join(literals)
        or f"{type(member).__name__}.{member.name}" in literals
    ), f"no test names {member!r}"


@pytest.mark.parametrize("code", list(ExitCode))
def test_every_exit_code_has_a_reason_or_is_success(code):
    assert code is ExitCode.OK or any(doc.exit_code is code for doc in REASON_DOCS.values())
