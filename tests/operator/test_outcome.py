"""Reading a finished Job: its result, or why it failed, with a hint."""

from __future__ import annotations

import json
from typing import Any

from splitlearn_operator.outcome import job_outcome

RESULT = {"saved": True, "components": [{"name": "bottom"}]}


def job(condition: str | None, reason: str | None = None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "reason": reason}] if condition else []
    return {"spec": {"activeDeadlineSeconds": 600}, "status": {"conditions": conditions}}


def pod(
    exit_code: int, message: str = "", reason: str = "Error", created: str = "1"
) -> dict[str, Any]:
    terminated = {"exitCode": exit_code, "message": message, "reason": reason}
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"name": "split", "state": {"terminated": terminated}}]},
    }


def test_running_job_is_not_finished():
    assert job_outcome(job(None), [], None).finished is False


def test_complete_job_returns_its_termination_message():
    outcome = job_outcome(job("Complete"), [pod(0, json.dumps(RESULT), "Completed")], None)
    assert (outcome.finished, outcome.succeeded, outcome.result) == (True, True, RESULT)


def test_complete_job_without_a_result():
    outcome = job_outcome(job("Complete"), [pod(0, "Saving split models...")], None)
    assert (outcome.succeeded, outcome.reason) == (False, "ResultMissing")


def test_the_containers_own_reason_wins():
    error = {"error": {"reason": "InvalidSplitPoints", "message": "0 < p1 < p2 < 12"}}
    outcome = job_outcome(job("Failed", "PodFailurePolicy"), [pod(2, json.dumps(error))], None)
    assert (outcome.reason, outcome.message) == ("InvalidSplitPoints", "0 < p1 < p2 < 12")


def test_oom_killed_says_which_limit_to_raise():
    pods = [pod(1, "", created="1"), pod(137, "", "OOMKilled", created="2")]
    outcome = job_outcome(job("Failed", "BackoffLimitExceeded"), pods, "4Gi")
    assert outcome.reason == "OOMKilled"
    assert "(limit 4Gi)" in outcome.message and "spec.resources.limits.memory" in outcome.message


def test_deadline_exceeded_says_which_setting_to_raise():
    outcome = job_outcome(job("Failed", "DeadlineExceeded"), [pod(137, "", "Error")], None)
    assert outcome.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds=600" in outcome.message
    assert "job_active_deadline_seconds" in outcome.message


def test_other_failures_keep_the_exit_code_and_log_tail():
    outcome = job_outcome(job("Failed", "BackoffLimitExceeded"), [pod(1, "Traceback: boom")], None)
    assert outcome.reason == "BackoffLimitExceeded"
    assert "exit code 1" in outcome.message and "boom" in outcome.message
