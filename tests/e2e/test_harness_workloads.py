"""The harness's Deployments: a controller as kube-controller-manager's, pods really run by the
test kubelet, each in a network namespace of its own, probed over gRPC."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support.cluster import NAMESPACE, Cluster
from support.containers import Mountpoints
from support.network import remove_stale, run_tag
from support.node import grpc_health
from support.workloads import PODS, resolve_fraction

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v ip"], capture_output=True).returncode != 0,
    reason="the pods' network namespaces need iproute2's `ip`",
)

#: A gRPC health server: "" is SERVING once $READY_FILE exists (at once without it), "warm"
#: once $WARM_FILE exists; the pod's own name and "version-$VERSION" are always SERVING.
SERVER = """
import os, signal, sys, threading, time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
server = grpc.server(futures.ThreadPoolExecutor(4))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("0.0.0.0:50051")
server.start()
servicer.set(os.environ["HOSTNAME"], SERVING)
servicer.set("version-" + os.environ.get("VERSION", "1"), SERVING)
print("serving", os.environ["HOSTNAME"], flush=True)


def gates():
    while True:
        for service, variable in (("", "READY_FILE"), ("warm", "WARM_FILE")):
            gate = os.environ.get(variable)
            servicer.set(service, SERVING if not gate or os.path.exists(gate) else NOT_SERVING)
        time.sleep(0.05)


