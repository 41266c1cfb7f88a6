"""The operator's verbs behind one object, for the handlers: start a SplitModel's Job
(`jobs`), record a finished one (`record`), run its trunk server (`serving`), clean up on
deletion (`cleanup`), and resync what a lost watch event left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

import kopf

from splitlearn_operator.api import JOBS, SPLITMODELS, Client
from splitlearn_operator.cleanup import Cleanup
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.context import Context, key_of, object_logger
from splitlearn_operator.decisions import Done
from splitlearn_operator.jobs import JobStarter
from splitlearn_operator.metrics import Metrics
from splitlearn_operator.outcome import is_finished
from splitlearn_operator.record import Recorder
from splitlearn_operator.serving import Serving
from splitlearn_operator.spec import SpecError, resolve_spec
from splitlearn_operator.view import ClusterView

LOGGER = logging.getLogger(__name__)


class Reconciler:
    """One per process."""

    def __init__(
        self, config: OperatorConfig, client: Client, metrics: Metrics, view: ClusterView
    ) -> None:
        self.context = Context(config, client, metrics)
        self.serving = Serving(self.context, view)
        self.recorder = Recorder(self.context, self.serving)
        self.jobs = JobStarter(self.context, self.recorder)
        self.cleanup = Cleanup(self.context, self.jobs, self.serving)
        self._recording: set[asyncio.Task[None]] = set()
        self._serving_soon: set[tuple[str, str]] = set()  # server syncs scheduled, not begun
        # max_workers bounds the resources handled at once: reconciles, deletions and Jobs
        # being recorded. (kopf's own worker_limit would deadlock its start-up indexing when a
        # watched kind has more objects than the limit: nolar/kopf#1243.)
        self._workers = asyncio.Semaphore(config.server.max_workers)

    async def reconcile(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        async with self._workers:
            decision = await self.jobs.reconcile(body, logger, view)
            if isinstance(decision, Done):  # nothing written: `body` is current
                async with self.context.locks[key_of(body)]:
                    await self.serving.sync(body)
            elif self._serves(body):
                await self._sync_server(*key_of(body))

    async def delete(
        self, body: dict[str, Any], logger: logging.Logger | Any, view: ClusterView
    ) -> None:
        async with self._workers:
            await self.cleanup.delete(body, logger, view)

    def _serves(self, body: dict[str, Any]) -> bool:
        try:
            return self.serving.concerns(body, resolve_spec(body, self.context.config))
        except SpecError:
            return False

    def server_seen(self, namespace: str, splitmodel: str) -> None:
        """A trunk server's Deployment or pod changed: sync its SplitModel soon, once for a
        burst of events (a sync scheduled and not yet begun covers the later ones)."""
        key = (namespace, splitmodel)
        if splitmodel and key not in self._serving_soon:
            self._serving_soon.add(key)
            self._background(self._sync_server_later(namespace, splitmodel))

    async def _sync_server_later(self, namespace: str, splitmodel: str) -> None:
        async with self._workers:
            self._serving_soon.discard((namespace, splitmodel))
            await self._sync_server(namespace, splitmodel)

    async def _sync_server(self, namespace: str, name: str) -> None:
        async with self.context.locks[(namespace, name)]:
            body = await self.context.live_splitmodel(namespace, name)
            if body is not None:
                await self.serving.sync(body)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, its errors logged (the resync loop looks again)."""
        task = asyncio.create_task(self._logged(work))
        self._recording.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._recording.discard)

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except (kopf.TemporaryError, kopf.PermanentError):
            pass  # already reported in its status; the resync loop looks again
        except Exception:  # as kopf did for event handlers: logged, never fatal
            LOGGER.exception("background work failed")

    def job_seen(self, job: Mapping[str, Any]) -> None:
        """Every event of our Jobs passes here (the Jobs index sees them all): a finished one
        has its result recorded, in the background. A kopf `on.event` handler would do the
        same at the price of kopf's change detection, a deep copy of the Job, per event."""
        if is_finished(dict(job)):
            self._background(self._record(dict(job)))

    async def _record(self, job: dict[str, Any]) -> None:
        async with self._workers:
            await self.recorder.job_finished(job)

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
        result, in case the Job's event was lost (a dropped watch, an API error), and a
        server not rolled out is looked at again (what keeps a pod waiting may be gone)."""
        while True:
            await asyncio.sleep(self.context.config.extras.resync_seconds)
            for namespace, name in view.unready_servers():  # e.g. a Secret created since
                self.server_seen(namespace, name)
            for (namespace, name), job_name in view.reconciling():
                try:
                    await self.resync(namespace, name, job_name, view)
                except (kopf.TemporaryError, kopf.PermanentError):
                    pass  # already reported in its status; kopf's handlers retry it
                except Exception:  # one resource's trouble must not stop the loop
                    LOGGER.exception("resync of %s/%s failed", namespace, name)
