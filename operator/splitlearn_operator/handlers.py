"""The kopf handlers: thin, each one or two lines into `reconcile.Reconciler` or `view`.

Importing this module registers them with kopf; `__main__` then runs kopf standalone.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from splitlearn_operator import view
from splitlearn_operator.config import (
    FINALIZER,
    GROUP,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
    OperatorConfig,
)
from splitlearn_operator.metrics import Metrics
from splitlearn_operator.reconcile import Reconciler
from splitlearn_operator.server_builders import SERVING
from splitlearn_operator.view import IndexView, JobInfo, ServerInfo, ServerPod

SPLITMODELS = (GROUP, VERSION, PLURAL)


def configure_kopf(
    settings: kopf.OperatorSettings, config: OperatorConfig, namespaced: bool
) -> None:
    """kopf's settings from the operator's configuration."""
    extras = config.extras
    # Watching given namespaces needs no cluster-wide scan of namespaces and CRDs (and so no
    # cluster-scoped RBAC at all); all namespaces does, to serve CRDs installed later.
    settings.scanning.disabled = namespaced
    settings.persistence.finalizer = FINALIZER
    # Progress and diff-base in annotations under our prefix: a structural schema would prune
    # them from status, and handler return values are never written (handlers return None).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # we post our own Events, once per transition
    # max_workers is the Reconciler's semaphore, not kopf's worker_limit (see Reconciler).
    # kopf keeps a finished object's worker for idle_timeout waiting for more events.
    settings.batching.idle_timeout = 0.5
    settings.watching.server_timeout = extras.watch_server_timeout_seconds
    settings.watching.client_timeout = extras.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """kopf passes every index to handlers under its function's name; they are live objects,
    so one view over them serves the whole process (and the running-Jobs gauge)."""
    config: OperatorConfig = memo.config
    configure_kopf(settings, config, namespaced=memo.namespaced)
    memo.metrics = Metrics()
    if config.server.enable_monitoring:
        memo.metrics.serve(config.server.metrics_port, config.server.host)
    memo.view = IndexView(kwargs)
    memo.metrics.count_running = memo.view.running_jobs
    memo.reconciler = Reconciler(config, memo.client, memo.metrics, memo.view)
    memo.last_api_check = 0.0
    memo.resync = asyncio.create_task(memo.reconciler.resync_forever(memo.view))


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


# Index functions are async although they never wait: kopf runs a sync handler in a thread
# pool, and a thread hop per watch event cost more than the whole indexing.
# The Jobs index is also where finished Jobs are noticed (`Reconciler.job_seen`).
@kopf.index("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def jobs_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, JobInfo]:
    memo.reconciler.job_seen(body)
    return view.index_job(body)


# The trunk servers (spec.serving): each change of their Deployments or pods re-syncs the
# SplitModel's serving status (`Reconciler.server_seen`), as finished Jobs are recorded above.
SERVERS = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: SERVING}


@kopf.index("apps", "v1", "deployments", labels=SERVERS)
async def servers_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, ServerInfo]:
    entries = view.index_server(body)
    key, info = next(iter(entries.items()))
    if not memo.reconciler.serving.knows(key, info):  # not the echo of our own write
        memo.reconciler.server_seen(*key)
    return entries


@kopf.index("", "v1", "pods", labels=SERVERS)
async def server_pods_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, ServerPod]:
    entries = view.index_server_pod(body)
    memo.reconciler.server_seen(*next(iter(entries)))
    return entries


@kopf.index("", "v1", "persistentvolumeclaims")
async def claims_index(namespace: str | None, name: str, **_: Any) -> dict[Any, None]:
    return view.index_claim(namespace, name)


@kopf.index(*SPLITMODELS)
async def splitmodels_index(body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, Any]:
    return view.index_splitmodel(body, memo.config)


@kopf.on.resume(*SPLITMODELS, id="resume")
@kopf.on.create(*SPLITMODELS, id="create")
@kopf.on.update(*SPLITMODELS, id="update", field="spec")
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await memo.reconciler.reconcile(dict(body), logger, memo.view)


def _removes_files(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("deletionPolicy") == "Delete"


# Only `deletionPolicy: Delete` needs work before the resource goes, so only those resources
# carry the finalizer: a Retain resource never waits on the operator (its Jobs go by GC).
@kopf.on.delete(*SPLITMODELS, id="delete", when=_removes_files)
async def delete(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await memo.reconciler.delete(dict(body), logger, memo.view)
