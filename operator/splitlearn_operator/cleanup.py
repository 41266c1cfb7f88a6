"""Deleting a SplitModel: its running Jobs stop; under `deletionPolicy: Delete` its trunk
server goes first, then a cleanup Job removes the files before the finalizer goes (only
Delete resources carry it, so a Retain one never waits on the operator; its Jobs and server go
by garbage collection).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from splitcore.result import Reason
from splitlearn_operator import builders
from splitlearn_operator.api import JOBS, ApiError
from splitlearn_operator.claims import Claims
from splitlearn_operator.context import Context, key_of
from splitlearn_operator.jobs import JobStarter
from splitlearn_operator.outcome import is_complete, is_finished
from splitlearn_operator.serving import Serving
from splitlearn_operator.spec import ResolvedSpec, SpecError, resolve_spec
from splitlearn_operator.status import EventReason
from splitlearn_operator.view import ClusterView

#: How soon a finished-or-not cleanup Job is looked at again, and a failed one retried.
CLEANUP_POLL_SECONDS = 2
CLEANUP_RETRY_SECONDS = 30


class Cleanup:
    """What happens before a SplitModel goes."""

    def __init__(self, context: Context, jobs: JobStarter, serving: Serving) -> None:
        self.context = context
        self.jobs = jobs
        self.serving = serving
        self.claims = Claims(context)

    async def delete(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        """Stop running Jobs; with Delete, remove the files (the finalizer waits for it)."""
        namespace, name = key_of(body)
        self.context.metrics.set_queued((namespace, name), False)
        await self.jobs.stop(name, [job for job in view.jobs_of(namespace, name) if job.active])
        try:
            spec = resolve_spec(body, self.context.config)
        except SpecError:
            return  # an invalid spec never wrote anything
        if spec.deletion_policy != "Delete" or spec.storage is None:
            logger.info("deletionPolicy %s: the components stay", spec.deletion_policy)
            return
        if await self.claims.get(namespace, spec.storage.name) is None:
            return  # no volume, no files
        if not await self.serving.remove(body):  # never pull files from under a server
            raise kopf.TemporaryError(
                "waiting for the trunk server's pods to go", delay=CLEANUP_POLL_SECONDS
            )
        await self._remove_files(body, spec)

    async def _remove_files(self, body: dict[str, Any], spec: ResolvedSpec) -> None:
        """Run the cleanup Job to its end; a failed one is deleted, so the next try is fresh."""
        namespace, name = key_of(body)
        cleanup_name = builders.job_name(name, spec.spec_hash, builders.CLEANUP)
        try:
            job = await self.context.client.get(JOBS, namespace, cleanup_name)
        except ApiError as error:
            if error.status != 404:
                raise
            job = await self.context.client.create(
                JOBS, namespace, builders.build_cleanup_job(body, spec, self.context.config)
            )
            await self.context.event(
                body, "Normal", EventReason.CLEANUP_STARTED,
                f"Job {cleanup_name} removes the components",
            )  # fmt: skip
        if not is_finished(job):
            raise kopf.TemporaryError("waiting for the cleanup Job", delay=CLEANUP_POLL_SECONDS)
        if not is_complete(job):
            await self.context.client.delete(JOBS, namespace, cleanup_name)
            await self.context.retry_later(
                body, Reason.CLEANUP_FAILED,
                f"Job {cleanup_name} could not remove the components; retrying. Set "
                "deletionPolicy: Retain to delete the SplitModel and keep the files",
                CLEANUP_RETRY_SECONDS, "the cleanup Job failed",
            )  # fmt: skip
        await self.context.event(
            body, "Normal", EventReason.CLEANED_UP, "the components were removed"
        )
