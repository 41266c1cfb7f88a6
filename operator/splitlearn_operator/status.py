"""A `SplitModel`'s status as typed data, and the pure transitions between its states.

The status follows kstatus (what Flux and `kubectl wait` read): a top-level
`observedGeneration` and the conditions `Ready`, `Reconciling` and `Stalled`, each with its own
`observedGeneration` and a `lastTransitionTime` that only moves when its status changes.
Numbers are integers and everything is declared in the CRD's status schema, so a real
apiserver neither prunes nor refuses what the operator writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from splitcore.result import ComponentResult, Reason, SourceRevision, Verification

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
TRUE, FALSE = "True", "False"


class Progress(StrEnum):
    """Reasons of the conditions while nothing is wrong (failures are `Reason`s)."""

    JOB_RUNNING = "JobRunning"
    QUEUED = "Queued"
    SUCCEEDED = "Succeeded"
    PLANNED = "Planned"


class EventReason(StrEnum):
    """Reasons of the Normal Events the operator posts (Warnings carry a `Reason`)."""

    CLAIM_CREATED = "ClaimCreated"
    JOB_CREATED = "JobCreated"
    QUEUED = "Queued"
    SUCCEEDED = "Succeeded"
    PLANNED = "Planned"
    CLEANUP_STARTED = "CleanupStarted"
    CLEANED_UP = "CleanedUp"


def now_rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
            "observedGeneration": self.observed_generation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(
            type=str(data.get("type", "")),
            status=str(data.get("status", "Unknown")),
            reason=str(data.get("reason", "")),
            message=str(data.get("message", "")),
            last_transition_time=str(data.get("lastTransitionTime", "")),
            observed_generation=int(data.get("observedGeneration", 0)),
        )


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    time: str

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "time": self.time}


@dataclass(frozen=True)
class SplitModelStatus:
    """Everything the operator writes under `.status`."""

    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    job_name: str | None = None
    spec_hash: str | None = None
    storage_claim: str | None = None
    components: tuple[ComponentResult, ...] = ()  # the Job's result, field for field
    verification: Verification | None = None
    source: SourceRevision | None = None  # which hub commit / S3 digest was split
    last_failure: Failure | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "observedGeneration": self.observed_generation,
            # A merge patch replaces lists whole: always send every condition.
            "conditions": [c.to_dict() for c in self.conditions],
            "jobName": self.job_name,
            "specHash": self.spec_hash,
            "storageClaim": self.storage_claim,
            # The schema has no nullable fields: a plan's missing paths are left out.
            "components": [
                {key: value for key, value in c.to_json().items() if value is not None}
                for c in self.components
            ],
            "verification": self.verification.to_json() if self.verification else None,
            "source": self.source.to_json() if self.source else None,
            "lastFailure": self.last_failure.to_dict() if self.last_failure else None,
        }
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> SplitModelStatus:
        data = data or {}
        failure = data.get("lastFailure")
        verification = data.get("verification")
        generation = data.get("observedGeneration")
        return cls(
            observed_generation=int(generation) if generation is not None else None,
            conditions=tuple(Condition.from_dict(c) for c in data.get("conditions") or ()),
            job_name=data.get("jobName"),
            spec_hash=data.get("specHash"),
            storage_claim=data.get("storageClaim"),
            components=tuple(ComponentResult.from_json(c) for c in data.get("components") or ()),
            verification=Verification.from_json(verification) if verification else None,
            source=SourceRevision.from_json(data["source"]) if data.get("source") else None,
            last_failure=Failure(
                str(failure.get("reason", "")),
                str(failure.get("message", "")),
                str(failure.get("time", "")),
            )
            if failure
            else None,
        )

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def is_true(self, kind: str) -> bool:
        found = self.condition(kind)
        return found is not None and found.status == TRUE

    def with_conditions(
        self, generation: int, moment: str, **states: tuple[str, str, str]
    ) -> SplitModelStatus:
        """Set conditions by type: `Ready=("True", reason, message)`. A condition's
        `lastTransitionTime` only changes when its status does."""
        existing = {c.type: c for c in self.conditions}
        for kind, (status, reason, message) in states.items():
            previous = existing.get(kind)
            since = (
                previous.last_transition_time if previous and previous.status == status else moment
            )
            existing[kind] = Condition(kind, status, reason, message, since, generation)
        order = [READY, RECONCILING, STALLED]
        conditions = tuple(existing[k] for k in order if k in existing) + tuple(
            c for k, c in existing.items() if k not in order
        )
        return replace(self, conditions=conditions, observed_generation=generation)


def reconciling(
    status: SplitModelStatus,
    generation: int,
    job_name: str,
    spec_hash: str,
    storage_claim: str | None,
    moment: str,
) -> SplitModelStatus:
    """A Job is working on this generation; components of an earlier one are kept until done."""
    message = f"Job {job_name} is splitting generation {generation}"
    return replace(
        status.with_conditions(
            generation,
            moment,
            Ready=(FALSE, Progress.JOB_RUNNING, message),
            Reconciling=(TRUE, Progress.JOB_RUNNING, message),
            Stalled=(FALSE, Progress.JOB_RUNNING, ""),
        ),
        job_name=job_name,
        spec_hash=spec_hash,
        storage_claim=storage_claim,
    )


def queued(
    status: SplitModelStatus, generation: int, spec_hash: str, running: int, limit: int, moment: str
) -> SplitModelStatus:
    message = f"waiting for a free slot: {running} of max_models={limit} split Jobs are running"
    return replace(
        status.with_conditions(
            generation,
            moment,
            Ready=(FALSE, Progress.QUEUED, message),
            Reconciling=(TRUE, Progress.QUEUED, message),
            Stalled=(FALSE, Progress.QUEUED, ""),
        ),
        spec_hash=spec_hash,
    )


def ready(
    status: SplitModelStatus,
    generation: int,
    components: tuple[ComponentResult, ...],
    saved: bool,
    verification: Verification | None,
    moment: str,
    source: SourceRevision | None = None,
) -> SplitModelStatus:
    reason = Progress.SUCCEEDED if saved else Progress.PLANNED
    message = (
        f"{len(components)} components written and recorded"
        if saved
        else "plan only (autoSave: false): components described, no files written"
    )
    return replace(
        status.with_conditions(
            generation,
            moment,
            Ready=(TRUE, reason, message),
            Reconciling=(FALSE, reason, ""),
            Stalled=(FALSE, reason, ""),
        ),
        components=components,
        verification=verification,
        source=source,
    )


def stalled(
    status: SplitModelStatus, generation: int, reason: Reason, message: str, moment: str
) -> SplitModelStatus:
    """The operator cannot make progress without a change from the user."""
    return replace(
        status.with_conditions(
            generation,
            moment,
            Ready=(FALSE, reason, message),
            Reconciling=(FALSE, reason, ""),
            Stalled=(TRUE, reason, message),
        ),
        last_failure=Failure(reason, message, moment),
    )
