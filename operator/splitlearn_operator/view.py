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
    LABEL_COMPONENT,
    LABEL_SPEC_HASH,
    LABEL_SPLITMODEL,
    OperatorConfig,
)
from splitlearn_operator.outcome import is_finished
from splitlearn_operator.spec import ResolvedSpec, SpecError, resolve_spec
from splitlearn_operator.status import RECONCILING, TRUE

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
        c.get("type") == RECONCILING and c.get("status") == TRUE for c in conditions
    ):
        entries[RECONCILING_KEY] = Waiting(namespace, name, str(status["jobName"]))
    try:
        key = output_key(namespace, resolve_spec(dict(body), config))
    except SpecError:
        key = None  # an invalid spec writes nothing
    if key is not None:
        entries[key] = Writer(str(metadata.get("creationTimestamp", "")), name)
    return entries


class IndexView:
    """`ClusterView` over kopf's indexes (live objects: built once, always current)."""

    def __init__(self, indexes: Mapping[str, Any]) -> None:
        """`indexes`: by the names kopf passes them under, the decorated functions' names."""
        self._jobs = indexes["jobs_index"]
        self._claims = indexes["claims_index"]
        self._splitmodels = indexes["splitmodels_index"]

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
