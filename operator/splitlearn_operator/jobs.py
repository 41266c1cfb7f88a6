"""From a SplitModel to its split Job: claims, then exactly one Job for the spec, within
`max_models` slots.

Level-driven and idempotent: every decision (`decisions.decide`) is taken from what is in the
cluster (the resource, its claims, its Jobs), never from memory, so a restarted operator
resumes where the cluster is. The one exception is `Slots`: Jobs this process has just
created and the watch has not shown yet, which must hold their slots in between.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from splitcore.result import Reason
from splitlearn_operator import builders
from splitlearn_operator import status as states
from splitlearn_operator.api import JOBS, ApiError
from splitlearn_operator.claims import Claims
from splitlearn_operator.context import Context, generation_of, key_of
from splitlearn_operator.decisions import (
    Adopt,
    ClaimTaken,
    Conflict,
    Create,
    Decision,
    Done,
    Observed,
    Queue,
    WaitForClaim,
    decide,
    is_done,
)
from splitlearn_operator.record import Recorder
from splitlearn_operator.spec import ResolvedSpec, SpecError, resolve_spec
from splitlearn_operator.status import EventReason, Progress, SplitModelStatus
from splitlearn_operator.view import ClusterView, JobInfo, output_key

#: Unseen Jobs are checked against the watch once their number doubles (O(1) amortised).
PRUNE_FLOOR = 16


class Slots:
    """Split Jobs holding one of the `max_models` slots: the running ones the watch shows,
    plus those this process created that the watch has not shown yet."""

    def __init__(self) -> None:
        self._unseen: set[tuple[str, str, str]] = set()  # (namespace, SplitModel, Job)
        self._prune_at = PRUNE_FLOOR

    def count(self, view: ClusterView, limit: int) -> int:
        """Exact from the limit up. Below it a Job both unseen and seen may count twice,
        which cannot change a decision; so the unseen are pruned only then, or when they
        have doubled."""
        if view.running_jobs() + len(self._unseen) >= limit or len(self._unseen) >= self._prune_at:
            self._unseen = {
                unseen for unseen in self._unseen
                if not any(job.name == unseen[2] for job in view.jobs_of(*unseen[:2]))
            }  # fmt: skip
            self._prune_at = max(PRUNE_FLOOR, 2 * len(self._unseen))
        return view.running_jobs() + len(self._unseen)

    def take(self, namespace: str, splitmodel: str, job: str) -> None:
        self._unseen.add((namespace, splitmodel, job))

    def release(self, namespace: str, splitmodel: str, job: str) -> None:
        self._unseen.discard((namespace, splitmodel, job))


class JobStarter:
    """Creates, adopts or queues a SplitModel's split Job, and stops those of older specs."""

    def __init__(self, context: Context, recorder: Recorder) -> None:
        self.context = context
        self.recorder = recorder
        self.claims = Claims(context)
        self.slots = Slots()

    async def reconcile(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> Decision:
        """Bring the cluster to the spec: claims, then exactly one Job for this spec."""
        async with self.context.locks[key_of(body)]:
            spec = await self._valid_spec(body)
            status = SplitModelStatus.from_dict(body.get("status"))
            generation = generation_of(body)
            decision: Decision = Done()  # when the status says so, no need to read more
            # ...unless the generation moved without the spec hash (deletionPolicy, serving):
            # the claim's owners may have to follow.
            if (
                not is_done(status, spec.spec_hash, generation)
                or status.observed_generation != generation
            ):
                seen = await self._observe(body, spec, view)
                decision = decide(seen, spec, status, generation)
                if isinstance(decision, Create):  # no await since counting: take it now
                    self.slots.take(*key_of(body), decision.job_name)
            await self._carry_out(body, spec, decision, logger)
            return decision

    async def stop(self, splitmodel: str, jobs: list[JobInfo] | tuple[JobInfo, ...]) -> None:
        """Delete running Jobs (a new spec, or the SplitModel is going)."""
        for job in jobs:
            await self.context.client.delete(JOBS, job.namespace, job.name)
            self.slots.release(job.namespace, splitmodel, job.name)

    async def _valid_spec(self, body: dict[str, Any]) -> ResolvedSpec:
        try:
            return resolve_spec(body, self.context.config)
        except SpecError as error:
            self.context.metrics.reconciles.labels("invalid").inc()
            await self.context.stall(body, error.reason, str(error))
            raise kopf.PermanentError(f"{error.reason}: {error}") from None

    async def _observe(
        self, body: dict[str, Any], spec: ResolvedSpec, view: ClusterView
    ) -> Observed:
        """Claims first (they may need the API), then the view's answers, which need none:
        nothing can change between the count of running Jobs and the decision."""
        namespace, name = key_of(body)
        source = not spec.source_claim or await self.claims.exists(
            view, namespace, spec.source_claim
        )
        storage = await self.claims.storage_state(body, spec, view)
        output = output_key(namespace, spec)
        limit = self.context.config.server.max_models
        return Observed(
            name=name,
            jobs=tuple(view.jobs_of(namespace, name)),
            writers=tuple(view.writers_of(output)) if output else (),
            source_claim=source,
            storage_claim=storage,
            running=self.slots.count(view, limit),
            limit=limit,
        )

    async def _carry_out(
        self, body: dict[str, Any], spec: ResolvedSpec, decision: Decision, logger: Any
    ) -> None:
        match decision:
            case Done():
                await self.claims.fix(body, spec, decision.claim_fix)
                self.context.metrics.reconciles.labels("unchanged").inc()
            case Conflict():
                await self._refuse_conflict(body, spec, decision)
            case WaitForClaim() | ClaimTaken():
                await self.claims.refuse(body, decision)
            case Adopt():
                await self._adopt(body, spec, decision, logger)
            case Queue():
                await self.claims.fix(body, spec, decision.claim_fix)
                await self.stop(key_of(body)[1], decision.stale)
                await self._queue(body, spec, decision)
            case Create():
                await self._create(body, spec, decision, logger)

    async def _refuse_conflict(
        self, body: dict[str, Any], spec: ResolvedSpec, conflict: Conflict
    ) -> None:
        """Two SplitModels must never write the same files: the oldest keeps them."""
        wait = self.context.config.extras.wait_retry_seconds
        await self.context.retry_later(
            body, Reason.CONFLICT,
            f"SplitModel {conflict.owner.name} already writes {spec.storage_path}/*/"
            f"{spec.model_id}_{spec.split_config}_*.{spec.file_format} on claim "
            f"{conflict.claim}; change spec.modelId or spec.splitStorageConfig.storagePath "
            f"(looked at again every {wait:g}s)",
            wait, "conflict: another SplitModel writes these files",
        )  # fmt: skip

    async def _adopt(
        self, body: dict[str, Any], spec: ResolvedSpec, adopt: Adopt, logger: Any
    ) -> None:
        """A restart, or a spec reverted: follow the Job that exists."""
        await self.claims.fix(body, spec, adopt.claim_fix)
        logger.info("adopting Job %s", adopt.job.name)
        self.context.metrics.reconciles.labels("adopted").inc()
        await self._mark_reconciling(body, spec, adopt.job.name)
        if adopt.job.finished:  # it finished while no operator was watching
            namespace, name = key_of(body)
            job = await self.context.client.get(JOBS, namespace, adopt.job.name)
            await self.recorder.record_locked(job, namespace, name)

    async def _queue(self, body: dict[str, Any], spec: ResolvedSpec, queue: Queue) -> None:
        """All slots are taken: report Queued (once) and retry soon."""
        namespace, name = key_of(body)
        generation = generation_of(body)
        self.context.metrics.set_queued((namespace, name), True)
        self.context.metrics.reconciles.labels("queued").inc()
        moment = states.now_rfc3339()
        spec_hash, running, limit = spec.spec_hash, queue.running, queue.limit

        def wait(_: dict[str, Any], status: SplitModelStatus) -> SplitModelStatus:
            return states.queued(status, generation, spec_hash, running, limit, moment)

        before = SplitModelStatus.from_dict(body.get("status")).condition(states.READY)
        await self.context.write_status(namespace, name, wait, body)
        if before is None or before.reason != Progress.QUEUED:
            await self.context.event(
                body, "Normal", EventReason.QUEUED,
                f"{running} of max_models={limit} split Jobs are running; waiting",
            )  # fmt: skip
        raise kopf.TemporaryError(
            f"queued: {running}/{limit} Jobs running",
            delay=self.context.config.extras.queue_retry_seconds,
        )

    async def _create(
        self, body: dict[str, Any], spec: ResolvedSpec, create: Create, logger: Any
    ) -> None:
        """Create the Job in the slot the decision took (given back if this fails)."""
        namespace, name = key_of(body)
        try:
            await self.claims.fix(body, spec, create.claim_fix)
            await self.stop(name, create.stale)  # two writers must never race on the files
            created = await self._create_job(body, spec)
        except BaseException:
            self.slots.release(namespace, name, create.job_name)
            raise
        # The Job's completion is recorded under this object's lock, which this reconcile
        # holds: however fast the Job, Reconciling is written before its result.
        await asyncio.gather(
            self._mark_reconciling(body, spec, create.job_name),
            self.context.event(
                body, "Normal", EventReason.JOB_CREATED,
                f"Job {create.job_name} splits {spec.model_path} at {spec.split_config}",
            ),
        )  # fmt: skip
        self.context.metrics.set_queued((namespace, name), False)
        self.context.metrics.reconciles.labels("created" if created else "adopted").inc()
        logger.info("created Job %s for split %s", create.job_name, spec.split_config)

    async def _create_job(self, body: dict[str, Any], spec: ResolvedSpec) -> bool:
        """True when created; False when it exists already (adopted, never duplicated)."""
        job = builders.build_split_job(body, spec, self.context.config)
        try:
            await self.context.client.create(JOBS, job["metadata"]["namespace"], job)
        except ApiError as error:
            if error.status != 409:
                raise
            return False
        return True

    async def _mark_reconciling(
        self, body: dict[str, Any], spec: ResolvedSpec, job_name: str
    ) -> None:
        namespace, name = key_of(body)
        generation = generation_of(body)
        moment = states.now_rfc3339()
        spec_hash = spec.spec_hash
        claim = spec.storage.name if spec.storage else None

        def transform(_: dict[str, Any], status: SplitModelStatus) -> SplitModelStatus | None:
            if (
                status.job_name == job_name
                and status.observed_generation == generation
                and (status.is_true(states.READY) or status.is_true(states.STALLED))
            ):
                return None  # its result is already in: do not go back to Reconciling
            return states.reconciling(status, generation, job_name, spec_hash, claim, moment)

        await self.context.write_status(namespace, name, transform, body)
