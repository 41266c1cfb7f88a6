"""End to end: kubectl apply a SplitModel, the real operator runs a real Job, status follows."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from support.cluster import JOBS, NAMESPACE, PODS, put_checkpoint, splitmodel


async def test_happy_path_writes_the_guides_layout_and_records_it(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()
    code, _ = await cluster.apply(splitmodel("gpt2-a"))
    assert code in (200, 201)

    await cluster.eventually(
        lambda: cluster.condition("gpt2-a", "Ready").get("status") == "True",
        what="Ready=True",
        timeout=20,
    )
    assert sorted(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file()) == [
        f"{c}/gpt2-a_2-10_{c}{suffix}"
        for c in ("bottom", "top", "trunk")
        for suffix in (".pt", "_metadata.json")
    ]
    body = cluster.splitmodel("gpt2-a")
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"] == 1
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "Ready": ("True", "Succeeded"),
        "Reconciling": ("False", "Succeeded"),
        "Stalled": ("False", "Succeeded"),
    }
    assert status["jobName"] == cluster.jobs()[0]["metadata"]["name"]
    for component in status["components"]:
        name = component["name"]
        on_volume = storage / name / f"gpt2-a_2-10_{name}.pt"
        metadata = json.loads(on_volume.with_name(on_volume.stem + "_metadata.json").read_text())
        assert component == {
            "name": name,
            "path": f"/models/{name}/gpt2-a_2-10_{name}.pt",
            "metadataPath": f"/models/{name}/gpt2-a_2-10_{name}_metadata.json",
            "subPath": f"{name}/gpt2-a_2-10_{name}.pt",
            "modelClass": metadata["model_class"],
            "startLayer": metadata["start_layer"],
            "endLayer": metadata["end_layer"],
            "numLayers": metadata["num_layers"],
            "numParameters": metadata["num_parameters"],
            "memoryBytes": metadata["memory_bytes"],
            "sha256": hashlib.sha256(on_volume.read_bytes()).hexdigest(),
            "savedAt": metadata["saved_at"],
            "dtype": metadata["dtype"],
        }
    assert [c["name"] for c in status["components"]] == ["bottom", "trunk", "top"]
    reasons = [event["reason"] for event in cluster.events("gpt2-a")]
    assert "JobCreated" in reasons and "Succeeded" in reasons
    assert body["metadata"]["namespace"] == NAMESPACE


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _layout(name: str, split: str, suffix: str = ".pt") -> list[str]:
    return sorted(
        f"{c}/{name}_{split}_{c}{s}" for c in ("bottom", "trunk", "top")
        for s in (suffix, "_metadata.json")
    )  # fmt: skip


async def test_a_spec_change_runs_a_new_job_and_keeps_the_old_status_until_done(
    cluster, gpt2_source
):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()
    await cluster.apply(splitmodel("gpt2-b"))
    await cluster.eventually(lambda: cluster.condition("gpt2-b", "Ready").get("status") == "True")
    first = cluster.splitmodel("gpt2-b")["status"]

    cluster.kubelet.delay_seconds = 1.5  # the new Job takes a while: look at the status meanwhile
    spec = cluster.splitmodel("gpt2-b")["spec"]
    spec["splitStorageConfig"]["splitConfig"] = "3-9"
    assert await cluster.patch_spec("gpt2-b", spec) == 200
    running = await cluster.eventually(
        lambda: (
            cluster.condition("gpt2-b", "Reconciling").get("status") == "True"
            and cluster.splitmodel("gpt2-b")["status"]
        )
    )
    assert running["observedGeneration"] == 2
    assert running["components"] == first["components"]  # the old result stays until the new one
    assert cluster.condition("gpt2-b", "Ready")["status"] == "False"
    assert running["jobName"] != first["jobName"]

    await cluster.eventually(lambda: cluster.condition("gpt2-b", "Ready").get("status") == "True")
    final = cluster.splitmodel("gpt2-b")["status"]
    assert final["observedGeneration"] == 2
    assert [(c["startLayer"], c["endLayer"]) for c in final["components"]] == [
        (0, 3),
        (3, 9),
        (9, 12),
    ]
    assert len(cluster.jobs()) == 2
    assert _files(storage) == sorted(_layout("gpt2-b", "2-10") + _layout("gpt2-b", "3-9"))


async def test_a_status_only_change_does_nothing(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    await cluster.operator()
    await cluster.apply(splitmodel("gpt2-s"))
    await cluster.eventually(lambda: cluster.condition("gpt2-s", "Ready").get("status") == "True")
    before = cluster.splitmodel("gpt2-s")
    code, _ = await cluster.request(
        "PATCH", "/apis/splitlearn.io/v1alpha1/namespaces/ml/splitmodels/gpt2-s",
        {"metadata": {"labels": {"team": "nlp"}}}, "application/merge-patch+json",
    )  # fmt: skip
    assert code == 200
    await asyncio.sleep(2)
    after = cluster.splitmodel("gpt2-s")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] == 1
    assert after["status"] == before["status"]
    assert len(cluster.jobs()) == 1


async def test_autosave_false_reports_the_plan_and_writes_nothing(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    await cluster.operator()
    manifest = splitmodel("plan", storage=None)
    del manifest["spec"]["storage"]
    manifest["spec"]["splitStorageConfig"]["autoSave"] = False
    code, _ = await cluster.apply(manifest)
    assert code in (200, 201), _
    await cluster.eventually(lambda: cluster.condition("plan", "Ready").get("status") == "True")
    status = cluster.splitmodel("plan")["status"]
    assert cluster.condition("plan", "Ready")["reason"] == "Planned"
    assert [
        (c["name"], c["startLayer"], c["endLayer"], "path" in c, "sha256" in c)
        for c in status["components"]
    ] == [
        ("bottom", 0, 2, False, False),
        ("trunk", 2, 10, False, False),
        ("top", 10, 12, False, False),
    ]
    assert all(c["numParameters"] > 0 and c["memoryBytes"] > 0 for c in status["components"])
    job = cluster.jobs()[0]
    assert "--no-save" in job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert not (cluster.kubelet.root / "volumes" / NAMESPACE / "models").exists()


async def test_delete_policy_delete_removes_the_files_first(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    (storage / "unrelated.txt").write_text("not ours")
    await cluster.operator()
    await cluster.apply(splitmodel("gone", deletionPolicy="Delete"))
    await cluster.eventually(lambda: cluster.condition("gone", "Ready").get("status") == "True")
    assert _files(storage) == sorted([*_layout("gone", "2-10"), "unrelated.txt"])
    assert await cluster.delete("gone") == 200
    await cluster.eventually(lambda: cluster.splitmodel("gone") is None, what="the SplitModel gone")
    assert _files(storage) == ["unrelated.txt"]
    cleanup = [
        j
        for j in cluster.api.objects(JOBS, NAMESPACE)
        if j["metadata"]["labels"]["app.kubernetes.io/component"] == "cleanup"
    ]
    assert cleanup == []  # garbage-collected with its owner
    reasons = [e["reason"] for e in cluster.events("gone")]
    assert "CleanupStarted" in reasons and "CleanedUp" in reasons


async def test_delete_policy_retain_keeps_the_files(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()
    await cluster.apply(splitmodel("kept"))
    await cluster.eventually(lambda: cluster.condition("kept", "Ready").get("status") == "True")
    assert await cluster.delete("kept") == 200
    await cluster.eventually(lambda: cluster.splitmodel("kept") is None, what="the SplitModel gone")
    assert _files(storage) == _layout("kept", "2-10")
    assert cluster.jobs() == []  # its Job went with it (ownerReferences)


async def test_max_models_never_runs_more_than_that_many_jobs(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.delay_seconds = 1.0
    await cluster.operator(max_models=2)
    names = [f"m{i}" for i in range(6)]
    for name in names:
        await cluster.apply(splitmodel(name))
    await cluster.eventually(
        lambda: all(cluster.condition(n, "Ready").get("status") == "True" for n in names),
        timeout=90, what="all six Ready",
    )  # fmt: skip
    assert cluster.kubelet.max_parallel_seen == 2
    assert len(cluster.jobs()) == 6
    queued = [n for n in names if any(e["reason"] == "Queued" for e in cluster.events(n))]
    assert len(queued) >= 3


async def test_a_killed_operator_resumes_without_a_duplicate_job(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.delay_seconds = 2.0
    operator = await cluster.operator()
    await cluster.apply(splitmodel("resume"))
    await cluster.eventually(lambda: cluster.jobs(), what="the Job")
    await operator.kill()
    await cluster.eventually(
        lambda: cluster.jobs()[0].get("status", {}).get("conditions"), what="the Job to finish"
    )
    assert cluster.condition("resume", "Ready").get("status") != "True"
    await operator.start()
    await cluster.eventually(lambda: cluster.condition("resume", "Ready").get("status") == "True")
    assert len(cluster.jobs()) == 1
    assert len(cluster.api.objects(PODS, NAMESPACE)) == 1
