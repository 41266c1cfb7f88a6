"""The e2e cluster: an emulated API server, a kubelet that runs Jobs, real operator processes."""

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
from support.kubernetes import RealisticKubernetes
from support.operator import OperatorProcess, write_kubeconfig

NAMESPACE = "ml"
SPLITMODELS = resource("splitlearn.io", "v1alpha1", "splitmodels")
JOBS = resource("batch", "v1", "jobs")
PODS = resource("", "v1", "pods")
PVCS = resource("", "v1", "persistentvolumeclaims")
EVENTS = resource("", "v1", "events")
NAMESPACES = resource("", "v1", "namespaces")


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
        pods = sorted((self.kubelet.root / "pods").glob("*/stdout.log"))
        return "\n".join(
            [operator.logs() for operator in self.operators]
            + [
                f"--- pod {log.parent.name} ---\n{log.read_text(errors='replace')[-3000:]}"
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