threading.Thread(target=gates, daemon=True).start()
signal.signal(signal.SIGTERM, lambda *_: (server.stop(0), sys.exit(0)))
server.wait_for_termination()
"""


@pytest.fixture(scope="session")
def server_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("server")
    folder.chmod(0o755)
    path = folder / "health_server.py"
    path.write_text(SERVER)
    return path


def deployment(
    name: str,
    script: Path,
    replicas: int | None = 1,
    env: dict[str, str] | None = None,
    container: dict[str, Any] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    labels = {"app": name}
    body: dict[str, Any] = {
        "name": "server",
        "image": "harness/health-server:1",
        "command": [sys.executable, str(script)],
        "ports": [{"name": "grpc", "containerPort": 50051}],
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "readinessProbe": {"grpc": {"port": 50051}, "periodSeconds": 1},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **(container or {}),
    }
    body = {key: value for key, value in body.items() if value is not None}
    result: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [body], "volumes": volumes or [],
                         "terminationGracePeriodSeconds": 10},
            },
            **spec,
        },
    }  # fmt: skip
    if replicas is not None:
        result["spec"]["replicas"] = replicas
    return result


async def create(cluster: Cluster, body: dict[str, Any]) -> dict[str, Any]:
    plural = {"Deployment": "deployments", "Service": "services", "Secret": "secrets",
              "ConfigMap": "configmaps"}[body["kind"]]  # fmt: skip
    prefix = "/apis/apps/v1" if body["kind"] == "Deployment" else "/api/v1"
    status, answer = await cluster.request(
        "POST", f"{prefix}/namespaces/{NAMESPACE}/{plural}", body
    )
    assert status == 201, answer
    return answer


async def patch(cluster: Cluster, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    status, answer = await cluster.request(
        "PATCH", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}", patch,
        "application/merge-patch+json",
    )  # fmt: skip
    assert status == 200, answer
    return answer


def service(name: str, target: Any = "grpc") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"selector": {"app": name},
                 "ports": [{"name": "metrics", "port": 8000, "targetPort": 8000},
                           {"name": "grpc", "port": 50051, "targetPort": target}]},
    }  # fmt: skip


def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    return (cluster.deployment(name) or {}).get("status") or {}


def condition(cluster: Cluster, name: str, kind: str) -> dict[str, Any]:
    for item in status_of(cluster, name).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def container(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def ready_pods(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [
        pod for pod in cluster.pods({"app": name})
        if any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))
    ]  # fmt: skip


async def rolled_out(cluster: Cluster, name: str, replicas: int, timeout: float = 20) -> None:
    def done() -> bool:
        body = cluster.deployment(name) or {}
        status = body.get("status") or {}
        return (
            status.get("observedGeneration") == body["metadata"]["generation"]
            and status.get("replicas", 0) == replicas
            and status.get("updatedReplicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
            and condition(cluster, name, "Progressing").get("reason") == "NewReplicaSetAvailable"
        )

    await cluster.eventually(done, timeout, f"{name} rolled out with {replicas} replicas")


async def health(address: str, service: str = "") -> tuple[bool, str]:
    return await asyncio.to_thread(grpc_health, address, service, 2.0)


async def test_replicas_have_their_own_address_and_status(cluster, server_script):
    await create(cluster, deployment("web", server_script, replicas=2))
    await create(cluster, service("web"))
    await rolled_out(cluster, "web", 2)
    pods = cluster.pods("app=web")
    assert len(pods) == 2
    addresses = [pod["status"]["podIP"] for pod in pods]
    assert len(set(addresses)) == 2
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.213.0.0/16") for a in addresses)
    assert [pod["status"]["podIPs"] for pod in pods] == [[{"ip": a}] for a in addresses]
    for pod in pods:  # both answer on the same port, each as itself
        address = f"{pod['status']['podIP']}:50051"
        assert await health(address, pod["metadata"]["name"]) == (True, "")
        assert pod["metadata"]["labels"]["app"] == "web"
        template_hash = pod["metadata"]["labels"]["pod-template-hash"]
        assert pod["metadata"]["name"].startswith(f"web-{template_hash}-")
        owner = pod["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("Deployment", "web", True)
        assert container(pod)["ready"] and container(pod)["restartCount"] == 0
        assert pod["status"]["phase"] == "Running"
    assert cluster.endpoints("web") == sorted(f"{a}:50051" for a in addresses)
    body = cluster.deployment("web")
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"] == 1
    assert {k: v for k, v in status.items() if k.endswith("eplicas")} == {
        "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
    }  # fmt: skip
    available = condition(cluster, "web", "Available")
    assert (available["status"], available["reason"]) == ("True", "MinimumReplicasAvailable")
    progressing = condition(cluster, "web", "Progressing")
    assert progressing["status"] == "True"
    assert progressing["reason"] == "NewReplicaSetAvailable"
    replica_set = f"web-{template_hash}"
    assert progressing["message"] == f'ReplicaSet "{replica_set}" has successfully progressed.'
    scaled = [e["message"] for e in cluster.events("web") if e["reason"] == "ScalingReplicaSet"]
    assert scaled == [f"Scaled up replica set web-{template_hash} from 0 to 2"]
    # Nothing changes any more: no status writes (the operator watches Deployments).
    version = body["metadata"]["resourceVersion"]
    pod_versions = [pod["metadata"]["resourceVersion"] for pod in pods]
    await asyncio.sleep(1.0)
    assert cluster.deployment("web")["metadata"]["resourceVersion"] == version
    assert [pod["metadata"]["resourceVersion"] for pod in cluster.pods("app=web")] == pod_versions


async def test_endpoints_list_only_ready_pods(cluster, server_script):
    gates = cluster.claim("gates")
    body = deployment(
        "gated", server_script, replicas=2,
        volumes=[{"name": "gates", "persistentVolumeClaim": {"claimName": "gates"}}],
        container={"volumeMounts": [{"name": "gates", "mountPath": "/gates"}],
                   "command": ["sh", "-c", f'READY_FILE=/gates/$HOSTNAME exec {sys.executable} '
                               f'{server_script}']},
    )  # fmt: skip
    await create(cluster, body)
    await create(cluster, service("gated", target=50051))
    await cluster.eventually(
        lambda: len([p for p in cluster.pods("app=gated") if container(p).get("started")]) == 2,
        20, "two servers running",
    )  # fmt: skip
    await asyncio.sleep(0.5)
    assert cluster.endpoints("gated") == []
    assert status_of(cluster, "gated").get("readyReplicas") is None  # omitted when 0
    first, second = cluster.pods("app=gated")
    (gates / first["metadata"]["name"]).touch()
    await cluster.eventually(lambda: len(cluster.endpoints("gated")) == 1, 10, "one endpoint")
    assert cluster.endpoints("gated") == [f"{first['status']['podIP']}:50051"]
    await cluster.eventually(
        lambda: status_of(cluster, "gated").get("readyReplicas") == 1, 5, "readyReplicas 1"
    )
    available = condition(cluster, "gated", "Available")  # maxUnavailable 0: 2 needed
    assert (available["status"], available["reason"]) == ("False", "MinimumReplicasUnavailable")
    assert status_of(cluster, "gated")["unavailableReplicas"] == 1
    (gates / second["metadata"]["name"]).touch()
    await cluster.eventually(lambda: len(cluster.endpoints("gated")) == 2, 10, "two endpoints")
    (gates / first["metadata"]["name"]).unlink()  # readiness fails again: out of the Service
    await cluster.eventually(
        lambda: cluster.endpoints("gated") == [f"{second['status']['podIP']}:50051"], 10,
        "the first pod out of the endpoints",
    )  # fmt: skip


async def test_scale_two_to_zero_to_one(cluster, server_script):
    await create(cluster, deployment("scaled", server_script, replicas=2))
    await rolled_out(cluster, "scaled", 2)
    before = cluster.pods("app=scaled")
    answer = await patch(cluster, "scaled", {"spec": {"replicas": 0}})
    assert answer["metadata"]["generation"] == 2
    await rolled_out(cluster, "scaled", 0)
    status = status_of(cluster, "scaled")
    assert status == {"observedGeneration": 2, "conditions": status["conditions"]}
    assert cluster.pods("app=scaled") == []
    networks = cluster.kubelet.workloads.networks
    await cluster.eventually(
        lambda: not cluster.kubelet.workloads.pods and networks.namespaces() == [], 10,
        "the scaled-down pods' processes and network namespaces gone",
    )  # fmt: skip
    assert not any(p["metadata"]["name"] in str(networks.active) for p in before)
    await patch(cluster, "scaled", {"spec": {"replicas": 1}})
    await rolled_out(cluster, "scaled", 1)
    (pod,) = cluster.pods("app=scaled")
    assert await health(f"{pod['status']['podIP']}:50051") == (True, "")
    # Deleting the Deployment takes its pods along (their processes too).
    status, _ = await cluster.request(
        "DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/scaled"
    )
    assert status == 200
    assert cluster.pods("app=scaled") == []
    await cluster.eventually(lambda: not cluster.kubelet.workloads.pods, 10, "no pod runs")


async def test_killed_container_restarts_in_the_same_pod(cluster, server_script):
    await create(cluster, deployment("killed", server_script))
    await rolled_out(cluster, "killed", 1)
    (pod,) = cluster.pods("app=killed")
    name, address = pod["metadata"]["name"], pod["status"]["podIP"]
    cluster.kubelet.kill_container(NAMESPACE, name)
    await cluster.eventually(
        lambda: container(cluster.api.get(PODS, NAMESPACE, name)).get("restartCount") == 1
        and container(cluster.api.get(PODS, NAMESPACE, name))["ready"],
        20, "the container restarted and ready again",
    )  # fmt: skip
    again = cluster.api.get(PODS, NAMESPACE, name)
    terminated = container(again)["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")
    assert again["status"]["podIP"] == address
    assert await health(f"{address}:50051", name) == (True, "")
    assert [p["metadata"]["name"] for p in cluster.pods("app=killed")] == [name]


async def test_crash_loop_back_off(cluster, server_script):
    crashing = {"command": ["sh", "-c", "echo cannot load the trunk >&2; exit 1"]}
    await create(cluster, deployment("crashing", server_script, container=crashing))

    def backing_off() -> dict[str, Any] | None:
        pods = cluster.pods("app=crashing")
        state = container(pods[0]) if pods else {}
        waiting = state.get("state", {}).get("waiting", {})
        return state if waiting.get("reason") == "CrashLoopBackOff" else None

    state = await cluster.eventually(backing_off, 20, "CrashLoopBackOff")
    (pod,) = cluster.pods("app=crashing")
    assert pod["status"]["phase"] == "Running"
    assert state["restartCount"] >= 1 and state["ready"] is False
    terminated = state["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")
    assert terminated["message"] == "cannot load the trunk\n"  # FallbackToLogsOnError
    message = state["state"]["waiting"]["message"]
    assert message.startswith("back-off 10s restarting failed container=server pod=")
    await cluster.eventually(
        lambda: container(cluster.pods("app=crashing")[0])["restartCount"] >= 3, 20,
        "more restarts, further apart",
    )  # fmt: skip
    later = container(cluster.pods("app=crashing")[0])["state"].get("waiting", {})
    assert later.get("message", "back-off 40s").startswith(("back-off 20s", "back-off 40s"))
    reasons = {e["reason"] for e in cluster.events(pod["metadata"]["name"])}
    assert {"Scheduled", "Started", "BackOff"} <= reasons
    assert condition(cluster, "crashing", "Available")["status"] == "False"


async def test_a_deleted_pod_is_replaced(cluster, server_script):
    await create(cluster, deployment("replaced", server_script))
    await rolled_out(cluster, "replaced", 1)
    (pod,) = cluster.pods("app=replaced")
    status, _ = await cluster.request(
        "DELETE", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod['metadata']['name']}"
    )
    assert status == 200
    await cluster.eventually(
        lambda: [p["metadata"]["name"] for p in ready_pods(cluster, "replaced")]
        not in ([], [pod["metadata"]["name"]]),
        20, "a new ready pod",
    )  # fmt: skip
    (new,) = cluster.pods("app=replaced")
    labels = new["metadata"]["labels"]
    assert labels["pod-template-hash"] == pod["metadata"]["labels"]["pod-template-hash"]
    assert await health(f"{new['status']['podIP']}:50051", new["metadata"]["name"]) == (True, "")
    scaled = [e for e in cluster.events("replaced") if e["reason"] == "ScalingReplicaSet"]
    assert len(scaled) == 1  # a replacement is no scaling


async def test_a_rollout_never_leaves_the_service_without_a_ready_pod(cluster, server_script):
    await create(cluster, deployment("rolling", server_script, replicas=2, env={"VERSION": "1"}))
    await create(cluster, service("rolling"))
    await rolled_out(cluster, "rolling", 2)
    old = {pod["metadata"]["name"] for pod in cluster.pods("app=rolling")}
    template = cluster.deployment("rolling")["spec"]["template"]
    template["spec"]["containers"][0]["env"] = [{"name": "VERSION", "value": "2"}]
    await patch(cluster, "rolling", {"spec": {"template": template}})
    reasons, counts = set(), []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        endpoints = cluster.endpoints("rolling")
        assert endpoints, "a moment without any ready endpoint"
        counts.append(len(endpoints))
        reasons.add(condition(cluster, "rolling", "Progressing").get("reason"))
        names = {pod["metadata"]["name"] for pod in cluster.pods("app=rolling")}
        status = status_of(cluster, "rolling")
        if (
            not names & old
            and status.get("availableReplicas") == 2
            and status.get("observedGeneration") == 2
            and "NewReplicaSetAvailable" in reasons
            and len(endpoints) == 2
        ):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"the rollout did not end\n{cluster.logs()[-4000:]}")
    assert max(counts) <= 3  # maxSurge 1
    assert "ReplicaSetUpdated" in reasons or "NewReplicaSetCreated" in reasons
    for endpoint in cluster.endpoints("rolling"):
        assert await health(endpoint, "version-2") == (True, "")
    events = [e["message"] for e in cluster.events("rolling") if e["reason"] == "ScalingReplicaSet"]
    assert any("Scaled down replica set" in message for message in events)


async def test_a_missing_secret_holds_the_pod_until_it_exists(cluster, server_script):
    out = cluster.claim("out")
    copy = f"cp /tls/tls.crt /out/tls.crt; touch /tls/x 2>/dev/null || echo ro > /out/tls-ro; exec {sys.executable} {server_script}"  # noqa: E501
    body = deployment(
        "secured", server_script,
        volumes=[{"name": "tls", "secret": {"secretName": "secured-tls"}},
                 {"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
        container={"command": ["sh", "-c", copy],
                   "volumeMounts": [{"name": "tls", "mountPath": "/tls"},
                                    {"name": "out", "mountPath": "/out"}]},
    )  # fmt: skip
    await create(cluster, body)
    message = 'MountVolume.SetUp failed for volume "tls" : secret "secured-tls" not found'

    def failed_mount() -> bool:
        pods = cluster.pods("app=secured")
        return bool(pods) and any(
            e["reason"] == "FailedMount" and e["type"] == "Warning" and e["message"] == message
            for e in cluster.events(pods[0]["metadata"]["name"])
        )

    await cluster.eventually(failed_mount, 10, "a FailedMount event")
    (pod,) = cluster.pods("app=secured")
    assert pod["status"]["phase"] == "Pending"
    assert container(pod)["state"] == {"waiting": {"reason": "ContainerCreating"}}
    await create(cluster, {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": "secured-tls", "namespace": NAMESPACE},
        "data": {"tls.crt": base64.b64encode(b"CERTIFICATE").decode()},
        "stringData": {"tls.key": "KEY"},
    })  # fmt: skip
    await rolled_out(cluster, "secured", 1)
    assert (out / "tls.crt").read_bytes() == b"CERTIFICATE"
    assert (out / "tls-ro").read_text() == "ro\n"  # a secret volume is read-only


async def test_configmap_files_and_a_read_only_claim(cluster, server_script):
    data = cluster.claim("data")
    (data / "weights").write_text("w")
    out = cluster.claim("results")
    await create(cluster, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": NAMESPACE},
        "data": {"server.yaml": "port: 50051\n", "other": "x"},
    })  # fmt: skip
    await create(cluster, {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "nested", "namespace": NAMESPACE}, "stringData": {"ca.crt": "CA"},
    })  # fmt: skip
    script = (
        "cat /etc/app/config.yaml > /out/config; cat /data/weights > /out/weights; "
        "cat /etc/app/ca/ca.crt > /out/ca; "
        "touch /data/new 2>/dev/null && echo writable > /out/data || echo ro > /out/data; "
        "ls /etc/app > /out/listing; exec sleep 3600"
    )
    body = deployment(
        "configured", server_script,
        volumes=[{"name": "config", "configMap": {"name": "settings", "items": [
                     {"key": "server.yaml", "path": "config.yaml"}]}},
                 {"name": "data", "persistentVolumeClaim": {"claimName": "data",
                                                            "readOnly": True}},
                 {"name": "out", "persistentVolumeClaim": {"claimName": "results"}},
                 {"name": "ca", "secret": {"secretName": "nested"}}],
        container={"command": ["sh", "-c", script],
                   "readinessProbe": {"exec": {"command": ["test", "-s", "/out/listing"]},
                                      "periodSeconds": 1},
                   "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": True},
                                    {"name": "ca", "mountPath": "/etc/app/ca"},
                                    {"name": "data", "mountPath": "/data"},
                                    {"name": "out", "mountPath": "/out"}]},
    )  # fmt: skip
    await create(cluster, body)
    await rolled_out(cluster, "configured", 1)
    assert (out / "config").read_text() == "port: 50051\n"
    assert (out / "listing").read_text() == "ca\nconfig.yaml\n"  # `items` only, and a mount
    assert (out / "ca").read_text() == "CA"  # a Secret's volume inside a ConfigMap's
    assert (out / "weights").read_text() == "w"
    assert (out / "data").read_text() == "ro\n"
    assert not (data / "new").exists()


async def test_an_image_that_does_not_exist(cluster, server_script):
    body = deployment(
        "unpulled", server_script, container={"image": "registry.example/does-not-exist:1"},
        progressDeadlineSeconds=20,
    )  # fmt: skip
    await create(cluster, body)

    def waiting_reason() -> str:
        pods = cluster.pods("app=unpulled") or [{}]
        return str(container(pods[0]).get("state", {}).get("waiting", {}).get("reason", ""))

    await cluster.eventually(lambda: waiting_reason() == "ErrImagePull", 10, "ErrImagePull")
    await cluster.eventually(lambda: waiting_reason() == "ImagePullBackOff", 10, "back-off")
    (pod,) = cluster.pods("app=unpulled")
    assert container(pod)["state"]["waiting"]["message"] == (
        'Back-off pulling image "registry.example/does-not-exist:1"'
    )
    assert pod["status"]["phase"] == "Pending"
    await cluster.eventually(
        lambda: condition(cluster, "unpulled", "Progressing").get("reason")
        == "ProgressDeadlineExceeded", 10, "the progress deadline",
    )  # fmt: skip
    progressing = condition(cluster, "unpulled", "Progressing")
    assert progressing["status"] == "False"
    assert progressing["message"].endswith("has timed out progressing.")
    status = status_of(cluster, "unpulled")
    assert (status["replicas"], status["unavailableReplicas"]) == (1, 1)
    assert "availableReplicas" not in status
    assert condition(cluster, "unpulled", "Available")["status"] == "False"


async def test_startup_probe_gates_readiness_and_liveness_restarts(cluster, server_script):
    warm = cluster.claim("warm")
    probes = {
        "env": [{"name": "WARM_FILE", "value": "/warm/ok"}],
        "volumeMounts": [{"name": "warm", "mountPath": "/warm"}],
        "startupProbe": {"grpc": {"port": 50051, "service": "warm"}, "periodSeconds": 1,
                         "failureThreshold": 600},
        "livenessProbe": {"tcpSocket": {"port": "grpc"}, "periodSeconds": 1},
    }  # fmt: skip
    volumes = [{"name": "warm", "persistentVolumeClaim": {"claimName": "warm"}}]
    await create(cluster, deployment("warming", server_script, container=probes, volumes=volumes))
    await cluster.eventually(
        lambda: cluster.pods("app=warming")
        and "running" in container(cluster.pods("app=warming")[0])["state"], 10, "running",
    )  # fmt: skip
    await asyncio.sleep(1.5)  # serving, but not started: not ready either
    (pod,) = cluster.pods("app=warming")
    assert await health(f"{pod['status']['podIP']}:50051") == (True, "")
    assert (container(pod)["started"], container(pod)["ready"]) == (False, False)
    (warm / "ok").touch()
    await rolled_out(cluster, "warming", 1)
    (pod,) = cluster.pods("app=warming")
    assert container(pod)["started"] and container(pod)["restartCount"] == 0
    # A liveness probe on a port nothing listens on: killed and restarted.
    liveness = {"tcpSocket": {"port": 50052}, "periodSeconds": 1, "failureThreshold": 2}
    dead = {"readinessProbe": None, "livenessProbe": liveness}
    await create(cluster, deployment("dead", server_script, container=dead))
    await cluster.eventually(
        lambda: cluster.pods("app=dead")
        and container(cluster.pods("app=dead")[0])["restartCount"] >= 1, 20, "a liveness kill",
    )  # fmt: skip
    (dead,) = cluster.pods("app=dead")
    events = {(e["reason"], e["message"]) for e in cluster.events(dead["metadata"]["name"])}
    assert ("Killing", "Container server failed liveness probe, will be restarted") in events


async def test_stop_leaves_no_network_namespace(cluster, server_script):
    networks = cluster.kubelet.workloads.networks
    await create(cluster, deployment("stopped", server_script, replicas=2))
    await rolled_out(cluster, "stopped", 2)
    assert len(networks.namespaces()) == 2
    links = [network.link for network in networks.active.values()]
    pids = [runner.containers[0].process.pid for runner in cluster.kubelet.workloads.pods.values()]
    await cluster.kubelet.stop()
    assert networks.namespaces() == []
    listing = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not any(f" {link}@" in listing for link in links)
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


async def test_pods_without_processes_for_benchmarks(cluster, server_script):
    cluster.kubelet.run_deployment_pods = False
    started = time.monotonic()
    for index in range(50):
        await create(cluster, deployment(f"bench-{index}", server_script, replicas=None))
    for index in range(50):
        await rolled_out(cluster, f"bench-{index}", 1, timeout=10)
    assert time.monotonic() - started < 10
    assert cluster.kubelet.workloads.pods == {}
    assert cluster.kubelet.workloads.networks.namespaces() == []
    (pod,) = cluster.pods("app=bench-0")
    assert container(pod)["ready"] and pod["status"]["podIP"]


async def test_recreate_removes_the_old_pods_first(cluster, server_script):
    body = deployment("recreated", server_script, replicas=2, strategy={"type": "Recreate"})
    await create(cluster, body)
    await rolled_out(cluster, "recreated", 2)
    old = {pod["metadata"]["name"] for pod in cluster.pods("app=recreated")}
    template = cluster.deployment("recreated")["spec"]["template"]
    template["spec"]["containers"][0]["env"] = [{"name": "VERSION", "value": "2"}]
    await patch(cluster, "recreated", {"spec": {"template": template}})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        names = {pod["metadata"]["name"] for pod in cluster.pods("app=recreated")}
        assert not (names & old and names - old), "old and new pods at once"
        if names and not names & old and len(ready_pods(cluster, "recreated")) == 2:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the Recreate rollout did not end")
    await rolled_out(cluster, "recreated", 2)


def test_max_surge_and_max_unavailable_resolve_as_the_controller_does():
    assert [resolve_fraction("25%", n, round_up=True) for n in (1, 2, 4, 5)] == [1, 1, 1, 2]
    assert [resolve_fraction("25%", n, round_up=False) for n in (1, 2, 4, 5)] == [0, 0, 1, 1]
    assert resolve_fraction(1, 10, round_up=True) == 1
    assert resolve_fraction("100%", 3, round_up=False) == 3


async def test_leftovers_of_a_dead_run_are_removed_and_only_those():
    finished = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True)
    dead = f"slk-{int(finished.stdout)}-1-0"  # that process is gone
    alive = f"{run_tag()}-999"  # this process: a live run
    for name in (dead, alive):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        removed = await remove_stale()
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert dead in removed and dead not in listing
        assert alive not in removed and alive in listing
    finally:
        for name in (dead, alive):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_mount_targets_made_for_pods_stay_while_another_run_uses_them(tmp_path):
    registry = tmp_path / "registry"
    first, second = Mountpoints(registry), Mountpoints(registry)
    target = tmp_path / "made" / "here"
    first.ensure(str(target))
    second.ensure(str(target))
    first.release()
    assert target.is_dir()  # the second run still binds onto it
    (second._entry(target) / "slk-1234567-1-0").touch()  # a run that died without releasing
    second.release()
    assert not (tmp_path / "made").exists()
    assert list(registry.iterdir()) == [registry / ".lock"]
    kept = tmp_path / "kept"
    kept.mkdir()
    first.ensure(str(kept / "inside"))
    first.release()
    assert kept.is_dir() and not (kept / "inside").exists()  # not made by a harness: kept
