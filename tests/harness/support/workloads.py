"""Deployments in the e2e harness: the Deployment controller, and a node that runs their pods.

`DeploymentController` (the API side), for every Deployment in the store:

* pods from `spec.template` named `<deployment>-<pod-template-hash>-<5 chars>`, with the
  template's labels plus `pod-template-hash` (a hash of the template) and an ownerReference to
  the Deployment (no ReplicaSet objects: the pods are the Deployment's own);
* `spec.replicas` (default 1): missing pods are created, extra ones deleted (not ready first,
  then the newest), a pod deleted through the API is replaced;
* a template change rolls out: `RollingUpdate` with `maxSurge`/`maxUnavailable` (ints or
  percentages, 25% each by default, rounded as the controller does) or `Recreate`;
* `status`: observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas,
  unavailableReplicas (zeros left out, as the API server's omitempty does), conditions
  Available (MinimumReplicasAvailable/Unavailable) and Progressing (NewReplicaSetCreated,
  ReplicaSetUpdated, NewReplicaSetAvailable, or False with ProgressDeadlineExceeded once
  progressDeadlineSeconds pass without progress); written only when it changes;
* Normal `ScalingReplicaSet` Events on the Deployment.

Not emulated: ReplicaSet objects and revision history (so no rollback), `paused`, proportional
scaling of several old templates, adoption of orphaned pods, the `/scale` subresource's own
shape.

The pods themselves are run by `support.node`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kmock import resource

from support.kubernetes import now
from support.network import Networks
from support.node import EVENTS, NODE, PODS, Node, PodRunner

if TYPE_CHECKING:
    from support.kubelet import Kubelet

__all__ = ["DEPLOYMENTS", "EVENTS", "PODS", "DeploymentController", "Workloads"]

DEPLOYMENTS = resource("apps", "v1", "deployments")
HASH_LETTERS = "bcdfghjklmnpqrstvwxz2456789"  # the controller's SafeEncodeString alphabet


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(HASH_LETTERS[byte % len(HASH_LETTERS)] for byte in digest[:10])


def _suffix() -> str:
    return "".join(HASH_LETTERS[byte % len(HASH_LETTERS)] for byte in secrets.token_bytes(5))


def pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp"):
        return False
    for condition in (pod.get("status") or {}).get("conditions", ()):
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def resolve_fraction(value: Any, replicas: int, round_up: bool) -> int:
    """maxSurge / maxUnavailable: an int, or a percentage of replicas (surge rounds up)."""
    if isinstance(value, str) and value.endswith("%"):
        amount = replicas * int(value[:-1]) / 100
        return math.ceil(amount) if round_up else math.floor(amount)
    return int(value)


# ------------------------------------------------------------------------------ controller


@dataclass
class PodRecord:
    name: str
    hash: str
    created: float


@dataclass
class DeploymentState:
    pods: dict[str, PodRecord] = field(default_factory=dict)
    ready_since: dict[str, float] = field(default_factory=dict)
    hashes: set[str] = field(default_factory=set)  # templates that had "a replica set"
    sizes: dict[str, int] = field(default_factory=dict)  # pods per template, last sync
    deleted: set[str] = field(default_factory=set)  # pods deleted, maybe still stopping
    hash: str = ""
    hashed_generation: int = -1
    last_progress: float = field(default_factory=time.monotonic)
    fingerprint: Any = None
    wake_at: float = math.inf


class DeploymentController:
    """Keeps each Deployment's pods and status as the kube-controller-manager does."""

    def __init__(self, kubelet: Kubelet, node: Node) -> None:
        self.kubelet = kubelet
        self.api = kubelet.api
        self.node = node
        self.states: dict[str, DeploymentState] = {}
        self._addresses = 0

    def sync(self, deployments: list[dict[str, Any]]) -> None:
        if not deployments and not self.states:
            return
        alive = set()
        for deployment in deployments:
            uid = deployment["metadata"]["uid"]
            alive.add(uid)
            state = self.states.setdefault(uid, DeploymentState())
            if not deployment["metadata"].get("deletionTimestamp"):
                self._reconcile(deployment, state)
        for uid in [uid for uid in self.states if uid not in alive]:
            del self.states[uid]  # its pods go with it (ownerReferences)

    # ---- pods

    def _create_pod(self, deployment: dict[str, Any], state: DeploymentState) -> None:
        metadata = deployment["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        template = deployment["spec"].get("template", {})
        template_metadata = template.get("metadata", {})
        spec = copy.deepcopy(template.get("spec", {}))
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec["nodeName"] = NODE
        pod_name = f"{name}-{state.hash}-{_suffix()}"
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": {**template_metadata.get("labels", {}), "pod-template-hash": state.hash},
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                    "uid": metadata["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": spec,
        }  # fmt: skip
        if template_metadata.get("annotations"):
            body["metadata"]["annotations"] = dict(template_metadata["annotations"])
        pod = self.api.put(PODS, body)
        state.pods[pod_name] = PodRecord(pod_name, state.hash, time.monotonic())
        if self.kubelet.run_deployment_pods:
            self.node.admit(pod)
        else:
            self._addresses += 1
            address = f"127.213.{self._addresses // 250 % 250}.{self._addresses % 250 + 1}"
            self.api.write_status(PODS, namespace, pod_name, instant_status(pod, address))

    def _delete_pod(self, namespace: str, state: DeploymentState, name: str) -> None:
        state.pods.pop(name, None)
        state.ready_since.pop(name, None)
        state.deleted.add(name)
        with contextlib.suppress(Exception):
            self.api.remove(PODS, namespace, name)
        self.node.terminate(namespace, name)

    # ---- one Deployment

    def _reconcile(self, deployment: dict[str, Any], state: DeploymentState) -> None:
        metadata, spec = deployment["metadata"], deployment.get("spec") or {}
        namespace = metadata["namespace"]
        generation = int(metadata.get("generation", 1))
        if state.hashed_generation != generation:
            state.hash = template_hash(spec.get("template", {}))
            state.hashed_generation = generation
        store = self.api.store
        pods: dict[str, dict[str, Any]] = {}
        for pod_name in list(state.pods):
            found = store.get((PODS, namespace, pod_name))
            if found is None:
                state.pods.pop(pod_name)
                state.ready_since.pop(pod_name, None)
            else:
                pods[pod_name] = found
        moment = time.monotonic()
        fingerprint = (
            metadata.get("resourceVersion"),
            tuple(pod["metadata"].get("resourceVersion") for pod in pods.values()),
        )
        if fingerprint == state.fingerprint and moment < state.wake_at:
            return  # nothing changed and no timer is due
        state.fingerprint, state.wake_at = fingerprint, math.inf
        scale = self.kubelet.time_scale
        replicas = int(spec["replicas"]) if spec.get("replicas") is not None else 1
        min_ready = float(spec.get("minReadySeconds", 0)) * scale
        available: dict[str, bool] = {}
        ready: dict[str, bool] = {}
        for pod_name, pod in pods.items():
            ready[pod_name] = pod_ready(pod)
            if ready[pod_name]:
                since = state.ready_since.setdefault(pod_name, moment)
                available[pod_name] = moment - since >= min_ready
                if not available[pod_name]:
                    state.wake_at = min(state.wake_at, since + min_ready)
            else:
                state.ready_since.pop(pod_name, None)
                available[pod_name] = False
        created_new_set = state.hash not in state.hashes
        state.hashes.add(state.hash)
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            max_unavailable = 0
            self._recreate(deployment, state, replicas)
        else:
            rolling = strategy.get("rollingUpdate") or {}
            surge = resolve_fraction(rolling.get("maxSurge", "25%"), replicas, round_up=True)
            max_unavailable = resolve_fraction(
                rolling.get("maxUnavailable", "25%"), replicas, round_up=False
            )
            if surge == 0 and max_unavailable == 0:
                max_unavailable = 1
            max_unavailable = min(max_unavailable, replicas)
            self._roll(deployment, state, replicas, surge, max_unavailable, available)
        self._scaling_events(deployment, state)
        self._write_status(
            deployment, state, replicas, max_unavailable, ready, available, created_new_set
        )

    def _counts(self, state: DeploymentState) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in state.pods.values():
            counts[record.hash] = counts.get(record.hash, 0) + 1
        return counts

    @staticmethod
    def _victims(
        records: list[PodRecord], available: dict[str, bool], count: int
    ) -> list[PodRecord]:
        """Which pods a scale-down removes first: unavailable ones, then the newest."""
        ranked = sorted(records, key=lambda r: (available.get(r.name, False), -r.created))
        return ranked[: max(0, count)]

    def _recreate(self, deployment: dict[str, Any], state: DeploymentState, replicas: int) -> None:
        namespace = deployment["metadata"]["namespace"]
        old = [r for r in state.pods.values() if r.hash != state.hash]
        for record in old:
            self._delete_pod(namespace, state, record.name)
        state.deleted = {name for name in state.deleted if self.node.terminating(namespace, name)}
        if state.deleted:
            state.wake_at = min(state.wake_at, time.monotonic() + 0.05)
            return  # Recreate: the new pods wait until the old ones' processes are gone
        self._scale_new(deployment, state, replicas, {})

    def _scale_new(
        self,
        deployment: dict[str, Any],
        state: DeploymentState,
        replicas: int,
        available: dict[str, bool],
    ) -> None:
        namespace = deployment["metadata"]["namespace"]
        new = [r for r in state.pods.values() if r.hash == state.hash]
        for _ in range(replicas - len(new)):
            self._create_pod(deployment, state)
        for record in self._victims(new, available, len(new) - replicas):
            self._delete_pod(namespace, state, record.name)

    def _roll(
        self,
        deployment: dict[str, Any],
        state: DeploymentState,
        replicas: int,
        surge: int,
        max_unavailable: int,
        available: dict[str, bool],
    ) -> None:
        namespace = deployment["metadata"]["namespace"]
        old = [r for r in state.pods.values() if r.hash != state.hash]
        new = [r for r in state.pods.values() if r.hash == state.hash]
        if not old:
            self._scale_new(deployment, state, replicas, available)
            return
        # Scale up the new template within maxSurge...
        room = min(replicas - len(new), replicas + surge - len(old) - len(new))
        for _ in range(max(0, room)):
            self._create_pod(deployment, state)
        for record in self._victims(new, available, len(new) - replicas):
            self._delete_pod(namespace, state, record.name)
        new = [r for r in state.pods.values() if r.hash == state.hash]
        # ...and the old one down while at least replicas - maxUnavailable stay available.
        min_available = replicas - max_unavailable
        new_unavailable = sum(1 for r in new if not available.get(r.name, False))
        max_scaled_down = len(old) + len(new) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return
        cleaned = 0
        for record in sorted(old, key=lambda r: r.created):
            if not available.get(record.name, False) and cleaned < max_scaled_down:
                self._delete_pod(namespace, state, record.name)
                cleaned += 1
        old = [r for r in old if r.name in state.pods]
        available_now = sum(1 for r in state.pods.values() if available.get(r.name, False))
        count = min(available_now - min_available, max_scaled_down - cleaned, len(old))
        for record in sorted(old, key=lambda r: r.created)[: max(0, count)]:
            self._delete_pod(namespace, state, record.name)

    def _scaling_events(self, deployment: dict[str, Any], state: DeploymentState) -> None:
        """A replica set "scaled" when a template's pod count changed since the last sync
        (a pod deleted through the API and replaced is no scaling)."""
        before, after = state.sizes, self._counts(state)
        state.sizes = after
        name = deployment["metadata"]["name"]
        for template in sorted(set(before) | set(after)):
            was, now_ = before.get(template, 0), after.get(template, 0)
            if was != now_:
                direction = "up" if now_ > was else "down"
                self.node.events.post(
                    {"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": deployment["metadata"]},
                    "ScalingReplicaSet",
                    f"Scaled {direction} replica set {name}-{template} from {was} to {now_}",
                    component="deployment-controller",
                )  # fmt: skip

    def _write_status(
        self,
        deployment: dict[str, Any],
        state: DeploymentState,
        replicas: int,
        max_unavailable: int,
        ready: dict[str, bool],
        available: dict[str, bool],
        created_new_set: bool,
    ) -> None:
        metadata, spec = deployment["metadata"], deployment.get("spec") or {}
        old_status = deployment.get("status") or {}
        records = list(state.pods.values())
        total = len(records)
        updated = sum(1 for r in records if r.hash == state.hash)
        ready_count = sum(1 for r in records if ready.get(r.name, False))
        available_count = sum(1 for r in records if available.get(r.name, False))
        status: dict[str, Any] = {"observedGeneration": int(metadata.get("generation", 1))}
        for key, value in (
            ("replicas", total),
            ("updatedReplicas", updated),
            ("readyReplicas", ready_count),
            ("availableReplicas", available_count),
            ("unavailableReplicas", max(0, total - available_count)),
        ):
            if value:
                status[key] = value
        conditions = {c["type"]: c for c in old_status.get("conditions", [])}
        moment = now()

        def condition(kind: str, ok: bool, reason: str, message: str, progress: bool) -> None:
            previous = conditions.get(kind)
            value = "True" if ok else "False"
            if (
                previous is not None
                and previous.get("status") == value
                and previous.get("reason") == reason
                and previous.get("message") == message
                and not progress
            ):
                return
            transition = moment
            if previous is not None and previous.get("status") == value:
                transition = previous.get("lastTransitionTime", moment)
            conditions[kind] = {
                "type": kind, "status": value, "lastUpdateTime": moment,
                "lastTransitionTime": transition, "reason": reason, "message": message,
            }  # fmt: skip

        if available_count >= replicas - max_unavailable:
            condition("Available", True, "MinimumReplicasAvailable",
                      "Deployment has minimum availability.", False)  # fmt: skip
        else:
            condition("Available", False, "MinimumReplicasUnavailable",
                      "Deployment does not have minimum availability.", False)  # fmt: skip
        set_name = f"{metadata['name']}-{state.hash}"
        complete = updated == replicas and total == replicas and available_count == replicas
        old_replicas = int(old_status.get("replicas", 0)) - int(
            old_status.get("updatedReplicas", 0)
        )
        progressed = (
            total - updated < old_replicas
            or updated > int(old_status.get("updatedReplicas", 0))
            or ready_count > int(old_status.get("readyReplicas", 0))
            or available_count > int(old_status.get("availableReplicas", 0))
        )
        deadline = spec.get("progressDeadlineSeconds", 600)
        current = conditions.get("Progressing", {})
        if complete:
            condition("Progressing", True, "NewReplicaSetAvailable",
                      f'ReplicaSet "{set_name}" has successfully progressed.', False)  # fmt: skip
        elif created_new_set:
            state.last_progress = time.monotonic()
            condition("Progressing", True, "NewReplicaSetCreated",
                      f'Created new replica set "{set_name}"', True)  # fmt: skip
        elif progressed or not current:
            state.last_progress = time.monotonic()
            condition("Progressing", True, "ReplicaSetUpdated",
                      f'ReplicaSet "{set_name}" is progressing.', True)  # fmt: skip
        elif current.get("reason") not in ("ProgressDeadlineExceeded", "NewReplicaSetAvailable"):
            due = state.last_progress + float(deadline) * self.kubelet.time_scale
            if time.monotonic() >= due:
                condition("Progressing", False, "ProgressDeadlineExceeded",
                          f'ReplicaSet "{set_name}" has timed out progressing.', False)  # fmt: skip
            else:
                state.wake_at = min(state.wake_at, due)
        status["conditions"] = [
            conditions[k] for k in ("Available", "Progressing") if k in conditions
        ]
        if status != old_status:
            self.api.write_status(DEPLOYMENTS, metadata["namespace"], metadata["name"], status)


def instant_status(pod: dict[str, Any], address: str) -> dict[str, Any]:
    """A pod that is Running and Ready at once (`run_deployment_pods=False`)."""
    moment = now()
    conditions = [
        {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": moment}
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady",
                     "PodScheduled")
    ]  # fmt: skip
    return {
        "phase": "Running",
        "conditions": conditions,
        "podIP": address,
        "podIPs": [{"ip": address}],
        "startTime": moment,
        "qosClass": "BestEffort",
        "containerStatuses": [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": True,
             "started": True, "restartCount": 0, "state": {"running": {"startedAt": moment}},
             "lastState": {}}
            for c in pod["spec"].get("containers", [])
        ],
    }  # fmt: skip


class Workloads:
    """What `Kubelet` runs besides Jobs: the Deployment controller and the node's pods."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.node = Node(kubelet)
        self.controller = DeploymentController(kubelet, self.node)

    @property
    def pods(self) -> dict[tuple[str, str], PodRunner]:
        return self.node.pods

    @property
    def networks(self) -> Networks:
        return self.node.networks

    def sync(self, deployments: list[dict[str, Any]]) -> None:
        self.controller.sync(deployments)
        if self.node.pods:
            self.node.reap()

    def kill_container(self, namespace: str, pod: str, container: str | None, oom: bool) -> None:
        self.node.kill_container(namespace, pod, container, oom)

    async def stop(self) -> None:
        await self.node.stop()
