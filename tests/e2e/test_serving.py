"""The operator serves trunks (`spec.serving`): real split Jobs, real `splitcore serve` pods
in their own network namespaces, a real gRPC client against the Service's ready pods."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from kmock import resource

from splitcore import load_component
from splitcore.remote import RemoteError, RemoteTrunk
from support.cluster import NAMESPACE, Cluster, put_checkpoint, splitmodel
from support.operator import scrape

DEPLOYMENTS = resource("apps", "v1", "deployments")
SERVICES = resource("", "v1", "services")
CONFIGMAPS = resource("", "v1", "configmaps")
SECRETS = resource("", "v1", "secrets")
SERVING = {"enabled": True}


def served(name: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("serving", SERVING)
    storage = {"splitConfig": "2-10", "storagePath": "/models", "autoSave": True}
    storage.update(spec.pop("split", {}))
    return splitmodel(name, splitStorageConfig=storage, **spec)


def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    return (cluster.splitmodel(name) or {}).get("status") or {}


def is_ready(cluster: Cluster, name: str, generation: int | None = None) -> bool:
    body = cluster.splitmodel(name) or {}
    wanted = generation or body.get("metadata", {}).get("generation")
    return (
        cluster.condition(name, "Ready").get("status") == "True"
        and status_of(cluster, name).get("observedGeneration") == wanted
    )


def endpoints(cluster: Cluster, name: str) -> list[str]:
    return cluster.endpoints(f"{name}-trunk")


def logits_through(address: str, volume: Path, model: str, split: str, ids: torch.Tensor):
    bottom = load_component(volume / "bottom" / f"{model}_{split}_bottom.pt")
    top = load_component(volume / "top" / f"{model}_{split}_top.pt")
    with RemoteTrunk(address, model, split, timeout=30) as trunk, torch.no_grad():
        return top(trunk(bottom(ids)))


async def started(cluster: Cluster, gpt2_source: Path) -> Path:
    put_checkpoint(cluster, gpt2_source)
    volume = cluster.claim("models")
    await cluster.operator()
    return volume


READY_SERVERS = (
    "splitlearn_serving_ready_replicas",
    (("namespace", NAMESPACE), ("splitmodel", "off")),
)


IDS = torch.randint(0, 96, (2, 7), generator=torch.Generator().manual_seed(0))


async def test_a_served_split_gives_the_full_models_logits_and_scales(
    cluster, gpt2_source, full_model
):
    volume = await started(cluster, gpt2_source)
    assert (await cluster.apply(served("gpt")))[0] == 201
    await cluster.eventually(lambda: is_ready(cluster, "gpt"), 180, "served and Ready")
    status = status_of(cluster, "gpt")
    trunk = next(c for c in status["components"] if c["name"] == "trunk")
    assert status["serving"] == {
        "endpoint": f"gpt-trunk.{NAMESPACE}.svc:50051", "replicas": 1, "readyReplicas": 1,
        "sha256": trunk["sha256"], "splitConfig": "2-10",
    }  # fmt: skip
    assert cluster.condition("gpt", "Serving")["status"] == "True"
    assert cluster.condition("gpt", "Serving")["reason"] == "Served"
    (address,) = endpoints(cluster, "gpt")
    logits = await asyncio.to_thread(logits_through, address, volume, "gpt", "2-10", IDS)
    with torch.no_grad():
        expected = full_model(gpt2_source).forward(IDS).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    reasons = [e["reason"] for e in cluster.events("gpt")]
    assert reasons.count("ServingStarted") == 1
    jobs = len(cluster.jobs())

    for replicas in (2, 0, 1):
        assert await cluster.patch_spec("gpt", {"serving": {"replicas": replicas}}) == 200
        await cluster.eventually(
            lambda r=replicas: is_ready(cluster, "gpt")
            and status_of(cluster, "gpt")["serving"]["readyReplicas"] == r
            and len(endpoints(cluster, "gpt")) == r,
            120, f"{replicas} replicas ready",
        )  # fmt: skip
        serving = cluster.condition("gpt", "Serving")
        assert (serving["status"], serving["reason"]) == (
            ("True", "Served") if replicas else ("False", "ScaledToZero")
        )
    assert len({address.split(":")[0] for address in endpoints(cluster, "gpt")}) == 1
    assert len(cluster.jobs()) == jobs  # scaling never splits again
    assert "ServingUpdated" in [e["reason"] for e in cluster.events("gpt")]

    # A killed server restarts in its pod; a deleted pod is replaced; Serving recovers.
    (pod,) = cluster.pods("splitlearn.io/splitmodel=gpt,app.kubernetes.io/component=serving")
    cluster.kubelet.kill_container(NAMESPACE, pod["metadata"]["name"])
    await cluster.eventually(
        lambda: cluster.condition("gpt", "Serving").get("status") == "False", 30, "noticed"
    )
    await cluster.eventually(
        lambda: cluster.condition("gpt", "Serving").get("status") == "True", 120, "restarted"
    )
    status_code, _ = await cluster.request(
        "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}"
    )
    assert status_code == 200
    await cluster.eventually(
        lambda: is_ready(cluster, "gpt") and endpoints(cluster, "gpt")
        and pod["metadata"]["name"] not in str(cluster.pods("splitlearn.io/splitmodel=gpt")),
        120, "a replacement pod serving",
    )  # fmt: skip


async def test_a_new_split_rolls_to_its_trunk_without_a_gap(cluster, gpt2_source):
    volume = await started(cluster, gpt2_source)
    await cluster.apply(served("roll"))
    await cluster.eventually(lambda: is_ready(cluster, "roll"), 180, "served")
    gaps: list[float] = []
    sampling = True

    async def sample() -> None:
        while sampling:
            if not endpoints(cluster, "roll"):
                gaps.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    assert await cluster.patch_spec("roll", {"splitStorageConfig": {"splitConfig": "3-9"}}) == 200
    await cluster.eventually(
        lambda: cluster.condition("roll", "Serving").get("reason") == "PreviousSplit",
        60, "the previous split served while the Job runs",
    )  # fmt: skip
    await cluster.eventually(lambda: is_ready(cluster, "roll", 2), 180, "rolled to 3-9")
    sampling = False
    await sampler
    assert gaps == []  # a ready pod behind the Service at every sample
    assert status_of(cluster, "roll")["serving"]["splitConfig"] == "3-9"
    (address,) = endpoints(cluster, "roll")

    def info() -> tuple[int, int]:
        with RemoteTrunk(address, "roll", "3-9", timeout=30) as trunk:
            return trunk.info.start_layer, trunk.info.end_layer

    assert await asyncio.to_thread(info) == (3, 9)
    with pytest.raises(RemoteError) as raised:  # the server serves exactly the current trunk
        await asyncio.to_thread(logits_through, address, volume, "roll", "2-10", IDS)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert (
        raised.value.details
        == "trunk roll 2-10 is not served here; this server serves only roll 3-9"
    )
    messages = [e["message"] for e in cluster.events("roll") if e["reason"] == "ServingUpdated"]
    assert messages == ["rolling the server to the trunk of split 3-9"]


async def test_disabling_removes_the_server_and_delete_waits_for_it(cluster, gpt2_source):
    volume = await started(cluster, gpt2_source)
    await cluster.apply(served("off", deletionPolicy="Delete"))
    await cluster.eventually(lambda: is_ready(cluster, "off"), 180, "served")
    metrics_port = cluster.operators[0].metrics_port
    assert (await scrape(metrics_port))[READY_SERVERS] == 1
    assert await cluster.patch_spec("off", {"serving": {"enabled": False}}) == 200

    def removed() -> bool:
        return all(
            cluster.api.get(kind, NAMESPACE, "off-trunk") is None
            for kind in (DEPLOYMENTS, SERVICES, CONFIGMAPS)
        )

    await cluster.eventually(
        lambda: removed() and is_ready(cluster, "off", 2) and not cluster.pods(
            "splitlearn.io/splitmodel=off,app.kubernetes.io/component=serving"),
        60, "the server removed",
    )  # fmt: skip
    assert "serving" not in status_of(cluster, "off")
    assert cluster.condition("off", "Serving") == {}
    assert "ServingStopped" in [e["reason"] for e in cluster.events("off")]
    assert READY_SERVERS not in await scrape(metrics_port)  # the series goes with the server

    assert await cluster.patch_spec("off", {"serving": {"enabled": True}}) == 200
    await cluster.eventually(lambda: is_ready(cluster, "off", 3) and endpoints(cluster, "off"),
                             120, "served again")  # fmt: skip
    assert await cluster.delete("off") == 200
    await cluster.eventually(lambda: cluster.splitmodel("off") is None, 120, "deleted")
    assert not list((volume / "trunk").glob("off_*"))  # files removed, after the server went
    assert removed()


async def test_a_serving_splitmodel_without_autosave_is_refused(cluster):
    code, body = await cluster.apply(served("nosave", split={"autoSave": False}))
    assert code == 422
    assert "spec.serving needs spec.splitStorageConfig.autoSave: true" in body["message"]


async def test_a_missing_tls_secret_stalls_once_without_a_hot_loop(cluster, gpt2_source):
    await started(cluster, gpt2_source)
    await cluster.apply(served("tls", serving={"enabled": True, "tls": {"secretName": "nope"}}))
    await cluster.eventually(
        lambda: cluster.condition("tls", "Stalled").get("reason") == "ServingSecretNotFound",
        120, "stalled on the Secret",
    )  # fmt: skip
    assert 'secret "nope" not found' in cluster.condition("tls", "Stalled")["message"]
    assert cluster.condition("tls", "Ready")["status"] == "False"
    await assert_quiet(cluster, "tls", "ServingSecretNotFound")


async def test_a_crash_looping_server_stalls_with_its_last_line(cluster, gpt2_source):
    volume = await started(cluster, gpt2_source)
    await cluster.apply(served("crash"))
    await cluster.eventually(lambda: is_ready(cluster, "crash"), 180, "served")
    await cluster.patch_spec("crash", {"serving": {"replicas": 0}})
    await cluster.eventually(lambda: not endpoints(cluster, "crash") and is_ready(cluster, "crash"),
                             60, "scaled to zero")  # fmt: skip
    trunk = volume / "trunk" / "crash_2-10_trunk.pt"
    data = bytearray(trunk.read_bytes())
    data[-100] ^= 0xFF  # a flipped byte: the sha256 no longer matches the metadata
    trunk.write_bytes(bytes(data))
    await cluster.patch_spec("crash", {"serving": {"replicas": 1}})
    await cluster.eventually(
        lambda: cluster.condition("crash", "Stalled").get("reason") == "ServingCrashLoop",
        120, "stalled: crash loop",
    )  # fmt: skip
    message = cluster.condition("crash", "Stalled")["message"]
    assert message.startswith("pod crash-trunk-") and "keeps exiting" in message
    assert "sha256" in message
    await assert_quiet(cluster, "crash", "ServingCrashLoop")


async def assert_quiet(cluster: Cluster, name: str, reason: str) -> None:
    """One Warning Event for the stall, and the status not rewritten while nothing changes
    (the server keeps restarting meanwhile)."""
    await asyncio.sleep(2)
    version = cluster.splitmodel(name)["metadata"]["resourceVersion"]
    await asyncio.sleep(4)
    warnings = [e for e in cluster.events(name) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == [reason]
    assert cluster.splitmodel(name)["metadata"]["resourceVersion"] == version
