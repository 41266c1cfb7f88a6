"""What a finished split Job says: its result, or why it failed, with a hint to fix it.

Pure functions over the Job and its Pods as the API returns them. The container writes its
JSON result (or `{"error": {"reason", "message"}}`) to its termination message, which the
kubelet copies into the Pod's status; that is the only channel from the Job to the operator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from splitcore.result import ErrorDocument, Reason, SplitResult
from splitlearn_operator.config import CONTAINER_NAME


@dataclass(frozen=True)
class JobOutcome:
    finished: bool
    result: SplitResult | None = None  # set when the Job succeeded
    reason: Reason | None = None  # set when it failed
    message: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result is not None


def _condition(job: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


def is_complete(job: dict[str, Any]) -> bool:
    return _condition(job, "Complete") is not None


def is_finished(job: dict[str, Any]) -> bool:
    return is_complete(job) or _condition(job, "Failed") is not None


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        if container.get("name") == CONTAINER_NAME:
            state = container.get("state", {}).get("terminated")
            return dict(state) if state else None
    return None


def _message_json(terminated: dict[str, Any] | None) -> dict[str, Any] | None:
    if not terminated or not terminated.get("message"):
        return None
    try:
        document = json.loads(terminated["message"])
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _last_terminated(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    ordered = sorted(pods, key=lambda pod: pod.get("metadata", {}).get("creationTimestamp", ""))
    states = [state for state in map(_terminated, ordered) if state]
    return states[-1] if states else None


def job_outcome(
    job: dict[str, Any], pods: list[dict[str, Any]], memory_limit: str | None
) -> JobOutcome:
    """Interpret a Job and its Pods; `memory_limit` is only for the OOM hint."""
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete is None and failed is None:
        return JobOutcome(finished=False)
    terminated = _last_terminated(pods)
    document = _message_json(terminated)
    if complete is not None:
        try:
            return JobOutcome(True, result=SplitResult.from_json(document or {}))
        except (KeyError, TypeError, ValueError):
            return JobOutcome(
                True, reason=Reason.RESULT_MISSING,
                message="the Job completed but its pod left no JSON result in its "
                "termination message",
            )  # fmt: skip
    assert failed is not None
    error = ErrorDocument.from_json(document) if document is not None else None
    if error is not None:
        return JobOutcome(True, reason=error.reason, message=error.message)
    if failed.get("reason") == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return JobOutcome(
            True,
            reason=Reason.DEADLINE_EXCEEDED,
            message=f"the Job ran longer than activeDeadlineSeconds={deadline} and was stopped; "
            "raise config.job_active_deadline_seconds in the operator's configuration",
        )
    if terminated is not None and (
        terminated.get("reason") == "OOMKilled" or terminated.get("exitCode") == 137
    ):
        limit = f" (limit {memory_limit})" if memory_limit else ""
        return JobOutcome(
            True,
            reason=Reason.OOM_KILLED,
            message=f"the split container ran out of memory{limit} and was killed; raise "
            "spec.resources.limits.memory (the streaming split needs about the largest "
            "component's size of page cache, verify needs the whole model)",
        )
    detail = ""
    if terminated is not None:
        detail = (
            f" (exit code {terminated.get('exitCode')}: {terminated.get('message', '')[-500:]})"
        )
    kubernetes_reason = f"{failed['reason']}: " if failed.get("reason") else ""
    return JobOutcome(
        True,
        reason=Reason.JOB_FAILED,
        message=f"{kubernetes_reason}{failed.get('message') or 'the split Job failed'}{detail}",
    )
