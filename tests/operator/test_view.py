"""The indexes' functions, and `IndexView` over kopf's own index type as the watch moves."""

from __future__ import annotations

from typing import Any

import pytest
from kopf._core.engines.indexing import OperatorIndexer

from splitlearn_operator import builders, view
from splitlearn_operator.view import RECONCILING_KEY, RUNNING, IndexView, JobInfo, Waiting, Writer

CREATED = "2026-01-01T00:00:00Z"
OUTPUT = ("ml", "models", "/models", "gpt2-a", "2-10", "pt")


def job_body(
    name: str = "a", component: str = builders.SPLIT, *conditions: str, deleting: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "ml",
        "uid": f"uid-{name}",
        "labels": builders.labels("gpt2-a", component, "abc"),
    }
    if deleting:
        metadata["deletionTimestamp"] = CREATED
    status = {"conditions": [{"type": kind, "status": "True"} for kind in conditions]}
    return {"metadata": metadata, "status": status}


def reconciling(job_name: str, waiting: bool = True) -> dict[str, Any]:
    condition = {"type": "Reconciling", "status": "True" if waiting else "False"}
    return {"conditions": [condition], "jobName": job_name}


def test_a_running_split_job_is_also_indexed_as_running():
    info = JobInfo("ml", "a", builders.SPLIT, "abc", False, False)
    assert view.index_job(job_body()) == {("ml", "gpt2-a"): info, RUNNING: info}


@pytest.mark.parametrize(
    "body",
    [
        job_body("a", builders.SPLIT, "Complete"),
        job_body("a", builders.SPLIT, "Failed"),
        job_body("a", builders.SPLIT, deleting=True),
        job_body("a", builders.CLEANUP),
    ],
    ids=["complete", "failed", "deleting", "cleanup"],
)
def test_other_jobs_are_indexed_by_splitmodel_only(body):
    assert list(view.index_job(body)) == [("ml", "gpt2-a")]


def test_a_splitmodel_is_indexed_by_the_files_it_writes_and_while_a_job_works(body, config):
    body["metadata"]["creationTimestamp"] = CREATED
    assert view.index_splitmodel(body, config) == {OUTPUT: Writer(CREATED, "gpt2-a")}
    body["status"] = reconciling("gpt2-a-123")
    assert view.index_splitmodel(body, config) == {
        OUTPUT: Writer(CREATED, "gpt2-a"),
        RECONCILING_KEY: Waiting("ml", "gpt2-a", "gpt2-a-123"),
    }
    body["status"] = reconciling("gpt2-a-123", waiting=False)
    assert list(view.index_splitmodel(body, config)) == [OUTPUT]


def test_a_splitmodel_writing_nothing_has_no_output(body, config):
    body["spec"]["splitStorageConfig"]["autoSave"] = False
    # `{}`, never None: kopf keeps an object's old entries when its function returns None.
    assert view.index_splitmodel(body, config) == {}
    body["spec"]["modelType"] = "no-such-family"
    body["status"] = reconciling("j")
    assert view.index_splitmodel(body, config) == {RECONCILING_KEY: Waiting("ml", "gpt2-a", "j")}


def test_the_view_follows_the_watch(body, config):
    indexers = {name: OperatorIndexer() for name in ("jobs_index", "claims_index",
                                                      "splitmodels_index", "servers_index",
                                                      "server_pods_index")}  # fmt: skip
    cluster = IndexView({name: indexer.index for name, indexer in indexers.items()})
    jobs, splitmodels = indexers["jobs_index"], indexers["splitmodels_index"]
    for name in ("a", "b"):
        jobs.replace(("ml", name, f"uid-{name}"), view.index_job(job_body(name)))
    assert cluster.running_jobs() == 2
    assert [job.name for job in cluster.jobs_of("ml", "gpt2-a")] == ["a", "b"]
    jobs.replace(("ml", "a", "uid-a"), view.index_job(job_body("a", builders.SPLIT, "Complete")))
    assert cluster.running_jobs() == 1
    assert len(cluster.jobs_of("ml", "gpt2-a")) == 2

    body["status"] = reconciling("a")
    splitmodels.replace(("ml", "gpt2-a", "uid"), view.index_splitmodel(body, config))
    assert list(cluster.reconciling()) == [(("ml", "gpt2-a"), "a")]
    assert [w.name for w in cluster.writers_of(OUTPUT)] == ["gpt2-a"]
    body["status"] = reconciling("a", waiting=False)
    splitmodels.replace(("ml", "gpt2-a", "uid"), view.index_splitmodel(body, config))
    assert list(cluster.reconciling()) == []

    indexers["claims_index"].replace(("ml", "models", "u"), view.index_claim("ml", "models"))
    assert cluster.has_claim("ml", "models") and not cluster.has_claim("ml", "other")
