"""Reconciliation: from a SplitModel to a Job, and from a finished Job to the status.

Level-driven and idempotent: every decision is taken from what is in the cluster (the
resource, its claims, its Jobs, their Pods), never from memory, so a restarted operator
resumes where the cluster is. The handlers in `handlers` only call into this module.

The only object the operator writes for a SplitModel is its status, through
`write_status`, which re-reads the resource and retries on a stale resourceVersion.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import kopf

from splitcore.result import Reason
from splitlearn_operator import builders
from splitlearn_operator import status as states
from splitlearn_operator.api import EVENTS, JOBS, PODS, PVCS, SPLITMODELS, ApiError, Client
from splitlearn_operator.config import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_SPEC_HASH,
    LABEL_SPLITMODEL,
    MANAGED_BY,
    OperatorConfig,
)
from splitlearn_operator.metrics import Metrics
from splitlearn_operator.outcome import is_complete, is_finished, job_outcome
from splitlearn_operator.spec import ResolvedSpec, SpecError, resolve_spec
from splitlearn_operator.status import EventReason, Progress, SplitModelStatus

Transform = Callable[[dict[str, Any], SplitModelStatus], SplitModelStatus | None]


OutputKey = tuple[str, str, str, str, str, str]


@dataclass(frozen=True, order=True)
class Writer:
    """A SplitModel that writes a given set of files; the oldest one owns them."""

    created: str
    name: str


def output_key(namespace: str, spec: ResolvedSpec) -> OutputKey | None:
    """What identifies the files a spec writes: same claim, folder, model id, split, format."""
    if spec.storage is None:
        return None
    return (namespace, spec.storage.name, spec.storage_path, spec.model_id, spec.split_config,
            spec.file_format)  # fmt: skip


def object_logger(body: dict[str, Any]) -> logging.LoggerAdapter[logging.Logger]:
    """A logger whose lines name the SplitModel (kopf's formatters print `[namespace/name]`
    in text and an `object` reference in JSON)."""
    metadata = body.get("metadata", {})
    reference = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "namespace": metadata.get("namespace"),
    }
    return logging.LoggerAdapter(logging.getLogger("splitlearn.operator"), {"k8s_ref": reference})


@dataclass(frozen=True)
class JobInfo:
    """What the operator needs to know of one of its Jobs, kept in memory from the watch."""

    namespace: str
    name: str
    component: str
    spec_hash: str | None
    finished: bool
    deleting: bool

    @classmethod
    def of(cls, job: dict[str, Any]) -> JobInfo:
        metadata = job["metadata"]
        labels = metadata.get("labels", {})
        return cls(
            namespace=metadata["namespace"],
            name=metadata["name"],
            component=labels.get(LABEL_COMPONENT, ""),
            spec_hash=labels.get(LABEL_SPEC_HASH),
            finished=is_finished(job),
            deleting=bool(metadata.get("deletionTimestamp")),
        )

    @property
    def active(self) -> bool:
        return self.component == builders.SPLIT and not self.finished and not self.deleting


class ClusterView(Protocol):
    """Reads served from the operator's watches (kopf indexes) instead of API calls, the way
    controllers read from informer caches. Misses are confirmed against the API."""

    def jobs_of(self, namespace: str, splitmodel: str) -> list[JobInfo]: ...

    def split_jobs(self) -> dict[tuple[str, str], JobInfo]: ...

    def has_claim(self, namespace: str, claim: str) -> bool: ...

    def writers_of(self, output: OutputKey) -> list[Writer]: ...


#: Stalls a user fixes outside the SplitModel (by creating a claim): retried on a timer.
WAITING_REASONS = Reason.waiting()
STATUS_WRITE_ATTEMPTS = 8


def _key(body: dict[str, Any]) -> tuple[str, str]:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class Reconciler:
    """The operator's logic; one per process, holding its API client and metrics."""

    def __init__(self, config: OperatorConfig, client: Client, metrics: Metrics) -> None:
        self.config = config
        self.client = client
        self.metrics = metrics
        self._slots = asyncio.Lock()  # counting and taking a Job slot is one atomic step
        # Jobs created by this process that the watch has not shown yet: they hold a slot.
        self._reserved: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    # ---------------------------------------------------------------- status and events

    async def write_status(
        self, namespace: str, name: str, transform: Transform, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Read-modify-write of `.status` with the resourceVersion as a precondition.

        The first attempt uses `body` when given (the handler's copy, usually current); a
        conflict re-reads the resource.
        """
        for _ in range(STATUS_WRITE_ATTEMPTS):
            if body is None:
                body = await self.client.get(SPLITMODELS, namespace, name)
            current = states.SplitModelStatus.from_dict(body.get("status"))
            new = transform(body, current)
            if new is None or new == current:
                return body
            patch = {
                "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                "status": new.to_dict(),
            }
            try:
                return await self.client.patch(SPLITMODELS, namespace, name, patch, "status")
            except ApiError as error:
                if error.status != 409:
                    raise
                body = None
        raise kopf.TemporaryError("the SplitModel keeps changing; will retry", delay=1)

    async def event(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Post an Event; losing one must never fail a reconciliation."""
        try:
            await self.client.create(
                EVENTS, body["metadata"]["namespace"],
                builders.build_event(body, kind, reason, message),
            )  # fmt: skip
        except ApiError as error:
            object_logger(body).warning("could not post the %s Event: %s", reason, error)

    async def stall(self, body: dict[str, Any], reason: Reason, message: str) -> None:
        """Ready=False, Stalled=True, lastFailure, a Warning Event (once per transition)."""
        namespace, name = _key(body)
        generation = int(body["metadata"].get("generation", 1))
        moment = states.now_rfc3339()
        before = states.SplitModelStatus.from_dict(body.get("status"))
        stalled = before.condition(states.STALLED)
        await self.write_status(
            namespace,
            name,
            lambda _, s: states.stalled(s, generation, reason, message, moment),
            body,
        )
        if not (stalled and stalled.status == states.TRUE and stalled.reason == reason):
            object_logger(body).warning("stalled: %s: %s", reason, message)
            self.metrics.failures.labels(reason).inc()
            await self.event(body, "Warning", reason, message)

    # ---------------------------------------------------------------- create / update / resume

    async def reconcile(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        """Bring the cluster to the spec: claims, then exactly one Job for this spec."""
        namespace, name = _key(body)
        async with self._locks[(namespace, name)]:
            await self._reconcile(body, logger, view)

    async def _reconcile(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        namespace, name = _key(body)
        generation = int(body["metadata"].get("generation", 1))
        try:
            spec = resolve_spec(body, self.config)
        except SpecError as error:
            self.metrics.reconciles.labels("invalid").inc()
            await self.stall(body, error.reason, str(error))
            raise kopf.PermanentError(f"{error.reason}: {error}") from None

        current = states.SplitModelStatus.from_dict(body.get("status"))
        if self._already_done(current, spec, generation):
            self.metrics.reconciles.labels("unchanged").inc()
            return

        await self._refuse_conflicts(body, spec, view)
        await self._ensure_claims(body, spec, view)
        job_name = builders.job_name(name, spec.spec_hash)
        jobs = view.jobs_of(namespace, name)
        existing = next((j for j in jobs if j.name == job_name), None)
        if existing is not None:  # a restart, or a spec reverted: adopt what exists
            logger.info("adopting Job %s", job_name)
            self.metrics.reconciles.labels("adopted").inc()
            await self._mark_reconciling(body, spec, job_name)
            if existing.finished:  # it finished while no operator was watching
                job = await self.client.get(JOBS, namespace, job_name)
                await self._record_locked(job, namespace, name)
            return

        await self._delete_jobs(
            [j for j in jobs if j.active and j.spec_hash != spec.spec_hash]
        )  # two writers must never race on the same files
        limit = self.config.server.max_models
        async with self._slots:
            known = view.split_jobs()
            self._reserved = {key for key in self._reserved if key not in known}
            running = sum(1 for job in known.values() if job.active) + len(self._reserved)
            if running >= limit:
                await self._queue(body, current, spec, running, limit)
            self._reserved.add((namespace, job_name))
        try:
            await self.client.create(
                JOBS, namespace, builders.build_split_job(body, spec, self.config)
            )
            created = True
        except ApiError as error:
            if error.status != 409:
                self._reserved.discard((namespace, job_name))
                raise
            created = False  # it exists after all: adopt it, never duplicate it
        # The Job's completion is recorded under this object's lock, which this reconcile
        # holds: however fast the Job, Reconciling is written before its result.
        await asyncio.gather(
            self._mark_reconciling(body, spec, job_name),
            self.event(
                body, "Normal", EventReason.JOB_CREATED,
                f"Job {job_name} splits {spec.model_path} at {spec.split_config}",
            ),
        )  # fmt: skip
        self.metrics.set_queued((namespace, name), False)
        self.metrics.reconciles.labels("created" if created else "adopted").inc()
        logger.info("created Job %s for split %s", job_name, spec.split_config)

    async def _queue(
        self,
        body: dict[str, Any],
        current: SplitModelStatus,
        spec: ResolvedSpec,
        running: int,
        limit: int,
    ) -> None:
        """All slots are taken: report Queued (once) and retry soon."""
        namespace, name = _key(body)
        generation = int(body["metadata"].get("generation", 1))
        self.metrics.set_queued((namespace, name), True)
        self.metrics.reconciles.labels("queued").inc()
        moment = states.now_rfc3339()

        def wait(_: dict[str, Any], status: SplitModelStatus) -> SplitModelStatus:
            return states.queued(status, generation, spec.spec_hash, running, limit, moment)

        await self.write_status(namespace, name, wait, body)
        was_ready = current.condition(states.READY)
        if was_ready is None or was_ready.reason != Progress.QUEUED:
            await self.event(
                body, "Normal", EventReason.QUEUED,
                f"{running} of max_models={limit} split Jobs are running; waiting",
            )  # fmt: skip
        raise kopf.TemporaryError(
            f"queued: {running}/{limit} Jobs running",
            delay=self.config.extras.queue_retry_seconds,
        )

    async def _refuse_conflicts(
        self, body: dict[str, Any], spec: ResolvedSpec, view: ClusterView
    ) -> None:
        """Two SplitModels must never write the same files: the oldest keeps them."""
        namespace, name = _key(body)
        key = output_key(namespace, spec)
        writers = sorted(view.writers_of(key)) if key else []
        owner = writers[0] if writers else None
        if owner is None or owner.name == name:
            return
        wait = self.config.extras.wait_retry_seconds
        await self.stall(
            body, Reason.CONFLICT,
            f"SplitModel {owner.name} already writes {spec.storage_path}/*/{spec.model_id}_"
            f"{spec.split_config}_*.{spec.file_format} on claim {key[1] if key else ''}; "
            "change spec.modelId or spec.splitStorageConfig.storagePath (looked at again every "
            f"{wait:g}s)",
        )  # fmt: skip
        raise kopf.TemporaryError("conflict: another SplitModel writes these files", delay=wait)

    @staticmethod
    def _already_done(current: SplitModelStatus, spec: ResolvedSpec, generation: int) -> bool:
        """This spec's result is recorded (or it failed for good): nothing to redo."""
        if current.spec_hash != spec.spec_hash or current.observed_generation != generation:
            return False
        if current.is_true(states.READY):
            return True
        stalled = current.condition(states.STALLED)
        return (
            stalled is not None
            and stalled.status == states.TRUE
            and stalled.reason not in WAITING_REASONS
        )

    async def _mark_reconciling(
        self, body: dict[str, Any], spec: ResolvedSpec, job_name: str
    ) -> None:
        namespace, name = _key(body)
        generation = int(body["metadata"].get("generation", 1))
        moment = states.now_rfc3339()
        claim = spec.storage.name if spec.storage else None

        def transform(_: dict[str, Any], status: SplitModelStatus) -> SplitModelStatus | None:
            if (
                status.job_name == job_name
                and status.observed_generation == generation
                and (status.is_true(states.READY) or status.is_true(states.STALLED))
            ):
                return None  # its result is already in: do not go back to Reconciling
            return states.reconciling(status, generation, job_name, spec.spec_hash, claim, moment)

        await self.write_status(namespace, name, transform, body)

    async def _claim_exists(self, namespace: str, claim: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(PVCS, namespace, claim)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def _ensure_claims(
        self, body: dict[str, Any], spec: ResolvedSpec, view: ClusterView
    ) -> None:
        """Both claims must exist before the Job: a missing one leaves its pod Pending."""
        namespace, _ = _key(body)
        source = spec.source_claim
        if (
            source
            and not view.has_claim(namespace, source)
            and await self._claim_exists(namespace, source) is None
        ):
            await self._wait_for_claim(body, source, Reason.SOURCE_CLAIM_NOT_FOUND, "spec.source")
        if spec.storage is None:
            return
        if not spec.storage.create and view.has_claim(namespace, spec.storage.name):
            return
        existing = await self._claim_exists(namespace, spec.storage.name)
        if spec.storage.create:
            wanted = builders.build_pvc(body, spec)
            if existing is None:
                try:
                    await self.client.create(PVCS, namespace, wanted)
                    await self.event(
                        body,
                        "Normal",
                        EventReason.CLAIM_CREATED,
                        f"created PersistentVolumeClaim {spec.storage.name}",
                    )
                except ApiError as error:
                    if error.status != 409:
                        raise
            elif existing["metadata"].get("labels", {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
                await self.stall(
                    body, Reason.STORAGE_CLAIM_CONFLICT,
                    f"PersistentVolumeClaim {spec.storage.name} exists and was not created by "
                    "the operator; set spec.storage.claimName to use it",
                )  # fmt: skip
                raise kopf.PermanentError("the storage claim's name is taken")
            elif existing["metadata"].get("ownerReferences", []) != wanted["metadata"].get(
                "ownerReferences", []
            ):  # deletionPolicy changed: own the claim only under Delete
                await self.client.patch(
                    PVCS, namespace, spec.storage.name,
                    {"metadata": {"ownerReferences": wanted["metadata"].get("ownerReferences")}},
                )  # fmt: skip
        elif existing is None:
            await self._wait_for_claim(
                body, spec.storage.name, Reason.STORAGE_CLAIM_NOT_FOUND, "spec.storage"
            )

    async def _wait_for_claim(
        self, body: dict[str, Any], claim: str, reason: Reason, field: str
    ) -> None:
        """A missing claim is Stalled and looked for again: creating it is the fix."""
        namespace, _ = _key(body)
        wait = self.config.extras.wait_retry_seconds
        await self.stall(
            body, reason,
            f"PersistentVolumeClaim {claim} ({field}.claimName) does not exist in {namespace}; "
            f"create it, it is looked for again every {wait:g}s",
        )  # fmt: skip
        raise kopf.TemporaryError(f"waiting for claim {claim}", delay=wait)

    async def _delete_jobs(self, jobs: list[JobInfo]) -> None:
        for job in jobs:
            await self.client.delete(JOBS, job.namespace, job.name)
            self._reserved.discard((job.namespace, job.name))

    # ---------------------------------------------------------------- Jobs

    async def job_finished(self, job: dict[str, Any], logger: logging.Logger | Any) -> None:
        """A split Job finished: record its outcome in its SplitModel's status."""
        if job["metadata"].get("labels", {}).get(LABEL_COMPONENT) == builders.SPLIT:
            await self._record(job)

    async def resync(self, namespace: str, name: str, job_name: str, view: ClusterView) -> None:
        """A SplitModel still Reconciling: record its Job's result if the Job has finished,
        or run the reconcile again if the Job is gone (deleted by hand, say)."""
        info = next((j for j in view.jobs_of(namespace, name) if j.name == job_name), None)
        if info is None:
            body = await self.client.get(SPLITMODELS, namespace, name)
            await self.reconcile(body, object_logger(body), view)
            return
        if not info.finished:
            return
        job = await self.client.get(JOBS, namespace, info.name)
        async with self._locks[(namespace, name)]:
            await self._record_locked(job, namespace, name)

    async def _record(self, job: dict[str, Any]) -> None:
        namespace = job["metadata"]["namespace"]
        name = job["metadata"].get("labels", {}).get(LABEL_SPLITMODEL)
        owners = [
            o["name"] for o in job["metadata"].get("ownerReferences", []) if o.get("controller")
        ]
        name = owners[0] if owners else name
        if not name:
            return
        async with self._locks[(namespace, name)]:
            await self._record_locked(job, namespace, name)

    async def _record_locked(self, job: dict[str, Any], namespace: str, name: str) -> None:
        try:
            body = await self.client.get(SPLITMODELS, namespace, name)
        except ApiError as error:
            if error.status == 404:
                return
            raise
        if body["metadata"].get("deletionTimestamp"):
            return
        try:
            spec = resolve_spec(body, self.config)
        except SpecError:
            return
        job_name = job["metadata"]["name"]
        if job["metadata"].get("labels", {}).get(LABEL_SPEC_HASH) != spec.spec_hash:
            return  # a Job of an older spec: its result is not this spec's
        generation = int(body["metadata"].get("generation", 1))
        current = SplitModelStatus.from_dict(body.get("status"))
        if current.job_name == job_name and self._already_done(current, spec, generation):
            return  # recorded already (a replayed event after a restart)
        pods = await self.client.list(PODS, namespace, f"job-name={job_name}")
        limits = spec.resources.get("limits") or {}
        outcome = job_outcome(job, pods, limits.get("memory"))
        self._observe_duration(job, "succeeded" if outcome.succeeded else "failed")
        if not outcome.succeeded:
            await self.stall(body, outcome.reason or Reason.JOB_FAILED, outcome.message or "")
            return
        assert outcome.result is not None
        components, saved = outcome.result.components, outcome.result.saved
        checked = outcome.result.verification
        moment = states.now_rfc3339()

        def transform(_: dict[str, Any], status: SplitModelStatus) -> SplitModelStatus:
            marked = states.reconciling(
                status, generation, job_name, spec.spec_hash,
                spec.storage.name if spec.storage else None, moment,
            )  # fmt: skip
            return states.ready(marked, generation, components, saved, checked, moment)

        await self.write_status(namespace, name, transform)
        object_logger(body).info(
            "Job %s %s: %d components recorded", job_name,
            "succeeded" if saved else "planned", len(components),
        )  # fmt: skip
        if saved:
            for component in components:
                self.metrics.bytes_written.labels(component.name).inc(component.memory_bytes)
        await self.event(
            body, "Normal", EventReason.SUCCEEDED if saved else EventReason.PLANNED,
            f"split {spec.split_config} of {spec.model_path}: "
            + ", ".join(f"{c.name} layers [{c.start_layer},{c.end_layer})" for c in components),
        )  # fmt: skip

    def _observe_duration(self, job: dict[str, Any], result: str) -> None:
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
        if start and end:
            self.metrics.job_duration.labels(result).observe((end - start).total_seconds())

    # ---------------------------------------------------------------- delete

    async def delete(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        """Before the finalizer goes: stop running Jobs; with Delete, remove the files."""
        namespace, name = _key(body)
        self.metrics.set_queued((namespace, name), False)
        await self._delete_jobs([j for j in view.jobs_of(namespace, name) if j.active])
        try:
            spec = resolve_spec(body, self.config)
        except SpecError:
            return  # an invalid spec never wrote anything
        if spec.deletion_policy != "Delete" or spec.storage is None:
            logger.info("deletionPolicy %s: the components stay", spec.deletion_policy)
            return
        if await self._claim_exists(namespace, spec.storage.name) is None:
            return  # no volume, no files
        cleanup_name = builders.job_name(name, spec.spec_hash, builders.CLEANUP)
        try:
            job = await self.client.get(JOBS, namespace, cleanup_name)
        except ApiError as error:
            if error.status != 404:
                raise
            job = await self.client.create(
                JOBS, namespace, builders.build_cleanup_job(body, spec, self.config)
            )
            await self.event(
                body,
                "Normal",
                EventReason.CLEANUP_STARTED,
                f"Job {cleanup_name} removes the components",
            )
        if not is_finished(job):
            raise kopf.TemporaryError("waiting for the cleanup Job", delay=2)
        if not is_complete(job):
            await self.client.delete(JOBS, namespace, cleanup_name)  # a fresh try next time
            await self.stall(
                body, Reason.CLEANUP_FAILED,
                f"Job {cleanup_name} could not remove the components; retrying. Set "
                "deletionPolicy: Retain to delete the SplitModel and keep the files",
            )  # fmt: skip
            raise kopf.TemporaryError("the cleanup Job failed", delay=30)
        await self.event(body, "Normal", EventReason.CLEANED_UP, "the components were removed")
