"""The operator's verbs behind one object, for the handlers: start a SplitModel's Job
(`jobs`), record a finished one (`record`), clean up on deletion (`cleanup`), and resync what
a lost watch event left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from splitlearn_operator.api import JOBS, SPLITMODELS, Client
from splitlearn_operator.cleanup import Cleanup
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.context import Context, object_logger
from splitlearn_operator.jobs import JobStarter
from splitlearn_operator.metrics import Metrics
from splitlearn_operator.outcome import is_finished
from splitlearn_operator.record import Recorder
from splitlearn_operator.view import ClusterView

LOGGER = logging.getLogger(__name__)


class Reconciler:
    """One per process."""

    def __init__(self, config: OperatorConfig, client: Client, metrics: Metrics) -> None:
        self.context = Context(config, client, metrics)
        self.recorder = Recorder(self.context)
        self.jobs = JobStarter(self.context, self.recorder)
        self.cleanup = Cleanup(self.context, self.jobs)
        self._recording: set[asyncio.Task[None]] = set()
        # max_workers bounds the resources handled at once: reconciles, deletions and Jobs
        # being recorded. (kopf's own worker_limit would deadlock its start-up indexing when a
        # watched kind has more objects than the limit: nolar/kopf#1243.)
        self._workers = asyncio.Semaphore(config.server.max_workers)

    async def reconcile(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        async with self._workers:
            await self.jobs.reconcile(body, logger, view)

    async def delete(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        async with self._workers:
            await self.cleanup.delete(body, logger, view)

    def job_seen(self, job: Mapping[str, Any]) -> None:
        """Every event of our Jobs passes here (the Jobs index sees them all): a finished one
        has its result recorded, in the background. A kopf `on.event` handler would do the
        same at the price of kopf's change detection, a deep copy of the Job, per event."""
        if is_finished(dict(job)):
            task = asyncio.create_task(self._record(dict(job)))
            self._recording.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._recording.discard)

    async def _record(self, job: dict[str, Any]) -> None:
        try:
            async with self._workers:
                await self.recorder.job_finished(job)
        except (kopf.TemporaryError, kopf.PermanentError):
            pass  # already reported in its status; the resync loop looks again
        except Exception:  # as kopf did for event handlers: logged, never fatal
            LOGGER.exception("recording Job %s failed", job["metadata"].get("name"))

    async def resync(self, namespace: str, name: str, job_name: str, view: ClusterView) -> None:
        """A SplitModel still Reconciling: record its Job's result if the Job has finished,
        or run the reconcile again if the Job is gone (deleted by hand, say)."""
        info = next((j for j in view.jobs_of(namespace, name) if j.name == job_name), None)
        if info is None:
            body = await self.context.client.get(SPLITMODELS, namespace, name)
            await self.jobs.reconcile(body, object_logger(body), view)
        elif info.finished:
            job = await self.context.client.get(JOBS, namespace, info.name)
            async with self.context.locks[(namespace, name)]:
                await self.recorder.record_locked(job, namespace, name)

    async def resync_forever(self, view: ClusterView) -> None:
        """One loop for the whole operator (a timer per object costs more than it is worth):
        every `resync_seconds`, a Reconciling SplitModel whose Job has finished gets its
        result, in case the Job's event was lost (a dropped watch, an API error)."""
        while True:
            await asyncio.sleep(self.context.config.extras.resync_seconds)
            for (namespace, name), job_name in view.reconciling():
                try:
                    await self.resync(namespace, name, job_name, view)
                except (kopf.TemporaryError, kopf.PermanentError):
                    pass  # already reported in its status; kopf's handlers retry it
                except Exception:  # one resource's trouble must not stop the loop
                    LOGGER.exception("resync of %s/%s failed", namespace, name)
