"""Faults a production operator meets; after each: no data lost, no partial file, no
duplicate Job, and the status ends true."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from support.cluster import NAMESPACE, PODS, PVCS, Cluster, put_checkpoint, splitmodel
from support.kubelet import Fault


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_recorded_and_whole(cluster: Cluster, name: str, storage: Path) -> None:
    """Ready, exactly one Job, complete files whose sha256 is the one in status, no temp file."""
    assert cluster.condition(name, "Ready")["status"] == "True"
    assert len([j for j in cluster.jobs()
                if j["metadata"]["labels"]["splitlearn.io/splitmodel"] == name]) == 1  # fmt: skip
    components = cluster.splitmodel(name)["status"]["components"]
    assert len(components) == 3
    for component in components:
        on_volume = storage / component["path"].removeprefix("/models/")
        assert hashlib.sha256(on_volume.read_bytes()).hexdigest() == component["sha256"]
    assert not [f for f in files(storage) if f.rsplit("/", 1)[-1].startswith(".")]


async def ready(cluster: Cluster, name: str, timeout: float = 60) -> None:
    await cluster.eventually(
        lambda: cluster.condition(name, "Ready").get("status") == "True", timeout, f"{name} Ready"
    )


async def test_bursts_of_500_and_409_on_patches(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()
    failures = [  # kopf's own patches, then the operator's status writes
        cluster.api.inject(status=500, method="PATCH", plural="splitmodels", subresource=None,
                           times=3),
        cluster.api.inject(status=409, method="PATCH", plural="splitmodels",
                           subresource="status", times=3),
        cluster.api.inject(status=500, method="PATCH", plural="splitmodels",
                           subresource="status", times=3),
    ]  # fmt: skip
    await cluster.apply(splitmodel("bursty"))
    await ready(cluster, "bursty")
    assert failures[0].fired >= 1  # kopf patches the resource once or twice, and retries
    assert [failures[1].fired, failures[2].fired] == [3, 3]
    assert_recorded_and_whole(cluster, "bursty", storage)


async def test_watch_streams_cut_mid_stream(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    cluster.kubelet.delay_seconds = 1.0
    await cluster.operator()
    await cluster.apply(splitmodel("cut"))
    for _ in range(4):
        cluster.api.cut_watches()
        await asyncio.sleep(0.4)
    await ready(cluster, "cut")
    assert_recorded_and_whole(cluster, "cut", storage)


async def test_killed_after_creating_the_claim(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    operator = await cluster.operator()
    stuck = cluster.api.inject(method="POST", plural="jobs", hang=True, times=1)
    await cluster.apply(splitmodel("own-claim", storage={"size": "1Gi"}))
    await cluster.eventually(lambda: stuck.fired, what="the Job creation to start")
    assert cluster.api.get(PVCS, NAMESPACE, "own-claim-storage") is not None
    await operator.kill()
    stuck.release()
    await operator.start()
    await ready(cluster, "own-claim")
    claims = [c for c in cluster.api.objects(PVCS, NAMESPACE)
              if c["metadata"]["name"].startswith("own-claim")]  # fmt: skip
    assert len(claims) == 1
    assert_recorded_and_whole(
        cluster, "own-claim", cluster.kubelet.volume(NAMESPACE, "own-claim-storage")
    )


async def test_killed_after_the_job_finished_before_the_status(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    operator = await cluster.operator()

    def writes_ready(request) -> bool:
        conditions = ((request.data or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    stuck = cluster.api.inject(method="PATCH", plural="splitmodels", subresource="status",
                               hang=True, times=1, when=writes_ready)  # fmt: skip
    await cluster.apply(splitmodel("late-status"))
    await cluster.eventually(lambda: stuck.fired, what="the final status write")
    await operator.kill()
    stuck.release()
    assert cluster.condition("late-status", "Ready").get("status") != "True"
    await operator.start()
    await ready(cluster, "late-status")
    assert len(cluster.api.objects(PODS, NAMESPACE)) == 1  # the split was not run again
    assert_recorded_and_whole(cluster, "late-status", storage)


async def stalled(cluster: Cluster, name: str, reason: str) -> dict:
    await cluster.eventually(
        lambda: cluster.condition(name, "Stalled").get("reason") == reason, 60,
        f"{name} Stalled with {reason}",
    )  # fmt: skip
    assert cluster.condition(name, "Ready")["status"] == "False"
    return cluster.condition(name, "Stalled")


async def test_oom_killed_says_to_raise_the_memory_limit(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.faults["hungry"] = Fault("oom")
    await cluster.operator()
    await cluster.apply(splitmodel("hungry", resources={"limits": {"memory": "1Gi"}}))
    condition = await stalled(cluster, "hungry", "OOMKilled")
    assert "(limit 1Gi)" in condition["message"]
    assert "spec.resources.limits.memory" in condition["message"]
    pods = [p for p in cluster.api.objects(PODS, NAMESPACE)]
    assert len(pods) == 3  # backoffLimit 2: three attempts, then the Job failed


async def test_deadline_exceeded(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.faults["slow"] = Fault("hang")
    await cluster.operator(config={"job_active_deadline_seconds": 1})
    await cluster.apply(splitmodel("slow"))
    condition = await stalled(cluster, "slow", "DeadlineExceeded")
    assert "activeDeadlineSeconds=1" in condition["message"]


async def test_a_full_volume_stalls_and_leaves_no_file(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("tiny")
    cluster.kubelet.small_volumes["tiny"] = 64 * 1024
    await cluster.operator()
    await cluster.apply(splitmodel("full", storage={"claimName": "tiny"}))
    condition = await stalled(cluster, "full", "StorageFull")
    assert "No space left on device" in condition["message"]
    pods = cluster.api.objects(PODS, NAMESPACE)
    assert len(pods) == 1  # exit code 2: never retried


async def test_a_second_writer_of_the_same_files_is_refused(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()
    await cluster.apply(splitmodel("first", modelId="shared"))
    await ready(cluster, "first")
    before = {f: (storage / f).read_bytes() for f in files(storage)}
    await cluster.apply(splitmodel("second", modelId="shared"))
    condition = await stalled(cluster, "second", "Conflict")
    assert "SplitModel first already writes /models/*/shared_2-10_*.pt" in condition["message"]
    assert {f: (storage / f).read_bytes() for f in files(storage)} == before
    assert [j["metadata"]["labels"]["splitlearn.io/splitmodel"] for j in cluster.jobs()] == [
        "first"
    ]
    # A different model id is another set of files: no conflict.
    await cluster.apply(splitmodel("third", modelId="other"))
    await ready(cluster, "third")


async def test_a_result_lost_while_recording_is_picked_up_by_the_resync(cluster, gpt2_source):
    """The Job's one event came and recording it failed (the API refused every retry): the
    operator's resync loop still records the result."""
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()

    def writes_ready(request) -> bool:
        conditions = ((request.data or {}).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    refused = cluster.api.inject(status=503, method="PATCH", plural="splitmodels",
                                 subresource="status", times=6, when=writes_ready)  # fmt: skip
    await cluster.apply(splitmodel("lost"))
    await ready(cluster, "lost")
    assert refused.fired == 6  # every retry of the event's handler was refused
    assert_recorded_and_whole(cluster, "lost", storage)


async def test_a_job_deleted_by_hand_is_created_again(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    cluster.kubelet.delay_seconds = 2.0
    await cluster.operator()
    await cluster.apply(splitmodel("again"))
    (job,) = await cluster.eventually(lambda: cluster.jobs(), what="the Job")
    code, _ = await cluster.request(
        "DELETE", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job['metadata']['name']}"
    )
    assert code == 200
    cluster.kubelet.delay_seconds = 0
    await ready(cluster, "again")
    assert_recorded_and_whole(cluster, "again", storage)
