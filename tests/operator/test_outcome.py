"""Reading a finished Job: its result, or why it failed, with a hint."""

from __future__ import annotations

import json
from typing import Any

from splitcore.result import ComponentResult, Reason, SplitResult
from splitlearn_operator.outcome import job_outcome

RESULT = SplitResult(
    model_name="gpt2", model_type="gpt2", split_config="2-10", storage_path="/models",
    format="pt", saved=True, num_layers=12,
    components=(
        ComponentResult(
            name="bottom", model_class="GPT2BottomModel", start_layer=0, end_layer=2,
            num_layers=2, num_parameters=10, memory_bytes=40, saved_at="2026-01-01T00:00:00",
            dtype="float32", path="/models/bottom/gpt2_2-10_bottom.pt",
            metadata_path="/models/bottom/gpt2_2-10_bottom_metadata.json", sha256="ab" * 32,
        ),
    ),
)  # fmt: skip


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
    message = json.dumps(RESULT.to_json())
    outcome = job_outcome(job("Complete"), [pod(0, message, "Completed")], None)
    assert (outcome.finished, outcome.succeeded, outcome.result) == (True, True, RESULT)


def test_complete_job_without_a_result():
    outcome = job_outcome(job("Complete"), [pod(0, "Saving split models...")], None)
    assert (outcome.succeeded, outcome.reason) == (False, Reason.RESULT_MISSING)


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


def test_other_failures_are_job_failed_with_kubernetes_reason_exit_code_and_log_tail():
    outcome = job_outcome(job("Failed", "BackoffLimitExceeded"), [pod(1, "Traceback: boom")], None)
    assert outcome.reason is Reason.JOB_FAILED
    assert outcome.message.startswith("BackoffLimitExceeded: ")
    assert "exit code 1" in outcome.message and "boom" in outcome.message


def test_an_unknown_reason_from_the_container_reads_as_job_failed():
    error = {"error": {"reason": "SomethingNew", "message": "details"}}
    outcome = job_outcome(job("Failed", "PodFailurePolicy"), [pod(2, json.dumps(error))], None)
    assert (outcome.reason, outcome.message) == (Reason.JOB_FAILED, "SomethingNew: details")
