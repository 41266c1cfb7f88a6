"""The kopf handlers: thin, each one line into `reconcile.Reconciler`.

Importing this module registers them with kopf; `__main__` then runs kopf standalone.
"""

from __future__ import annotations

import time
from typing import Any

import kopf

from splitlearn_operator.config import (
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
    OperatorConfig,
)
from splitlearn_operator.metrics import Metrics
from splitlearn_operator.reconcile import Reconciler

SPLITMODELS = (GROUP, VERSION, PLURAL)


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """kopf's settings from the operator's configuration."""
    extras = config.extras
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Progress and diff-base in annotations under our prefix: a structural schema would prune
    # them from status, and handler return values are never written (handlers return None).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.enabled = False  # we post our own Events, once per transition
    settings.batching.worker_limit = config.server.max_workers
    settings.watching.server_timeout = extras.watch_server_timeout_seconds
    settings.watching.client_timeout = extras.watch_client_timeout_seconds
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorConfig = memo.config
    configure_kopf(settings, config)
    memo.metrics = Metrics()
    if config.server.enable_monitoring:
        memo.metrics.serve(config.server.metrics_port, config.server.host)
    memo.reconciler = Reconciler(config, memo.client, memo.metrics, memo.namespaces)
    memo.last_api_check = 0.0


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
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


@kopf.on.resume(*SPLITMODELS, id="resume")
@kopf.on.create(*SPLITMODELS, id="create")
@kopf.on.update(*SPLITMODELS, id="update", field="spec")
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await memo.reconciler.reconcile(dict(body), logger)


@kopf.on.delete(*SPLITMODELS, id="delete")
async def delete(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await memo.reconciler.delete(dict(body), logger)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def job_changed(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    await memo.reconciler.job_event(dict(body), logger)
