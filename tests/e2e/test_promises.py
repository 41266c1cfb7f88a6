"""What the README promises and no other e2e test holds the operator to: the Events it names,
the claims it creates, verification in the status, waiting that ends, Jobs that stop."""

from __future__ import annotations

import asyncio
from typing import Any

from support.cluster import JOBS, NAMESPACE, PVCS, Cluster, put_checkpoint, splitmodel
from support.kubelet import Fault

SPEC_HASH = "splitlearn.io/spec-hash"


def status_and_reason(cluster: Cluster, name: str, kind: str) -> tuple[str, str]:
    condition = cluster.condition(name, kind)
    return condition.get("status", ""), condition.get("reason", "")


async def condition_reason(
    cluster: Cluster, name: str, kind: str, status: str, reason: str
) -> None:
    await cluster.eventually(
        lambda: status_and_reason(cluster, name, kind) == (status, reason),
        60, f"{name}: {kind}={status} ({reason})",
    )  # fmt: skip


async def succeeded(cluster: Cluster, name: str) -> None:
    await condition_reason(cluster, name, "Ready", "True", "Succeeded")


def story(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    """The Events about `name`, oldest first, as (type, reason)."""
    events = sorted(cluster.events(name), key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["type"], e["reason"]) for e in events]


def warnings(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    return [(e["reason"], e["message"]) for e in cluster.events(name) if e["type"] == "Warning"]


def split_jobs_of(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [
        j for j in cluster.jobs() if j["metadata"]["labels"]["splitlearn.io/splitmodel"] == name
    ]


def layers(cluster: Cluster, name: str) -> list[tuple[int, int]]:
    status = (cluster.splitmodel(name) or {}).get("status") or {}
    return [(c["startLayer"], c["endLayer"]) for c in status.get("components", [])]


async def running_job(cluster: Cluster, name: str) -> str:
    """The name of `name`'s split Job once its pod runs."""
    (job,) = await cluster.eventually(lambda: split_jobs_of(cluster, name), what=f"{name}'s Job")
    job_name = str(job["metadata"]["name"])
    await cluster.eventually(
        lambda: (NAMESPACE, job_name) in cluster.kubelet.pods, what=f"{job_name}'s pod"
    )
    return job_name


def cleanup_job_name(cluster: Cluster, name: str) -> str:
    """`name`'s cleanup Job's name, to inject a fault into it before it exists."""
    (split_job,) = split_jobs_of(cluster, name)
    return f"{name}-cleanup-{split_job['metadata']['labels'][SPEC_HASH]}"


async def test_an_operator_created_claim_is_announced_and_owned_only_under_delete(
    cluster, gpt2_source
):
    put_checkpoint(cluster, gpt2_source)
    await cluster.operator()
    await cluster.apply(splitmodel("owned", storage={"size": "1Gi"}))
    await succeeded(cluster, "owned")
    claim = cluster.api.get(PVCS, NAMESPACE, "owned-storage")
    assert claim["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "splitlearn-operator"
    assert not claim["metadata"].get("ownerReferences")  # Retain: the claim outlives the resource
    created = [e for e in cluster.events("owned") if e["reason"] == "ClaimCreated"]
    assert [(e["type"], e["message"]) for e in created] == [
        ("Normal", "created PersistentVolumeClaim owned-storage")
    ]

    uid = cluster.splitmodel("owned")["metadata"]["uid"]

    def owners() -> list[tuple[str, str, str, bool]]:
        references = (
            cluster.api.get(PVCS, NAMESPACE, "owned-storage")["metadata"].get("ownerReferences")
            or []
        )
        return [(r["kind"], r["name"], r["uid"], r["controller"]) for r in references]

    assert await cluster.patch_spec("owned", {"deletionPolicy": "Delete"}) == 200
    await cluster.eventually(
        lambda: owners() == [("SplitModel", "owned", uid, True)], what="the claim owned"
    )
    assert await cluster.patch_spec("owned", {"deletionPolicy": "Retain"}) == 200
    await cluster.eventually(lambda: owners() == [], what="the claim released")


async def test_a_plan_only_split_posts_planned_not_succeeded(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    await cluster.operator()
    manifest = splitmodel("plan-events")
    del manifest["spec"]["storage"]
    manifest["spec"]["splitStorageConfig"]["autoSave"] = False
    await cluster.apply(manifest)
    await condition_reason(cluster, "plan-events", "Ready", "True", "Planned")
    await cluster.eventually(lambda: len(story(cluster, "plan-events")) == 2, what="two Events")
    assert story(cluster, "plan-events") == [("Normal", "JobCreated"), ("Normal", "Planned")]


async def test_a_claim_name_taken_by_someone_else_is_refused(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    volume = cluster.claim("taken-storage")  # not the operator's: no managed-by label
    (volume / "theirs.txt").write_text("someone else's data")
    await cluster.operator()
    await cluster.apply(splitmodel("taken", storage={"size": "1Gi"}))
    await condition_reason(cluster, "taken", "Stalled", "True", "StorageClaimConflict")
    message = (
        "PersistentVolumeClaim taken-storage exists and was not created by the operator; "
        "set spec.storage.claimName to use it"
    )
    assert cluster.condition("taken", "Stalled")["message"] == message
    await cluster.eventually(lambda: warnings(cluster, "taken"), what="the Warning Event")
    assert warnings(cluster, "taken") == [("StorageClaimConflict", message)]
    assert split_jobs_of(cluster, "taken") == []
    claim = cluster.api.get(PVCS, NAMESPACE, "taken-storage")
    assert not claim["metadata"].get("labels") and not claim["metadata"].get("ownerReferences")
    assert [p.name for p in volume.iterdir()] == ["theirs.txt"]


async def test_a_missing_storage_claim_is_waited_for_then_used(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    await cluster.operator()
    await cluster.apply(splitmodel("waits", storage={"claimName": "later"}))
    await condition_reason(cluster, "waits", "Stalled", "True", "StorageClaimNotFound")
    assert (
        "PersistentVolumeClaim later (spec.storage.claimName) does not exist in ml"
        in (cluster.condition("waits", "Stalled")["message"])
    )
    await cluster.eventually(lambda: warnings(cluster, "waits"), what="the Warning Event")
    assert [reason for reason, _ in warnings(cluster, "waits")] == ["StorageClaimNotFound"]
    storage = cluster.claim("later")
    await succeeded(cluster, "waits")
    assert (storage / "bottom" / "waits_2-10_bottom.pt").is_file()


async def test_verify_true_records_the_verification(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    await cluster.operator()
    await cluster.apply(splitmodel("checked", verify=True))
    await cluster.eventually(
        lambda: cluster.condition("checked", "Ready").get("status") == "True", 120, "Ready"
    )
    (job,) = split_jobs_of(cluster, "checked")
    assert "--verify" in job["spec"]["template"]["spec"]["containers"][0]["command"]
    verification = cluster.splitmodel("checked")["status"]["verification"]
    assert sorted(verification) == ["maxAbsDiff", "ok"]
    assert verification["ok"] is True
    assert float(verification["maxAbsDiff"]) <= 1e-5


async def test_a_second_writer_runs_once_the_first_goes(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()
    await cluster.apply(splitmodel("first", modelId="shared"))
    await succeeded(cluster, "first")
    await cluster.apply(splitmodel("second", modelId="shared"))
    await condition_reason(cluster, "second", "Stalled", "True", "Conflict")
    assert split_jobs_of(cluster, "second") == []
    assert await cluster.delete("first") == 200
    await succeeded(cluster, "second")
    assert cluster.condition("second", "Stalled")["status"] == "False"
    (job,) = split_jobs_of(cluster, "second")
    assert cluster.splitmodel("second")["status"]["jobName"] == job["metadata"]["name"]
    assert (storage / "trunk" / "shared_2-10_trunk.pt").is_file()


async def test_a_conflict_met_after_the_job_started_still_waits_for_the_first_to_go(
    cluster, gpt2_source
):
    """`second` had started its Job when the older `first` was changed, while no operator ran,
    to write the same files: the restarted operator holds `second` as Conflict (its status
    already names this spec's Job), then runs it once `first` is deleted."""
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    operator = await cluster.operator()
    await cluster.apply(splitmodel("first", modelId="elsewhere"))
    await succeeded(cluster, "first")
    cluster.kubelet.faults["second"] = Fault("hang")
    await cluster.apply(splitmodel("second", modelId="shared"))
    hung = await running_job(cluster, "second")
    await condition_reason(cluster, "second", "Reconciling", "True", "JobRunning")
    await operator.kill()
    del cluster.kubelet.faults["second"]
    code, _ = await cluster.request("DELETE", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{hung}")
    assert code == 200
    assert await cluster.patch_spec("first", {"modelId": "shared"}) == 200
    await operator.start()
    await condition_reason(cluster, "second", "Stalled", "True", "Conflict")
    await succeeded(cluster, "first")
    assert split_jobs_of(cluster, "second") == []
    assert await cluster.delete("first") == 200
    await succeeded(cluster, "second")
    (job,) = split_jobs_of(cluster, "second")
    assert job["metadata"]["name"] == hung  # the same spec: the same Job, created again
    assert (storage / "trunk" / "shared_2-10_trunk.pt").is_file()


async def test_a_spec_change_stops_the_old_running_job(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.faults["moving"] = Fault("hang")
    await cluster.operator()
    await cluster.apply(splitmodel("moving"))
    old = await running_job(cluster, "moving")
    del cluster.kubelet.faults["moving"]  # the new spec's Job runs normally
    assert (
        await cluster.patch_spec(
            "moving", {"splitStorageConfig": {"splitConfig": "3-9", "storagePath": "/models"}}
        )
        == 200
    )
    await cluster.eventually(
        lambda: cluster.api.get(JOBS, NAMESPACE, old) is None, what=f"{old} deleted"
    )
    await succeeded(cluster, "moving")
    assert layers(cluster, "moving") == [(0, 3), (3, 9), (9, 12)]
    assert [j["metadata"]["name"] for j in split_jobs_of(cluster, "moving")] == [
        cluster.splitmodel("moving")["status"]["jobName"]
    ]


async def test_an_older_specs_result_is_never_recorded_for_the_new_spec(cluster, gpt2_source):
    """The old spec's Job finishes while no operator runs, after the spec changed: the
    restarted operator runs the new spec and records only its result."""
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.delay_seconds = 1.5
    operator = await cluster.operator()
    await cluster.apply(splitmodel("stale"))
    old = await running_job(cluster, "stale")
    await operator.kill()
    assert not cluster.api.get(JOBS, NAMESPACE, old)["status"].get("conditions")  # still running
    assert (
        await cluster.patch_spec(
            "stale", {"splitStorageConfig": {"splitConfig": "3-9", "storagePath": "/models"}}
        )
        == 200
    )
    await cluster.eventually(
        lambda: (cluster.api.get(JOBS, NAMESPACE, old).get("status") or {}).get("succeeded"),
        what=f"{old} to complete",
    )
    cluster.kubelet.delay_seconds = 0
    await operator.start()
    await cluster.eventually(
        lambda: cluster.condition("stale", "Ready").get("status") == "True"
        and cluster.splitmodel("stale")["status"]["observedGeneration"] == 2,
        what="Ready for generation 2",
    )  # fmt: skip
    status = cluster.splitmodel("stale")["status"]
    assert status["jobName"] != old
    assert layers(cluster, "stale") == [(0, 3), (3, 9), (9, 12)]
    recorded = [e["message"] for e in cluster.events("stale") if e["reason"] == "Succeeded"]
    assert len(recorded) == 1 and "bottom layers [0,3)" in recorded[0]


async def test_deleting_a_splitmodel_stops_its_running_job_before_cleaning_up(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.faults["stopped"] = Fault("hang")
    await cluster.operator()
    await cluster.apply(splitmodel("stopped", deletionPolicy="Delete"))
    split_job = await running_job(cluster, "stopped")
    del cluster.kubelet.faults["stopped"]
    cleanup = cleanup_job_name(cluster, "stopped")
    cluster.kubelet.faults[cleanup] = Fault("hang")  # the resource stays while it runs
    assert await cluster.delete("stopped") == 200
    await cluster.eventually(
        lambda: cluster.api.get(JOBS, NAMESPACE, cleanup), what="the cleanup Job"
    )
    await cluster.eventually(
        lambda: cluster.api.get(JOBS, NAMESPACE, split_job) is None
        and (NAMESPACE, split_job) not in cluster.kubelet.pods,
        what="the split Job stopped",
    )  # fmt: skip
    assert cluster.splitmodel("stopped") is not None  # stopped by the operator, not by GC


async def test_a_failed_cleanup_stalls_and_keeps_the_resource(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    await cluster.operator()
    await cluster.apply(splitmodel("sticky", deletionPolicy="Delete"))
    await succeeded(cluster, "sticky")
    cluster.kubelet.faults[cleanup_job_name(cluster, "sticky")] = Fault("oom")
    assert await cluster.delete("sticky") == 200
    await condition_reason(cluster, "sticky", "Stalled", "True", "CleanupFailed")
    message = cluster.condition("sticky", "Stalled")["message"]
    assert "could not remove the components" in message
    assert "Set deletionPolicy: Retain to delete the SplitModel and keep the files" in message
    await cluster.eventually(lambda: warnings(cluster, "sticky"), what="the Warning Event")
    assert warnings(cluster, "sticky") == [("CleanupFailed", message)]
    assert cluster.splitmodel("sticky") is not None  # its finalizer stays until a cleanup works


async def test_a_job_that_dies_without_a_result_is_job_failed(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.faults["crashing"] = Fault("crash")
    await cluster.operator()
    await cluster.apply(splitmodel("crashing"))
    await condition_reason(cluster, "crashing", "Stalled", "True", "JobFailed")
    message = cluster.condition("crashing", "Stalled")["message"]
    assert message.startswith("BackoffLimitExceeded: ")
    assert "(exit code 139: Segmentation fault" in message
    assert cluster.splitmodel("crashing")["status"]["lastFailure"]["reason"] == "JobFailed"
    await cluster.eventually(lambda: warnings(cluster, "crashing"), what="the Warning Event")
    assert warnings(cluster, "crashing") == [("JobFailed", message)]


async def test_max_workers_bounds_the_resources_handled_at_once(cluster, gpt2_source):
    """With `max_workers: 1` a second SplitModel waits for the first one's handler, here held
    inside its Job creation; once that returns, both run."""
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    await cluster.operator(max_workers=1)
    held = cluster.api.inject(method="POST", plural="jobs", hang=True, times=1)
    await cluster.apply(splitmodel("one"))
    await cluster.eventually(lambda: held.fired, 20, "the first Job creation")
    await cluster.apply(splitmodel("two", modelId="two"))
    await asyncio.sleep(1.5)  # time enough for an unbounded operator to handle `two`
    assert cluster.splitmodel("two").get("status") is None
    assert cluster.jobs() == []
    held.release()
    await succeeded(cluster, "one")
    await succeeded(cluster, "two")
