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
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
TRUE, FALSE = "True", "False"

# Reasons the operator reports (conditions, Events, metrics).
REASON_JOB_RUNNING = "JobRunning"
REASON_QUEUED = "Queued"
REASON_SUCCEEDED = "Succeeded"
REASON_PLANNED = "Planned"
REASON_DELETING = "Deleting"


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
class ComponentStatus:
    """One component file, as the Job reported it (and its metadata file records it)."""

    name: str
    model_class: str
    start_layer: int
    end_layer: int
    num_layers: int
    num_parameters: int
    memory_bytes: int
    saved_at: str
    path: str | None = None
    metadata_path: str | None = None
    sha256: str | None = None

    _FIELDS = (
        ("name", "name"), ("path", "path"), ("metadataPath", "metadata_path"),
        ("modelClass", "model_class"), ("startLayer", "start_layer"),
        ("endLayer", "end_layer"), ("numLayers", "num_layers"),
        ("numParameters", "num_parameters"), ("memoryBytes", "memory_bytes"),
        ("sha256", "sha256"), ("savedAt", "saved_at"),
    )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        document = {key: getattr(self, attribute) for key, attribute in self._FIELDS}
        return {key: value for key, value in document.items() if value is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComponentStatus:
        integers = {"start_layer", "end_layer", "num_layers", "num_parameters", "memory_bytes"}
        values: dict[str, Any] = {
            attribute: (int(data[key]) if attribute in integers else str(data[key]))
            for key, attribute in cls._FIELDS
            if data.get(key) is not None
        }
        return cls(**values)


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    time: str

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "time": self.time}


@dataclass(frozen=True)
class Verification:
    ok: bool
    max_abs_diff: str | None

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"ok": self.ok}
        if self.max_abs_diff is not None:
            result["maxAbsDiff"] = self.max_abs_diff
        return result


@dataclass(frozen=True)
class SplitModelStatus:
    """Everything the operator writes under `.status`."""

    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    job_name: str | None = None
    spec_hash: str | None = None
    storage_claim: str | None = None
    components: tuple[ComponentStatus, ...] = ()
    verification: Verification | None = None
    last_failure: Failure | None = None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "observedGeneration": self.observed_generation,
            # A merge patch replaces lists whole: always send every condition.
            "conditions": [c.to_dict() for c in self.conditions],
            "jobName": self.job_name,
            "specHash": self.spec_hash,
            "storageClaim": self.storage_claim,
            "components": [c.to_dict() for c in self.components],
            "verification": self.verification.to_dict() if self.verification else None,
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
            components=tuple(ComponentStatus.from_dict(c) for c in data.get("components") or ()),
            verification=Verification(bool(verification.get("ok")), verification.get("maxAbsDiff"))
            if verification
            else None,
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
            Ready=(FALSE, REASON_JOB_RUNNING, message),
            Reconciling=(TRUE, REASON_JOB_RUNNING, message),
            Stalled=(FALSE, REASON_JOB_RUNNING, ""),
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
            Ready=(FALSE, REASON_QUEUED, message),
            Reconciling=(TRUE, REASON_QUEUED, message),
            Stalled=(FALSE, REASON_QUEUED, ""),
        ),
        spec_hash=spec_hash,
    )


def ready(
    status: SplitModelStatus,
    generation: int,
    components: tuple[ComponentStatus, ...],
    saved: bool,
    verification: Verification | None,
    moment: str,
) -> SplitModelStatus:
    reason = REASON_SUCCEEDED if saved else REASON_PLANNED
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
    )


def stalled(
    status: SplitModelStatus, generation: int, reason: str, message: str, moment: str
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


def kstatus(body: Mapping[str, Any]) -> str:
    """The kstatus verdict (`Current`, `InProgress`, `Failed`, `Terminating`) by the generic
    rules of sigs.k8s.io/cli-utils, which Flux and `kubectl wait --for` apply to custom
    resources: deletion first, then generation, then `Reconciling` and `Stalled`."""
    metadata = body.get("metadata", {})
    if metadata.get("deletionTimestamp"):
        return "Terminating"
    data = body.get("status") or {}
    generation = metadata.get("generation")
    observed = data.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress"
    status = SplitModelStatus.from_dict(data)
    if status.is_true(RECONCILING):
        return "InProgress"
    if status.is_true(STALLED):
        return "Failed"
    return "Current"
