"""The emulated API server behaves like kube-apiserver where the operator depends on it."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from support.cluster import JOBS, NAMESPACE, splitmodel

SM = f"/apis/splitlearn.io/v1alpha1/namespaces/{NAMESPACE}/splitmodels"
MERGE = "application/merge-patch+json"


async def test_metadata_generation_and_resource_versions(cluster):
    code, created = await cluster.apply(splitmodel("a"))
    assert code == 201
    metadata = created["metadata"]
    assert metadata["namespace"] == NAMESPACE and metadata["uid"] and metadata["creationTimestamp"]
    assert metadata["generation"] == 1
    code, patched = await cluster.request(
        "PATCH", f"{SM}/a", {"metadata": {"labels": {"x": "y"}}}, MERGE
    )
    assert patched["metadata"]["generation"] == 1  # metadata changes are not spec changes
    assert int(patched["metadata"]["resourceVersion"]) > int(metadata["resourceVersion"])
    code, patched = await cluster.request("PATCH", f"{SM}/a", {"spec": {"device": "cuda"}}, MERGE)
    assert patched["metadata"]["generation"] == 2
    code, _ = await cluster.apply(splitmodel("a"))
    assert code == 409


async def test_stale_resource_version_conflicts_and_json_patch_tests(cluster):
    _, created = await cluster.apply(splitmodel("b"))
    stale = created["metadata"]["resourceVersion"]
    await cluster.request("PATCH", f"{SM}/b", {"spec": {"device": "cuda"}}, MERGE)
    code, body = await cluster.request(
        "PATCH", f"{SM}/b/status", {"metadata": {"resourceVersion": stale}, "status": {}}, MERGE
    )
    assert (code, body["reason"]) == (409, "Conflict")
    code, body = await cluster.request(
        "PATCH", f"{SM}/b",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": stale},
         {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}],
        "application/json-patch+json",
    )  # fmt: skip
    assert code == 422


async def test_status_is_a_subresource_and_schema_prunes_and_refuses(cluster):
    await cluster.apply(splitmodel("c"))
    code, body = await cluster.request(
        "PATCH", f"{SM}/c", {"status": {"jobName": "ignored"}}, MERGE
    )
    assert "status" not in body  # the main resource ignores status
    code, body = await cluster.request(
        "PATCH", f"{SM}/c/status",
        {"status": {"jobName": "j", "undeclared": 1}, "spec": {"device": "mps"}}, MERGE,
    )  # fmt: skip
    assert body["status"] == {"jobName": "j"}  # pruned, as a structural schema does
    assert body["spec"]["device"] == "cpu"  # /status never changes the spec
    code, body = await cluster.request(
        "PATCH", f"{SM}/c/status", {"status": {"observedGeneration": 1.5}}, MERGE
    )
    assert code == 422  # a float in an integer field fails the whole patch


async def test_finalizers_deletion_and_garbage_collection(cluster):
    _, owner = await cluster.apply(splitmodel("d"))
    uid = owner["metadata"]["uid"]
    cluster.api.put(JOBS, {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "d-job", "namespace": NAMESPACE,
                     "ownerReferences": [{"uid": uid, "name": "d", "kind": "SplitModel"}]},
        "spec": {},
    })  # fmt: skip
    await cluster.request("PATCH", f"{SM}/d", {"metadata": {"finalizers": ["f"]}}, MERGE)
    _, body = await cluster.request("DELETE", f"{SM}/d")
    assert body["metadata"]["deletionTimestamp"] and cluster.splitmodel("d") is not None
    await cluster.request("PATCH", f"{SM}/d", {"metadata": {"finalizers": None}}, MERGE)
    assert cluster.splitmodel("d") is None
    assert cluster.api.get(JOBS, NAMESPACE, "d-job") is None  # collected with its owner


async def test_label_selectors_and_generate_name(cluster):
    for name, team in (("e1", "nlp"), ("e2", "cv"), ("e3", "nlp")):
        manifest = splitmodel(name)
        manifest["metadata"]["labels"] = {"team": team}
        await cluster.apply(manifest)
    for selector, names in (
        ("team=nlp", ["e1", "e3"]),
        ("team!=nlp", ["e2"]),
        ("team in (cv,x)", ["e2"]),
        ("!team", []),
    ):
        _, body = await cluster.request("GET", f"{SM}?labelSelector={selector}")
        assert sorted(item["metadata"]["name"] for item in body["items"]) == names
    event = {"metadata": {"generateName": "x."}, "reason": "R"}
    first = await cluster.request("POST", f"/api/v1/namespaces/{NAMESPACE}/events", event)
    second = await cluster.request("POST", f"/api/v1/namespaces/{NAMESPACE}/events", event)
    assert first[0] == second[0] == 201
    assert first[1]["metadata"]["name"] != second[1]["metadata"]["name"]


async def test_watch_resumes_without_replaying_and_never_duplicates(cluster):
    _, created = await cluster.apply(splitmodel("w"))
    since = created["metadata"]["resourceVersion"]
    await cluster.request("PATCH", f"{SM}/w", {"spec": {"device": "cuda"}}, MERGE)
    events = []
    async with aiohttp.ClientSession() as session:
        url = f"{cluster.url}{SM}?watch=true&resourceVersion={since}&timeoutSeconds=1"
        async with session.get(url) as response:
            async for line in response.content:
                events.append(json.loads(line))
    assert [(e["type"], e["object"]["spec"]["device"]) for e in events] == [("MODIFIED", "cuda")]


async def test_the_namespaces_resource_is_served(cluster):
    code, body = await cluster.request("GET", "/api/v1/namespaces")
    assert code == 200 and {"default", NAMESPACE} <= {i["metadata"]["name"] for i in body["items"]}
    await asyncio.sleep(0)
