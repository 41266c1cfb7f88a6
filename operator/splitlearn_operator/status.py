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
SERVING = "Serving"  # only with spec.serving: a server replica is ready on the current split
TRUE, FALSE = "True", "False"


class Progress(StrEnum):
    """Reasons of the conditions while nothing is wrong (failures are `Reason`s)."""

    JOB_RUNNING = "JobRunning"
    QUEUED = "Queued"
    SUCCEEDED = "Succeeded"
    PLANNED = "Planned"
    # The trunk server (spec.serving).
    ROLLING_OUT = "RollingOut"
    SERVED = "Served"
    SCALED_TO_ZERO = "ScaledToZero"
    PREVIOUS_SPLIT = "PreviousSplit"
    WAITING_FOR_SPLIT = "WaitingForSplit"


class EventReason(StrEnum):
    """Reasons of the Normal Events the operator posts (Warnings carry a `Reason`)."""

    CLAIM_CREATED = "ClaimCreated"
    JOB_CREATED = "JobCreated"
    QUEUED = "Queued"
    SUCCEEDED = "Succeeded"
    PLANNED = "Planned"
    CLEANUP_STARTED = "CleanupStarted"
    CLEANED_UP = "CleanedUp"
    SERVING_STARTED = "ServingStarted"
    SERVING_UPDATED = "ServingUpdated"
    SERVING_STOPPED = "ServingStopped"


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
class ServingStatus:
    """`status.serving`: the trunk server as its Deployment reports it."""

    endpoint: str
    replicas: int
    ready_replicas: int
    sha256: str | None = None  # of the trunk file the server is configured with
    split_config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        document = {
            "endpoint": self.endpoint,
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "sha256": self.sha256,
            "splitConfig": self.split_config,
        }
        return {key: value for key, value in document.items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServingStatus:
        return cls(
            endpoint=str(data.get("endpoint", "")),
            replicas=int(data.get("replicas", 0)),
            ready_replicas=int(data.get("readyReplicas", 0)),
            sha256=data.get("sha256"),
            split_config=data.get("splitConfig"),
        )


@dataclass(frozen=True)
class ServingState:
    """What the operator observed of the trunk server, for `with_serving`."""

    status: ServingStatus
    current: bool  # it is configured with the trunk of the recorded, current split
    ready_on_current: int  # ready pods that run that trunk
    complete: bool  # rolled out: every wanted pod updated and ready, no others left
    problem: tuple[Reason, str] | None = None  # why it cannot become ready by itself


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
    components_spec_hash: str | None = None  # the spec whose split wrote `components`
    serving: ServingStatus | None = None
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
            "componentsSpecHash": self.components_spec_hash,
            "serving": self.serving.to_dict() if self.serving else None,
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
            components_spec_hash=data.get("componentsSpecHash"),
            serving=ServingStatus.from_dict(data["serving"]) if data.get("serving") else None,
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
        order = [READY, RECONCILING, STALLED, SERVING]
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
    spec_hash: str | None = None,
) -> SplitModelStatus:
    """The split of `spec_hash` is recorded. With serving, `with_serving` then decides
    whether the resource as a whole is Ready."""
    reason = Progress.SUCCEEDED if saved else Progress.PLANNED
    message = _recorded_message(len(components), saved)
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
        components_spec_hash=spec_hash,
    )


def _recorded_message(count: int, saved: bool) -> str:
    if saved:
        return f"{count} components written and recorded"
    return "plan only (autoSave: false): components described, no files written"


def split_recorded(status: SplitModelStatus, spec_hash: str) -> bool:
    """The components of this spec are recorded and no other spec is being worked on."""
    if status.spec_hash != spec_hash:
        return False
    if status.components_spec_hash is not None:
        return status.components_spec_hash == spec_hash
    return status.is_true(READY)  # a status written before componentsSpecHash existed


def _serving_condition(state: ServingState) -> tuple[str, str, str]:
    """`Serving`: True when a replica is ready on the current split."""
    served = state.status
    where = f"split {served.split_config} at {served.endpoint}"
    if state.current and state.ready_on_current > 0:
        return (
            TRUE,
            Progress.SERVED,
            (f"{state.ready_on_current} of {served.replicas} replicas ready on {where}"),
        )
    if not state.current:
        if served.split_config is None:
            return FALSE, Progress.WAITING_FOR_SPLIT, "the server starts once the split is recorded"
        return (
            FALSE,
            Progress.PREVIOUS_SPLIT,
            (
                f"{served.ready_replicas} replicas serve the previous {where} until the new split "
                "is recorded"
            ),
        )
    if state.problem is not None:
        return FALSE, state.problem[0], state.problem[1]
    if served.replicas == 0:
        return FALSE, Progress.SCALED_TO_ZERO, f"spec.serving.replicas is 0; {where} when scaled"
    return FALSE, Progress.ROLLING_OUT, f"0 of {served.replicas} replicas ready on {where}"


def with_serving(
    status: SplitModelStatus,
    generation: int,
    spec_hash: str,
    state: ServingState | None,
    moment: str,
) -> SplitModelStatus:
    """The trunk server's part of the status; `state` None when serving is off.

    Once the current split is recorded, Ready also needs its trunk served: Reconciling while
    the server rolls out, Stalled when it cannot start. Before that, only `Serving` and
    `status.serving` move: the split's own conditions belong to the Job.
    """
    if state is None:
        result = replace(
            status,
            serving=None,
            conditions=tuple(c for c in status.conditions if c.type != SERVING),
        )
    else:
        result = replace(
            status.with_conditions(
                status.observed_generation or generation, moment,
                Serving=_serving_condition(state),
            ),
            serving=state.status,
        )  # fmt: skip
    if not split_recorded(status, spec_hash):
        return result
    if state is not None and state.problem is not None:
        return stalled(result, generation, state.problem[0], state.problem[1], moment)
    if state is not None and not state.complete:
        served = state.status
        message = (
            f"components recorded; the trunk server rolls out split {served.split_config}: "
            f"{served.ready_replicas} of {served.replicas} replicas ready"
        )
        return result.with_conditions(
            generation, moment,
            Ready=(FALSE, Progress.ROLLING_OUT, message),
            Reconciling=(TRUE, Progress.ROLLING_OUT, message),
            Stalled=(FALSE, Progress.ROLLING_OUT, ""),
        )  # fmt: skip
    ready_now = result.condition(READY)
    saved = not (ready_now and ready_now.reason == Progress.PLANNED)
    message = _recorded_message(len(result.components), saved)
    if state is not None:
        message += f"; trunk served at {state.status.endpoint}"
    reason = Progress.SUCCEEDED if saved else Progress.PLANNED
    return result.with_conditions(
        generation, moment,
        Ready=(TRUE, reason, message),
        Reconciling=(FALSE, reason, ""),
        Stalled=(FALSE, reason, ""),
    )  # fmt: skip


def stalled(
    status: SplitModelStatus, generation: int, reason: Reason, message: str, moment: str
) -> SplitModelStatus:
    """The operator cannot make progress without a change from the user. `lastFailure.time`
    is when this failure began: seeing it again rewrites nothing."""
    previous, ongoing = status.last_failure, status.is_true(STALLED)
    if ongoing and previous and (previous.reason, previous.message) == (reason, message):
        moment_of_failure = previous.time
    else:
        moment_of_failure = moment
    return replace(
        status.with_conditions(
            generation,
            moment,
            Ready=(FALSE, reason, message),
            Reconciling=(FALSE, reason, ""),
            Stalled=(TRUE, reason, message),
        ),
        last_failure=Failure(reason, message, moment_of_failure),
    )
