"""The e2e cluster: an emulated API server, a kubelet that runs Jobs and Deployments' pods, real
operator processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from kmock import resource

from support.kubelet import Kubelet
from support.kubernetes import RealisticKubernetes, matches_labels
from support.operator import OperatorProcess, write_kubeconfig

NAMESPACE = "ml"
SPLITMODELS = resource("splitlearn.io", "v1alpha1", "splitmodels")
JOBS = resource("batch", "v1", "jobs")
PODS = resource("", "v1", "pods")
PVCS = resource("", "v1", "persistentvolumeclaims")
EVENTS = resource("", "v1", "events")
NAMESPACES = resource("", "v1", "namespaces")
SERVICES = resource("", "v1", "services")
DEPLOYMENTS = resource("apps", "v1", "deployments")
CONFIGMAPS = resource("", "v1", "configmaps")
SECRETS = resource("", "v1", "secrets")


def _selector(selector: str | dict[str, str] | None) -> str:
    if isinstance(selector, dict):
        return ",".join(f"{key}={value}" for key, value in selector.items())
    return selector or ""


@dataclass
class Cluster:
    api: RealisticKubernetes
    kubelet: Kubelet
    url: str
    root: Path
    operators: list[OperatorProcess] = field(default_factory=list)

    # ---- kubectl-like calls over HTTP (what users and GitOps tools do)

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, session.request(
            method, self.url.rstrip("/") + path,
            data=json.dumps(body) if body is not None else None,
            headers={"Content-Type": content_type},
        ) as response:  # fmt: skip
            text = await response.text()
            return response.status, (json.loads(text) if text else {})

    async def apply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        namespace = body["metadata"].get("namespace", NAMESPACE)
        return await self.request(
            "POST", f"/apis/splitlearn.io/v1alpha1/namespaces/{namespace}/splitmodels", body
        )

    async def patch_spec(self, name: str, spec: dict[str, Any], namespace: str = NAMESPACE) -> int:
        status, _ = await self.request(
            "PATCH", f"/apis/splitlearn.io/v1alpha1/namespaces/{namespace}/splitmodels/{name}",
            {"spec": spec}, "application/merge-patch+json",
        )  # fmt: skip
        return status

    async def delete(self, name: str, namespace: str = NAMESPACE) -> int:
        status, _ = await self.request(
            "DELETE", f"/apis/splitlearn.io/v1alpha1/namespaces/{namespace}/splitmodels/{name}"
        )
        return status

    def claim(self, name: str, namespace: str = NAMESPACE) -> Path:
        """Create a PersistentVolumeClaim object and return its volume's folder."""
        if self.api.get(PVCS, namespace, name) is None:
            self.api.put(PVCS, {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}},
            })  # fmt: skip
        return self.kubelet.volume(namespace, name)

    def splitmodel(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.api.get(SPLITMODELS, namespace, name)

    def condition(self, name: str, kind: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        body = self.splitmodel(name, namespace) or {}
        for condition in (body.get("status") or {}).get("conditions", []):
            if condition["type"] == kind:
                return dict(condition)
        return {}

    def jobs(
        self, namespace: str = NAMESPACE, component: str | None = "split"
    ) -> list[dict[str, Any]]:
        return [
            job for job in self.api.objects(JOBS, namespace)
            if component is None
            or job["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]  # fmt: skip

    def deployment(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
        return self.api.get(DEPLOYMENTS, namespace, name)

    def pods(
        self, selector: str | dict[str, str] | None = None, namespace: str = NAMESPACE
    ) -> list[dict[str, Any]]:
        """The pods whose labels match `selector` (`a=b,c` or a dict), oldest first."""
        wanted = _selector(selector)
        found = [
            pod for pod in self.api.objects(PODS, namespace)
            if matches_labels(pod["metadata"].get("labels", {}), wanted)
        ]  # fmt: skip
        return sorted(found, key=lambda pod: int(pod["metadata"]["resourceVersion"]))

    def endpoints(self, service: str, namespace: str = NAMESPACE) -> list[str]:
        """`podIP:port` of each ready pod the Service selects (what its Endpoints would list),
        on the Service port named `grpc` (else its first) resolved through `targetPort`."""
        body = self.api.get(SERVICES, namespace, service)
        if body is None:
            return []
        ports = body["spec"].get("ports") or []
        port = next((p for p in ports if p.get("name") == "grpc"), ports[0] if ports else None)
        selector = body["spec"].get("selector")
        if port is None or not selector:
            return []
        target = port.get("targetPort", port["port"])
        found = []
        for pod in self.pods(selector, namespace):
            status = pod.get("status") or {}
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
            )
            if not ready or not status.get("podIP") or pod["metadata"].get("deletionTimestamp"):
                continue
            number = target if isinstance(target, int) or str(target).isdigit() else next(
                (p["containerPort"] for c in pod["spec"]["containers"]
                 for p in c.get("ports", []) if p.get("name") == target), None,
            )  # fmt: skip
            if number is not None:
                found.append(f"{status['podIP']}:{number}")
        return sorted(found)

    def events(self, name: str, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return [
            event for event in self.api.objects(EVENTS, namespace)
            if event.get("involvedObject", {}).get("name") == name
        ]  # fmt: skip

    async def operator(
        self, namespaces: list[str] | None = None, **settings: Any
    ) -> OperatorProcess:
        """Start an operator watching `namespaces` (default: the test namespace; [] for all)."""
        directory = self.root / f"operator{len(self.operators)}"
        directory.mkdir()
        process = OperatorProcess(
            directory, write_kubeconfig(directory / "kubeconfig", self.url),
            [NAMESPACE] if namespaces is None else namespaces, settings,
        )  # fmt: skip
        self.operators.append(process)
        await process.start()
        return process

    def logs(self) -> str:
        """The operators' logs, then every pod's output: what to read when a test fails."""
        folder = self.kubelet.root / "pods"
        pods = sorted(folder.rglob("stdout.log")) if folder.is_dir() else []
        return "\n".join(
            [operator.logs() for operator in self.operators]
            + [f"--- test kubelet error: {error}" for error in self.kubelet.workloads.node.errors]
            + [
                f"--- pod {log.parent.relative_to(folder)} ---\n"
                f"{log.read_text(errors='replace')[-3000:]}"
                for log in pods
            ]
        )

    async def eventually(
        self, check: Callable[[], Any], timeout: float = 60, what: str = "a condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n--- logs ---\n{self.logs()[-8000:]}")


def splitmodel(name: str, **spec: Any) -> dict[str, Any]:
    """A SplitModel manifest; keyword arguments override the spec."""
    base: dict[str, Any] = {
        "modelType": "gpt2",
        "modelPath": "gpt2",
        "source": {"claimName": "models-src"},
        "storage": {"claimName": "models"},
        "splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/models"},
    }
    base.update(spec)
    return {
        "apiVersion": "splitlearn.io/v1alpha1",
        "kind": "SplitModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": base,
    }


def put_checkpoint(
    cluster: Cluster, source: Path, claim: str = "models-src", name: str = "gpt2"
) -> Path:
    volume = cluster.claim(claim)
    target = volume / name
    if not target.exists():
        shutil.copytree(source, target)
    return target
