"""The kopf handlers: thin, each one line into `reconcile.Reconciler`.

Importing this module registers them with kopf; `__main__` then runs kopf standalone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kopf

from splitlearn_operator.config import (
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_SPLITMODEL,
    MANAGED_BY,
    PLURAL,
    VERSION,
    OperatorConfig,
)
from splitlearn_operator.metrics import Metrics
from splitlearn_operator.outcome import is_finished
from splitlearn_operator.reconcile import (
    JobInfo,
    OutputKey,
    Reconciler,
    Writer,
    output_key,
)
from splitlearn_operator.spec import SpecError, resolve_spec

SPLITMODELS = (GROUP, VERSION, PLURAL)


def configure_kopf(
    settings: kopf.OperatorSettings, config: OperatorConfig, namespaced: bool
) -> None:
    """kopf's settings from the operator's configuration."""
    extras = config.extras
    # Watching given namespaces needs no cluster-wide scan of namespaces and CRDs (and so no
    # cluster-scoped RBAC at all); all namespaces does, to serve CRDs installed later.
    settings.scanning.disabled = namespaced
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Progress and diff-base in annotations under our prefix: a structural schema would prune
    # them from status, and handler return values are never written (handlers return None).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # we post our own Events, once per transition
    # max_workers caps the resources handled at once. kopf keeps a finished object's worker
    # (and its slot) for idle_timeout waiting for more events: release slots quickly.
    settings.batching.worker_limit = config.server.max_workers
    settings.batching.idle_timeout = 0.5
    settings.watching.server_timeout = extras.watch_server_timeout_seconds
    settings.watching.client_timeout = extras.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    config: OperatorConfig = memo.config
    configure_kopf(settings, config, namespaced=memo.namespaced)
    memo.metrics = Metrics()
    if config.server.enable_monitoring:
        memo.metrics.serve(config.server.metrics_port, config.server.host)
    memo.reconciler = Reconciler(config, memo.client, memo.metrics)
    memo.last_api_check = 0.0
    memo.resync = asyncio.create_task(resync_forever(memo, _view(memo, kwargs)))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.cancel()
    await memo.client.close()


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own in-cluster or kubeconfig login, shared with the operator's client."""
    connection = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if connection is not None:
        memo.client.set_connection(connection)
    return connection


@kopf.on.probe(id="api")
async def api_reachable(memo: kopf.Memo, **_: Any) -> str:
    """Liveness: the API answers. Checked at most every `health_check_interval` seconds."""
    now = time.monotonic()
    if now - memo.last_api_check >= memo.config.server.health_check_interval:
        await memo.client.version()
        memo.last_api_check = now
    return "ok"


@kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
def split_jobs_index(body: kopf.Body, labels: kopf.Labels, **_: Any) -> dict[Any, JobInfo]:
    """Our Jobs, by (namespace, SplitModel), kept current by the watch."""
    info = JobInfo.of(dict(body))
    return {(info.namespace, labels.get(LABEL_SPLITMODEL)): info}


@kopf.index("", "v1", "persistentvolumeclaims")
def claims_index(namespace: str | None, name: str, **_: Any) -> dict[Any, None]:
    """Which claims exist, so a reconcile does not ask the API for each one."""
    return {(namespace, name): None}


@kopf.index(*SPLITMODELS)
def outputs_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, Writer] | None:
    """Which SplitModels write which files, to refuse a second writer of the same files."""
    metadata = body.get("metadata", {})
    try:
        spec = resolve_spec(dict(body), memo.config)
    except SpecError:
        return None
    key = output_key(str(metadata.get("namespace")), spec)
    if key is None:
        return None
    return {key: Writer(str(metadata.get("creationTimestamp", "")), str(metadata.get("name")))}


class IndexView:
    """`reconcile.ClusterView` over kopf's indexes."""

    def __init__(
        self,
        jobs: kopf.Index[Any, JobInfo],
        claims: kopf.Index[Any, None],
        outputs: kopf.Index[Any, Writer],
        reconciling: kopf.Index[Any, str],
    ) -> None:
        self._jobs = jobs
        self._claims = claims
        self._outputs = outputs
        self.reconciling = reconciling

    def jobs_of(self, namespace: str, splitmodel: str) -> list[JobInfo]:
        return list(self._jobs.get((namespace, splitmodel), []))

    def split_jobs(self) -> dict[tuple[str, str], JobInfo]:
        return {
            (job.namespace, job.name): job
            for store in self._jobs.values()
            for job in store
            if job.component == "split"
        }

    def has_claim(self, namespace: str, claim: str) -> bool:
        return (namespace, claim) in self._claims

    def writers_of(self, output: OutputKey) -> list[Writer]:
        return list(self._outputs.get(output, []))

    def running_jobs(self) -> int:
        return sum(1 for job in self.split_jobs().values() if job.active)


def _view(memo: kopf.Memo, kwargs: dict[str, Any]) -> IndexView:
    """kopf passes every index to handlers as a keyword argument named after it; the
    running-Jobs gauge reads the same live index."""
    view = IndexView(
        kwargs["split_jobs_index"],
        kwargs["claims_index"],
        kwargs["outputs_index"],
        kwargs["reconciling_index"],
    )
    memo.metrics.count_running = view.running_jobs
    return view


@kopf.on.resume(*SPLITMODELS, id="resume")
@kopf.on.create(*SPLITMODELS, id="create")
@kopf.on.update(*SPLITMODELS, id="update", field="spec")
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
    await memo.reconciler.reconcile(dict(body), logger, _view(memo, kwargs))


def _removes_files(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


# Only `deletionPolicy: Delete` needs work before the resource goes, so only those resources
# carry the finalizer: a Retain resource never waits on the operator (its Jobs go by GC).
@kopf.on.delete(*SPLITMODELS, id="delete", when=_removes_files)
async def delete(body: kopf.Body, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
    await memo.reconciler.delete(dict(body), logger, _view(memo, kwargs))


@kopf.index(*SPLITMODELS)
def reconciling_index(
    namespace: str | None, name: str, status: kopf.Status, **_: Any
) -> dict[Any, str] | None:
    """SplitModels waiting for a Job, by (namespace, name) -> the Job's name."""
    conditions = status.get("conditions") or []
    waiting = any(c.get("type") == "Reconciling" and c.get("status") == "True" for c in conditions)
    job_name = status.get("jobName")
    return {(namespace, name): str(job_name)} if waiting and job_name else None


async def resync_forever(memo: kopf.Memo, view: IndexView) -> None:
    """One loop for the whole operator (a timer per object costs more than it is worth):
    every `resync_seconds`, a Reconciling SplitModel whose Job has finished gets its result, in
    case the Job's event was lost (a dropped watch, an API error while recording)."""
    while True:
        await asyncio.sleep(memo.config.extras.resync_seconds)
        for (namespace, name), job_names in list(view.reconciling.items()):
            for job_name in job_names:
                try:
                    await memo.reconciler.resync(namespace, name, job_name, view)
                except (kopf.TemporaryError, kopf.PermanentError):
                    pass  # already reported in its status; kopf's handlers retry it
                except Exception:  # one resource's trouble must not stop the loop
                    logging.getLogger(__name__).exception("resync of %s/%s failed", namespace, name)


def _finished(body: kopf.Body, **_: Any) -> bool:
    return is_finished(dict(body))


# Only finished Jobs need handling; running ones are followed through the index.
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY}, when=_finished)
async def job_finished(body: kopf.Body, memo: kopf.Memo, logger: Any, **kwargs: Any) -> None:
    _view(memo, kwargs)
    await memo.reconciler.job_finished(dict(body), logger)
