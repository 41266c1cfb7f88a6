"""Reading a finished Job, asserted whole (finished, reason and the message the user reads):
what `make mutation` found no test pinning."""

from __future__ import annotations

import json
from typing import Any

import pytest

from splitcore.result import Reason
from splitlearn_operator.outcome import JobOutcome, is_complete, is_finished, job_outcome

OOM_ADVICE = (
    " and was killed; raise spec.resources.limits.memory (the streaming split needs about the "
    "largest component's size of page cache, verify needs the whole model)"
)


def _job(*conditions: tuple[str, str], reason: str | None = None, message: str | None = None):
    """A Job whose `status.conditions` are (type, status) pairs; the last carries reason/message."""
    listed: list[dict[str, Any]] = [{"type": kind, "status": state} for kind, state in conditions]
    if listed and reason:
        listed[-1]["reason"] = reason
    if listed and message:
        listed[-1]["message"] = message
    return {"spec": {"activeDeadlineSeconds": 600}, "status": {"conditions": listed}}


def _pod(terminated: dict[str, Any] | None, created: str | None = "2026-01-01T00:00:00Z"):
    state = {"terminated": terminated} if terminated is not None else {"running": {}}
    pod: dict[str, Any] = {"status": {"containerStatuses": [{"name": "split", "state": state}]}}
    if created is not None:
        pod["metadata"] = {"creationTimestamp": created}
    return pod


FAILED = _job(("Failed", "True"))


@pytest.mark.parametrize(
    ("conditions", "complete", "finished"),
    [
        ((), False, False),
        ((("Complete", "True"),), True, True),
        ((("Failed", "True"),), False, True),
        ((("Complete", "False"), ("Failed", "False")), False, False),
        ((("Suspended", "True"),), False, False),
    ],
)
def test_complete_and_finished_read_only_true_conditions(conditions, complete, finished):
    job = _job(*conditions)
    assert (is_complete(job), is_finished(job)) == (complete, finished)


def test_a_complete_job_without_a_result_says_so():
    outcome = job_outcome(_job(("Complete", "True")), [_pod({"exitCode": 0})], None)
    assert outcome == JobOutcome(
        True,
        reason=Reason.RESULT_MISSING,
        message="the Job completed but its pod left no JSON result in its termination message",
    )


def test_the_containers_own_error_is_the_outcome():
    error = {"error": {"reason": "InvalidSplitPoints", "message": "0 < p1 < p2 < 12"}}
    pods = [_pod({"exitCode": 2, "message": json.dumps(error)})]
    assert job_outcome(FAILED, pods, None) == JobOutcome(
        True, reason=Reason.INVALID_SPLIT_POINTS, message="0 < p1 < p2 < 12"
    )


def test_deadline_exceeded_names_the_setting_to_raise():
    outcome = job_outcome(_job(("Failed", "True"), reason="DeadlineExceeded"), [], None)
    assert outcome == JobOutcome(
        True,
        reason=Reason.DEADLINE_EXCEEDED,
        message="the Job ran longer than activeDeadlineSeconds=600 and was stopped; "
        "raise config.job_active_deadline_seconds in the operator's configuration",
    )


@pytest.mark.parametrize(
    "terminated",
    [{"exitCode": 137, "reason": "Error"}, {"exitCode": 1, "reason": "OOMKilled"}],
    ids=["exit-137", "reason-OOMKilled"],
)
def test_either_sign_of_the_oom_killer_is_oom_killed(terminated):
    assert job_outcome(FAILED, [_pod(terminated)], None) == JobOutcome(
        True, reason=Reason.OOM_KILLED, message=f"the split container ran out of memory{OOM_ADVICE}"
    )


def test_the_oom_message_names_the_limit_when_there_is_one():
    outcome = job_outcome(FAILED, [_pod({"exitCode": 137})], "4Gi")
    assert outcome.message == f"the split container ran out of memory (limit 4Gi){OOM_ADVICE}"


def test_the_newest_pod_speaks_for_the_job_whatever_the_listing_order():
    newest = _pod({"exitCode": 137, "reason": "OOMKilled"}, created="2026-01-01T00:02:00Z")
    older = _pod({"exitCode": 1, "message": "boom"}, created="2026-01-01T00:01:00Z")
    assert job_outcome(FAILED, [newest, older], None).reason == Reason.OOM_KILLED


def test_a_pod_not_yet_stamped_counts_as_the_oldest():
    stamped = _pod({"exitCode": 137, "reason": "OOMKilled"})
    assert job_outcome(FAILED, [stamped, _pod({"exitCode": 1}, None)], None).reason == (
        Reason.OOM_KILLED
    )


def test_a_job_that_failed_without_pods_or_words_is_job_failed():
    assert job_outcome(FAILED, [], None) == JobOutcome(
        True, reason=Reason.JOB_FAILED, message="the split Job failed"
    )


def test_job_failed_quotes_kubernetes_the_exit_code_and_the_log_tail():
    job = _job(("Failed", "True"), reason="BackoffLimitExceeded", message="Job has reached limit")
    pods = [_pod({"exitCode": 1, "message": "x" * 100 + "y" * 500})]
    assert job_outcome(job, pods, None) == JobOutcome(
        True,
        reason=Reason.JOB_FAILED,
        message=f"BackoffLimitExceeded: Job has reached limit (exit code 1: {'y' * 500})",
    )


@pytest.mark.parametrize(
    ("pod", "detail"),
    [
        (_pod({"exitCode": 1}), " (exit code 1: )"),  # no termination message at all
        (_pod({"exitCode": 1, "message": "[1, 2]"}), " (exit code 1: [1, 2])"),  # JSON, no object
        (_pod(None), ""),  # still running: nothing to quote
        ({"status": {"containerStatuses": [{"name": "split"}]}}, ""),  # no state reported yet
    ],
    ids=["no-message", "json-list", "running", "no-state"],
)
def test_job_failed_quotes_only_what_the_container_left(pod, detail):
    assert job_outcome(FAILED, [pod], None) == JobOutcome(
        True, reason=Reason.JOB_FAILED, message=f"the split Job failed{detail}"
    )
