"""The status documents each transition writes, asserted whole: what `make mutation` found
no test pinning (the fixtures elsewhere are made by these same functions, so they cannot)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from splitcore.result import Reason, SourceFile, SourceRevision, Verification
from splitlearn_operator import status as states
from splitlearn_operator.status import Condition, Failure, SplitModelStatus, now_rfc3339
from support.status_fixtures import COMPONENTS, T0, T1

RUNNING_MESSAGE = "Job job-4 is splitting generation 4"


def _condition(kind: str, status: str, reason: str, message: str, since: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": 4,
    }


def _running() -> SplitModelStatus:
    return states.reconciling(SplitModelStatus(), 4, "job-4", "hash-4", "claim-4", T0)


def test_reconciling_writes_the_job_the_spec_hash_and_the_claim():
    assert _running().to_dict() == {
        "observedGeneration": 4,
        "conditions": [
            _condition("Ready", "False", "JobRunning", RUNNING_MESSAGE, T0),
            _condition("Reconciling", "True", "JobRunning", RUNNING_MESSAGE, T0),
            _condition("Stalled", "False", "JobRunning", "", T0),
        ],
        "jobName": "job-4",
        "specHash": "hash-4",
        "storageClaim": "claim-4",
        "components": [],
        "verification": None,
        "source": None,
        "componentsSpecHash": None,
        "serving": None,
        "lastFailure": None,
    }


def test_queued_writes_the_spec_hash_and_why_it_waits():
    queued = states.queued(SplitModelStatus(), 4, "hash-4", 2, 2, T0)
    message = "waiting for a free slot: 2 of max_models=2 split Jobs are running"
    assert queued.to_dict() == {
        "observedGeneration": 4,
        "conditions": [
            _condition("Ready", "False", "Queued", message, T0),
            _condition("Reconciling", "True", "Queued", message, T0),
            _condition("Stalled", "False", "Queued", "", T0),
        ],
        "jobName": None,
        "specHash": "hash-4",
        "storageClaim": None,
        "components": [],
        "verification": None,
        "source": None,
        "componentsSpecHash": None,
        "serving": None,
        "lastFailure": None,
    }


@pytest.mark.parametrize(
    ("saved", "reason", "message"),
    [
        (True, "Succeeded", "3 components written and recorded"),
        (False, "Planned", "plan only (autoSave: false): components described, no files written"),
    ],
)
def test_ready_writes_the_components_and_the_verification(saved, reason, message):
    ready = states.ready(_running(), 4, COMPONENTS, saved, Verification(True, "3.1e-07"), T1)
    assert ready.to_dict() == {
        "observedGeneration": 4,
        "conditions": [
            _condition("Ready", "True", reason, message, T1),
            _condition("Reconciling", "False", reason, "", T1),
            _condition("Stalled", "False", reason, "", T0),  # False all along
        ],
        "jobName": "job-4",
        "specHash": "hash-4",
        "storageClaim": "claim-4",
        "components": [c.to_json() for c in COMPONENTS],
        "verification": {"ok": True, "maxAbsDiff": "3.1e-07"},
        "source": None,
        "componentsSpecHash": None,
        "serving": None,
        "lastFailure": None,
    }


def test_stalled_writes_the_reason_and_the_last_failure():
    failed = states.stalled(_running(), 4, Reason.OOM_KILLED, "out of memory", T1)
    assert failed.to_dict() == {
        "observedGeneration": 4,
        "conditions": [
            _condition("Ready", "False", "OOMKilled", "out of memory", T0),
            _condition("Reconciling", "False", "OOMKilled", "", T1),
            _condition("Stalled", "True", "OOMKilled", "out of memory", T1),
        ],
        "jobName": "job-4",
        "specHash": "hash-4",
        "storageClaim": "claim-4",
        "components": [],
        "verification": None,
        "source": None,
        "componentsSpecHash": None,
        "serving": None,
        "lastFailure": {"reason": "OOMKilled", "message": "out of memory", "time": T1},
    }


def test_the_source_revision_is_written_and_read_back():
    source = SourceRevision("c0ffee" * 6 + "abcd", (SourceFile("gpt2/config.json", 10, "ab" * 32),))
    status = states.ready(SplitModelStatus(), 1, (), True, None, T1, source=source)
    assert status.to_dict()["source"] == {
        "revision": "c0ffee" * 6 + "abcd",
        "files": [{"path": "gpt2/config.json", "size": 10, "sha256": "ab" * 32}],
    }
    assert SplitModelStatus.from_dict(status.to_dict()) == status


def test_reading_back_a_written_failure_and_verification():
    written = {
        "lastFailure": {"reason": "OOMKilled", "message": "out of memory", "time": T1},
        "verification": {"ok": False, "maxAbsDiff": "0.5"},
    }
    assert SplitModelStatus.from_dict(written) == SplitModelStatus(
        verification=Verification(False, "0.5"),
        last_failure=Failure("OOMKilled", "out of memory", T1),
    )


@pytest.mark.parametrize(
    ("written", "read"),
    [({"reason": "OOMKilled"}, Failure("OOMKilled", "", "")), ({"time": T1}, Failure("", "", T1))],
)
def test_reading_partial_documents_fills_in_empty_fields(written, read):
    """An older operator, or a hand edit, may leave fields out: they read as empty, not 'None'."""
    partial = {"lastFailure": written, "conditions": [{}]}
    assert SplitModelStatus.from_dict(partial) == SplitModelStatus(
        conditions=(Condition("", "Unknown", "", "", "", 0),), last_failure=read
    )


def test_a_missing_condition_is_none_and_not_true():
    assert SplitModelStatus().condition("Ready") is None
    assert SplitModelStatus().is_true("Ready") is False


def test_conditions_other_controllers_set_are_kept_after_ours():
    foreign = {"type": "Audited", "status": "True", "reason": "Checked", "message": "ok"}
    status = SplitModelStatus.from_dict({"conditions": [foreign]})
    running = states.reconciling(status, 4, "job-4", "hash-4", None, T0)
    assert [c.type for c in running.conditions] == ["Ready", "Reconciling", "Stalled", "Audited"]
    assert running.condition("Audited") == Condition.from_dict(foreign)


def test_timestamps_are_rfc3339_utc_to_the_second():
    moment = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=UTC)
    assert now_rfc3339(moment) == "2026-03-04T05:06:07Z"


def test_now_is_utc_whatever_the_nodes_timezone(monkeypatch):
    monkeypatch.setenv("TZ", "EAST-14")  # POSIX: 14 hours ahead of UTC, no tzdata needed
    time.tzset()
    try:
        before = datetime.now(UTC).replace(microsecond=0)
        stamp = now_rfc3339()
        after = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= after
