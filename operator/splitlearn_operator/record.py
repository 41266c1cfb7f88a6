"""A finished split Job -> its SplitModel's status, through `outcome.job_outcome`.

The result is recorded under the SplitModel's lock, and only when the Job is of the spec the
SplitModel has now (its spec-hash label): an older spec's result is never recorded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from splitcore.result import Reason, SplitResult
from splitlearn_operator import builders
from splitlearn_operator import status as states
from splitlearn_operator.api import PODS
from splitlearn_operator.config import LABEL_COMPONENT, LABEL_SPEC_HASH, LABEL_SPLITMODEL
from splitlearn_operator.context import Context, generation_of, object_logger
from splitlearn_operator.decisions import is_done
from splitlearn_operator.outcome import job_outcome
from splitlearn_operator.serving import Serving
from splitlearn_operator.spec import ResolvedSpec, SpecError, resolve_spec
from splitlearn_operator.status import EventReason, SplitModelStatus


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def job_duration(job: dict[str, Any]) -> float | None:
    """Seconds from the Job's start to its completion (or failure), when both are known."""
    status = job.get("status") or {}
    start = _parse_time(status.get("startTime"))
    end = _parse_time(status.get("completionTime")) or next(
        (
            _parse_time(c.get("lastTransitionTime"))
            for c in status.get("conditions") or []
            if c.get("type") == "Failed"
        ),
        None,
    )
    return (end - start).total_seconds() if start and end else None


def splitmodel_of(job: dict[str, Any]) -> str | None:
    """The SplitModel a Job belongs to: its controller, else its label."""
    metadata = job["metadata"]
    owners = [o["name"] for o in metadata.get("ownerReferences", []) if o.get("controller")]
    name = owners[0] if owners else metadata.get("labels", {}).get(LABEL_SPLITMODEL)
    return str(name) if name else None


class Recorder:
    """Writes a finished split Job's result (or failure) into its SplitModel's status."""

    def __init__(self, context: Context, serving: Serving) -> None:
        self.context = context
        self.serving = serving

    async def job_finished(self, job: dict[str, Any]) -> None:
        """A Job of ours finished; only split Jobs have a result to record."""
        if job["metadata"].get("labels", {}).get(LABEL_COMPONENT) != builders.SPLIT:
            return
        namespace, name = job["metadata"]["namespace"], splitmodel_of(job)
        if name:
            async with self.context.locks[(namespace, name)]:
                await self.record_locked(job, namespace, name)

    async def record_locked(self, job: dict[str, Any], namespace: str, name: str) -> None:
        """Record under the SplitModel's lock, which the caller holds."""
        body = await self.context.live_splitmodel(namespace, name)
        if body is None:
            return
        try:
            spec = resolve_spec(body, self.context.config)
        except SpecError:
            return
        job_name = job["metadata"]["name"]
        if job["metadata"].get("labels", {}).get(LABEL_SPEC_HASH) != spec.spec_hash:
            return  # a Job of an older spec: its result is not this spec's
        current = SplitModelStatus.from_dict(body.get("status"))
        if current.job_name == job_name and is_done(current, spec.spec_hash, generation_of(body)):
            return  # recorded already (a replayed event after a restart)
        pods = await self.context.client.list(PODS, namespace, f"job-name={job_name}")
        limits = spec.resources.get("limits") or {}
        outcome = job_outcome(job, pods, limits.get("memory"))
        self._observe_duration(job, "succeeded" if outcome.succeeded else "failed")
        if outcome.result is None:
            await self.context.stall(
                body, outcome.reason or Reason.JOB_FAILED, outcome.message or ""
            )
            return
        await self._record_result(body, spec, job_name, outcome.result)

    async def _record_result(
        self, body: dict[str, Any], spec: ResolvedSpec, job_name: str, result: SplitResult
    ) -> None:
        """Ready with the components, metrics of what was written, a Succeeded/Planned Event."""
        metadata = body["metadata"]
        generation = generation_of(body)
        components, saved, checked = result.components, result.saved, result.verification
        source = result.source  # which hub commit or S3 digest was split, for sources that have one
        spec_hash, claim = spec.spec_hash, spec.storage.name if spec.storage else None
        moment = states.now_rfc3339()

        def transform(_: dict[str, Any], status: SplitModelStatus) -> SplitModelStatus:
            marked = states.reconciling(status, generation, job_name, spec_hash, claim, moment)
            done = states.ready(
                marked, generation, components, saved, checked, moment, source, spec_hash
            )
            # With a server, Ready waits for it: never True before the new trunk is served.
            pending = self.serving.pending(body, spec, done)
            return states.with_serving(done, generation, spec_hash, pending, moment)

        written = await self.context.write_status(
            metadata["namespace"], metadata["name"], transform
        )
        object_logger(body).info(
            "Job %s %s: %d components recorded", job_name,
            "succeeded" if saved else "planned", len(components),
        )  # fmt: skip
        if saved:
            for component in components:
                self.context.metrics.bytes_written.labels(component.name).inc(
                    component.memory_bytes
                )
        await self.context.event(
            body, "Normal", EventReason.SUCCEEDED if saved else EventReason.PLANNED,
            f"split {spec.split_config} of {spec.model_path}: "
            + ", ".join(f"{c.name} layers [{c.start_layer},{c.end_layer})" for c in components),
        )  # fmt: skip
        if self.serving.concerns(written, spec):
            await self.serving.sync(written)  # the new trunk rolls out now, not before

    def _observe_duration(self, job: dict[str, Any], result: str) -> None:
        seconds = job_duration(job)
        if seconds is not None:
            self.context.metrics.job_duration.labels(result).observe(seconds)
