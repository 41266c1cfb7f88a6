"""What the cluster holds, as the operator's watches show it (kopf indexes).

Reads are served from the indexes instead of API calls, the way controllers read from informer
caches; misses that matter are confirmed against the API by the caller. Every read here is
O(1) in the number of SplitModels and Jobs: a reconcile must never scan the cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from splitlearn_operator import builders
from splitlearn_operator.config import (
    ANNOTATION_APPLIED,
    ANNOTATION_SPLIT,
    ANNOTATION_TRUNK_SHA256,
    LABEL_COMPONENT,
    LABEL_SPEC_HASH,
    LABEL_SPLITMODEL,
    OperatorConfig,
)
from splitlearn_operator.outcome import is_finished
from splitlearn_operator.spec import ResolvedSpec, SpecError, resolve_spec
from splitlearn_operator.status import RECONCILING, TRUE, Progress

#: What identifies the files a spec writes: namespace, claim, folder, model id, split, format.
OutputKey = tuple[str, str, str, str, str, str]
#: A namespaced name: (namespace, name).
Ref = tuple[str, str]


@dataclass(frozen=True, order=True)
class Writer:
    """A SplitModel that writes a given set of files; the oldest one owns them."""

    created: str
    name: str


def output_key(namespace: str, spec: ResolvedSpec) -> OutputKey | None:
    """The files a spec writes, or None when it writes none (autoSave: false)."""
    if spec.storage is None:
        return None
    return (namespace, spec.storage.name, spec.storage_path, spec.model_id, spec.split_config,
            spec.file_format)  # fmt: skip


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
    def of(cls, job: Mapping[str, Any]) -> JobInfo:
        metadata = job["metadata"]
        labels = metadata.get("labels", {})
        return cls(
            namespace=metadata["namespace"],
            name=metadata["name"],
            component=labels.get(LABEL_COMPONENT, ""),
            spec_hash=labels.get(LABEL_SPEC_HASH),
            finished=is_finished(dict(job)),
            deleting=bool(metadata.get("deletionTimestamp")),
        )

    @property
    def active(self) -> bool:
        """A split Job that still runs: it holds one of the `max_models` slots."""
        return self.component == builders.SPLIT and not self.finished and not self.deleting


class ClusterView(Protocol):
    """The reads the reconciliation needs, each O(1)."""

    def jobs_of(self, namespace: str, splitmodel: str) -> list[JobInfo]: ...

    def running_jobs(self) -> int: ...

    def has_claim(self, namespace: str, claim: str) -> bool: ...

    def writers_of(self, output: OutputKey) -> list[Writer]: ...

    def reconciling(self) -> Iterator[tuple[Ref, str]]: ...

    def server_of(self, namespace: str, splitmodel: str) -> ServerInfo | None: ...

    def server_pods_of(self, namespace: str, splitmodel: str) -> list[ServerPod]: ...

    def unready_servers(self) -> Iterator[Ref]: ...


# ------------------------------------------------------------------ the indexes' functions
# kopf calls each index function of a resource on every watch event of it, at a cost per
# function well above the function's own: so one function per resource, O(1) each. They
# return `{}`, never None, for "nothing": kopf keeps an object's old entries on None.

#: Every running split Job is also indexed under this key: their number is one store's size.
RUNNING = "running-split-jobs"
#: Every SplitModel waiting for a Job's result is also indexed under this key.
RECONCILING_KEY = "reconciling"


@dataclass(frozen=True)
class Waiting:
    """A SplitModel whose status says a Job is working on it."""

    namespace: str
    name: str
    job_name: str


def index_job(job: Mapping[str, Any]) -> dict[Any, JobInfo]:
    """Our Jobs, by (namespace, SplitModel); the running split Jobs under `RUNNING` too."""
    info = JobInfo.of(job)
    splitmodel = job["metadata"].get("labels", {}).get(LABEL_SPLITMODEL)
    entries: dict[Any, JobInfo] = {(info.namespace, splitmodel): info}
    if info.active:
        entries[RUNNING] = info
    return entries


def index_claim(namespace: str | None, name: str) -> dict[Any, None]:
    """Which claims exist, by (namespace, name)."""
    return {(namespace, name): None}


def index_splitmodel(body: Mapping[str, Any], config: OperatorConfig) -> dict[Any, Any]:
    """The files a SplitModel writes (by `OutputKey` -> `Writer`, to refuse a second writer
    of the same files), and under `RECONCILING_KEY` a `Waiting` when a Job works on it."""
    metadata = body.get("metadata", {})
    namespace, name = str(metadata.get("namespace")), str(metadata.get("name"))
    entries: dict[Any, Any] = {}
    status = body.get("status") or {}
    conditions = status.get("conditions") or []
    if status.get("jobName") and any(
        c.get("type") == RECONCILING and c.get("status") == TRUE
        and c.get("reason") != Progress.ROLLING_OUT  # waiting for its server, not a Job
        for c in conditions
    ):  # fmt: skip
        entries[RECONCILING_KEY] = Waiting(namespace, name, str(status["jobName"]))
    try:
        key = output_key(namespace, resolve_spec(dict(body), config))
    except SpecError:
        key = None  # an invalid spec writes nothing
    if key is not None:
        entries[key] = Writer(str(metadata.get("creationTimestamp", "")), name)
    return entries


#: Every trunk server Deployment not yet rolled out is also indexed under this key.
UNREADY_SERVERS = "unready-servers"


@dataclass(frozen=True)
class ServerInfo:
    """A trunk server's Deployment, as the watch shows it."""

    namespace: str
    splitmodel: str
    applied: str | None  # the hash of the manifests the operator last applied
    replicas: int  # wanted
    observed: bool  # the Deployment controller has seen the latest spec
    pods: int  # status.replicas: pods of every template
    updated: int
    ready: int
    trunk_sha256: str | None
    split_config: str | None
    failure: str | None  # Progressing=False or ReplicaFailure=True: the controller's message

    @classmethod
    def of(cls, deployment: Mapping[str, Any]) -> ServerInfo:
        metadata, spec = deployment["metadata"], deployment.get("spec") or {}
        status = deployment.get("status") or {}
        template = (spec.get("template") or {}).get("metadata") or {}
        annotations = template.get("annotations") or {}
        failure = next(
            (
                f"{c.get('reason', '')}: {c.get('message', '')}"
                for c in status.get("conditions") or []
                if (c.get("type"), c.get("status")) in (("Progressing", "False"),
                                                        ("ReplicaFailure", "True"))
            ),
            None,
        )  # fmt: skip
        return cls(
            namespace=metadata["namespace"],
            splitmodel=(metadata.get("labels") or {}).get(LABEL_SPLITMODEL, ""),
            applied=(metadata.get("annotations") or {}).get(ANNOTATION_APPLIED),
            replicas=int(spec.get("replicas", 1)),
            observed=int(status.get("observedGeneration", 0)) >= int(metadata.get("generation", 1)),
            pods=int(status.get("replicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            ready=int(status.get("readyReplicas", 0)),
            trunk_sha256=annotations.get(ANNOTATION_TRUNK_SHA256),
            split_config=annotations.get(ANNOTATION_SPLIT),
            failure=failure,
        )

    @property
    def rolled_out(self) -> bool:
        """kstatus's rule for a Deployment: observed, all updated, all ready, no old pods."""
        return (
            self.observed and self.updated == self.replicas
            and self.ready == self.replicas and self.pods == self.replicas
        )  # fmt: skip


@dataclass(frozen=True)
class ServerPod:
    """One pod of a trunk server, as the watch shows it."""

    name: str
    ready: bool
    trunk_sha256: str | None
    waiting_reason: str | None  # e.g. CrashLoopBackOff, ImagePullBackOff, ContainerCreating
    message: str  # the waiting message, or the last termination's message when it has one
    deleting: bool
    restarts: int = 0
    last_exit_code: int | None = None  # of the container's previous run

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> ServerPod:
        metadata, status = pod["metadata"], pod.get("status") or {}
        containers = status.get("containerStatuses") or [{}]
        waiting = (containers[0].get("state") or {}).get("waiting") or {}
        last = (containers[0].get("lastState") or {}).get("terminated") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        return cls(
            name=metadata["name"],
            ready=ready,
            trunk_sha256=(metadata.get("annotations") or {}).get(ANNOTATION_TRUNK_SHA256),
            waiting_reason=waiting.get("reason")
            or ("ContainerCreating" if status.get("phase", "Pending") == "Pending" else None),
            message=str(last.get("message") or waiting.get("message") or ""),
            deleting=bool(metadata.get("deletionTimestamp")),
            restarts=int(containers[0].get("restartCount", 0)),
            last_exit_code=last.get("exitCode"),
        )

    @property
    def crash_looping(self) -> bool:
        """Backing off after a crash, or starting again after more than one: between two
        crashes a container is briefly running, and that must not read as recovered."""
        if self.waiting_reason == "CrashLoopBackOff":
            return True
        return not self.ready and self.restarts >= 2 and self.last_exit_code not in (None, 0)


def index_server(deployment: Mapping[str, Any]) -> dict[Any, ServerInfo]:
    """Trunk server Deployments by (namespace, SplitModel); unready ones under a key too."""
    info = ServerInfo.of(deployment)
    entries: dict[Any, ServerInfo] = {(info.namespace, info.splitmodel): info}
    if not deployment["metadata"].get("deletionTimestamp") and not info.rolled_out:
        entries[UNREADY_SERVERS] = info
    return entries


def index_server_pod(pod: Mapping[str, Any]) -> dict[Any, ServerPod]:
    """Trunk server pods by (namespace, SplitModel)."""
    metadata = pod["metadata"]
    splitmodel = (metadata.get("labels") or {}).get(LABEL_SPLITMODEL, "")
    return {(metadata["namespace"], splitmodel): ServerPod.of(pod)}


class IndexView:
    """`ClusterView` over kopf's indexes (live objects: built once, always current)."""

    def __init__(self, indexes: Mapping[str, Any]) -> None:
        """`indexes`: by the names kopf passes them under, the decorated functions' names."""
        self._jobs = indexes["jobs_index"]
        self._claims = indexes["claims_index"]
        self._splitmodels = indexes["splitmodels_index"]
        self._servers = indexes["servers_index"]
        self._server_pods = indexes["server_pods_index"]

    def jobs_of(self, namespace: str, splitmodel: str) -> list[JobInfo]:
        return list(self._jobs.get((namespace, splitmodel), []))

    def running_jobs(self) -> int:
        return len(self._jobs.get(RUNNING, ()))

    def has_claim(self, namespace: str, claim: str) -> bool:
        return (namespace, claim) in self._claims

    def writers_of(self, output: OutputKey) -> list[Writer]:
        return list(self._splitmodels.get(output, []))

    def reconciling(self) -> Iterator[tuple[Ref, str]]:
        """Every (SplitModel, Job name) waiting for a Job's result (a copy: safe to await)."""
        waiting = list(self._splitmodels.get(RECONCILING_KEY, ()))
        return iter([((w.namespace, w.name), w.job_name) for w in waiting])

    def server_of(self, namespace: str, splitmodel: str) -> ServerInfo | None:
        return next(iter(self._servers.get((namespace, splitmodel), [])), None)

    def server_pods_of(self, namespace: str, splitmodel: str) -> list[ServerPod]:
        return list(self._server_pods.get((namespace, splitmodel), []))

    def unready_servers(self) -> Iterator[Ref]:
        """Every SplitModel whose server is not rolled out (a copy: safe to await)."""
        unready = list(self._servers.get(UNREADY_SERVERS, ()))
        return iter([(info.namespace, info.splitmodel) for info in unready])
