"""The trunk server of a SplitModel (`spec.serving`): its objects <-> `status.serving`.

After the split of a spec is recorded, the operator owns a ConfigMap, a Deployment and a
Service `<name>-trunk` (`server_builders`). What they serve comes from the recorded split, so
a spec change keeps the previous trunk served until the new split's Job has succeeded; then
the Deployment rolls (maxUnavailable 0). The server's Deployment and pods are watched
(`view`); each change of theirs re-runs `sync`, which applies what is missing or changed and
writes the `Serving` condition, `status.serving` and, once the split is recorded, whether the
resource as a whole is Ready, Reconciling or Stalled (`status.with_serving`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from splitcore.result import Reason
from splitlearn_operator import status as states
from splitlearn_operator.api import CONFIGMAPS, DEPLOYMENTS, EVENTS, SERVICES
from splitlearn_operator.config import ANNOTATION_APPLIED
from splitlearn_operator.context import Context, generation_of, key_of
from splitlearn_operator.server_builders import (
    ServedTrunk,
    build_server,
    endpoint,
    server_name,
)
from splitlearn_operator.spec import ResolvedSpec, ServingSpec, SpecError, resolve_spec
from splitlearn_operator.status import (
    EventReason,
    ServingState,
    ServingStatus,
    SplitModelStatus,
)
from splitlearn_operator.view import ClusterView, ServerInfo, ServerPod

#: Container states a server does not leave by itself (besides crash loops), and their reason.
_STUCK = {
    "ErrImagePull": Reason.SERVING_IMAGE_PULL_FAILED,
    "ImagePullBackOff": Reason.SERVING_IMAGE_PULL_FAILED,
    "InvalidImageName": Reason.SERVING_IMAGE_PULL_FAILED,
    "CreateContainerConfigError": Reason.SERVING_FAILED,
    "CreateContainerError": Reason.SERVING_FAILED,
}
#: Pod-spec fields the operator sets only sometimes: a merge patch must clear them when unset.
_OPTIONAL_POD_FIELDS = ("nodeSelector", "tolerations", "imagePullSecrets", "serviceAccountName")


def served_trunk(spec: ResolvedSpec, status: SplitModelStatus) -> ServedTrunk | None:
    """The trunk of the recorded split of this spec; None until that split is recorded."""
    if spec.storage is None or not states.split_recorded(status, spec.spec_hash):
        return None
    trunk = next((c for c in status.components if c.name == "trunk"), None)
    if trunk is None or not trunk.sha256:
        return None
    return ServedTrunk(
        claim=spec.storage.name,
        storage_path=spec.storage_path,
        model_id=spec.model_id,
        split_config=spec.split_config,
        sha256=trunk.sha256,
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no output"


def problem_of(
    server: ServerInfo | None, pods: Sequence[ServerPod], mount_failures: dict[str, str]
) -> tuple[Reason, str] | None:
    """Why the server cannot become ready by itself, from its pods and its Deployment."""
    for pod in sorted(pods, key=lambda p: p.name):
        if pod.crash_looping:
            return (
                Reason.SERVING_CRASH_LOOP,
                f"pod {pod.name} keeps exiting: {_last_line(pod.message)}",
            )
        reason = _STUCK.get(pod.waiting_reason or "")
        if reason is not None:
            return reason, f"pod {pod.name}: {pod.waiting_reason}: {pod.message}"
    for pod_name, message in sorted(mount_failures.items()):
        missing = "not found" in message
        reason = Reason.SERVING_SECRET_NOT_FOUND if missing else Reason.SERVING_FAILED
        return reason, f"pod {pod_name}: {message}"
    if server is not None and server.failure:
        return Reason.SERVING_FAILED, f"the trunk server's Deployment: {server.failure}"
    return None


def observe(
    serving: ServingSpec,
    trunk: ServedTrunk | None,
    server: ServerInfo | None,
    pods: Sequence[ServerPod],
    mount_failures: dict[str, str],
    address: str,
) -> ServingState:
    """What the server is doing, against what the recorded split wants served. Pure."""
    live = [pod for pod in pods if not pod.deleting]
    current = (
        trunk is not None and server is not None
        and server.trunk_sha256 == trunk.sha256 and server.split_config == trunk.split_config
    )  # fmt: skip
    return ServingState(
        status=ServingStatus(
            endpoint=address,
            replicas=serving.replicas,
            ready_replicas=server.ready if server else 0,
            sha256=server.trunk_sha256 if server else None,
            split_config=server.split_config if server else None,
        ),
        current=current,
        # Never above the Deployment's own count: a deleted pod leaves the index silently.
        ready_on_current=min(
            sum(1 for pod in live if pod.ready and trunk and pod.trunk_sha256 == trunk.sha256),
            server.ready if server else 0,
        ),
        complete=current and server is not None and server.rolled_out
        and server.replicas == serving.replicas,
        problem=problem_of(server, live, mount_failures),
    )  # fmt: skip


def owned_patch(manifest: dict[str, Any]) -> dict[str, Any]:
    """A merge patch setting exactly the fields the operator owns: labels and annotations are
    merged (others' keys stay), lists are ours whole, optional pod fields we dropped cleared."""
    patch = {key: value for key, value in manifest.items() if key not in ("apiVersion", "kind")}
    pod = patch.get("spec", {}).get("template", {}).get("spec")
    if pod is not None:
        for field in _OPTIONAL_POD_FIELDS:
            pod.setdefault(field, None)
    return patch


class Serving:
    """Creates, updates, observes and removes SplitModels' trunk servers."""

    def __init__(self, context: Context, view: ClusterView) -> None:
        self.context = context
        self.view = view
        # The Deployment each SplitModel's last sync wrote or read: its watch event echoing
        # that same state needs no sync (half the syncs of a rollout, one per creation).
        self._known: dict[tuple[str, str], ServerInfo] = {}

    def knows(self, key: tuple[str, str], server: ServerInfo) -> bool:
        return self._known.get(key) == server

    def concerns(self, body: dict[str, Any], spec: ResolvedSpec) -> bool:
        """Whether this SplitModel has or wants a server (or a `Serving` status to clear)."""
        namespace, name = key_of(body)
        return (
            spec.serving is not None or self.view.server_of(namespace, name) is not None
            or bool((body.get("status") or {}).get("serving"))
        )  # fmt: skip

    def pending(self, body: dict[str, Any], spec: ResolvedSpec, status: SplitModelStatus) -> (
        ServingState | None
    ):  # fmt: skip
        """The server's state as the watch shows it, before anything is applied: what a
        freshly recorded split writes, so Ready never shows True before the trunk is served."""
        if spec.serving is None:
            return None
        namespace, name = key_of(body)
        return observe(
            spec.serving, served_trunk(spec, status), self.view.server_of(namespace, name),
            self.view.server_pods_of(namespace, name), {},
            endpoint(namespace, name, spec.serving.port),
        )  # fmt: skip

    async def sync(self, body: dict[str, Any]) -> None:
        """Bring the server to the spec and the recorded split; write what it does. The
        caller holds the SplitModel's lock and `body` is current."""
        view = self.view
        try:
            spec = resolve_spec(body, self.context.config)
        except SpecError:
            return  # the reconcile reports it
        namespace, name = key_of(body)
        server = view.server_of(namespace, name)
        state: ServingState | None = None
        if spec.serving is None:
            await self.remove(body)
            if server is not None:
                await self.context.event(
                    body, "Normal", EventReason.SERVING_STOPPED,
                    f"the trunk server {server_name(name)} was removed "
                    "(spec.serving.enabled: false)",
                )  # fmt: skip
        else:
            status = SplitModelStatus.from_dict(body.get("status"))
            trunk = served_trunk(spec, status)
            if trunk is not None:
                server = await self._apply(body, spec.serving, trunk, server)
            if server is not None:
                self._known[(namespace, name)] = server
            pods = view.server_pods_of(namespace, name)
            state = observe(
                spec.serving, trunk, server, pods, await self._mount_failures(namespace, pods),
                endpoint(namespace, name, spec.serving.port),
            )  # fmt: skip
            self.context.metrics.serving_ready.labels(namespace, name).set(
                state.status.ready_replicas
            )
        await self._record(body, spec, state)

    async def remove(self, body: dict[str, Any]) -> bool:
        """Remove the server's three objects (serving turned off, or before the files go);
        True once no server pod is left."""
        namespace, name = key_of(body)
        self._known.pop((namespace, name), None)
        has_server = self.view.server_of(namespace, name) is not None
        if has_server or (body.get("status") or {}).get("serving"):
            api, server = self.context, server_name(name)
            await api.client.delete(DEPLOYMENTS, namespace, server)  # its pods go with it
            await api.client.delete(SERVICES, namespace, server)
            await api.client.delete(CONFIGMAPS, namespace, server)
            self.context.metrics.forget_server(namespace, name)
        return not self.view.server_pods_of(namespace, name)

    async def _apply(
        self, body: dict[str, Any], serving: ServingSpec, trunk: ServedTrunk,
        server: ServerInfo | None,
    ) -> ServerInfo:  # fmt: skip
        """Write the three objects when what was applied differs (or replicas drifted);
        the Deployment last, so new pods read the new configuration."""
        configmap, deployment, service = build_server(body, serving, trunk, self.context.config)
        applied = deployment["metadata"]["annotations"]
        unchanged = server is not None and server.applied == applied[ANNOTATION_APPLIED]
        if unchanged and server is not None and server.replicas == serving.replicas:
            return server
        namespace = body["metadata"]["namespace"]
        api = self.context
        await asyncio.gather(
            api.client.create_or_patch(CONFIGMAPS, namespace, configmap, owned_patch(configmap)),
            api.client.create_or_patch(SERVICES, namespace, service, owned_patch(service)),
        )
        name = body["metadata"]["name"]
        if server is None:  # its watch event may come before the answer: known already
            self._known[(namespace, name)] = ServerInfo.of(deployment)
        written = await api.client.create_or_patch(
            DEPLOYMENTS, namespace, deployment, owned_patch(deployment)
        )
        if server is None:
            reason = EventReason.SERVING_STARTED
            message = (
                f"Deployment {server_name(name)} serves the trunk of split {trunk.split_config} "
                f"at {endpoint(namespace, name, serving.port)}"
            )
        elif server.trunk_sha256 != trunk.sha256:
            reason = EventReason.SERVING_UPDATED
            message = f"rolling the server to the trunk of split {trunk.split_config}"
        else:
            reason = EventReason.SERVING_UPDATED
            message = f"server updated: {serving.replicas} replicas"
        await self.context.event(body, "Normal", reason, message)
        return ServerInfo.of(written)

    async def _mount_failures(self, namespace: str, pods: Sequence[ServerPod]) -> dict[str, str]:
        """The kubelet's FailedMount Events of pods still being created (a missing Secret
        shows nowhere else: the pod just waits in ContainerCreating)."""
        failures = {}
        for pod in pods:
            if pod.waiting_reason != "ContainerCreating" or pod.deleting:
                continue
            events = await self.context.client.list(
                EVENTS, namespace, field_selector=f"involvedObject.name={pod.name}"
            )
            mounts = [e for e in events if e.get("reason") == "FailedMount"]
            if mounts:
                failures[pod.name] = str(mounts[-1].get("message", "FailedMount"))
        return failures

    async def _record(
        self, body: dict[str, Any], spec: ResolvedSpec, state: ServingState | None
    ) -> None:
        """Write the server's part of the status; a Warning Event when it stalls."""
        namespace, name = key_of(body)
        generation, spec_hash = generation_of(body), spec.spec_hash
        moment = states.now_rfc3339()
        before = SplitModelStatus.from_dict(body.get("status")).condition(states.STALLED)

        def transform(_: dict[str, Any], status: SplitModelStatus) -> SplitModelStatus:
            return states.with_serving(status, generation, spec_hash, state, moment)

        written = await self.context.write_status(namespace, name, transform, body)
        after = SplitModelStatus.from_dict(written.get("status")).condition(states.STALLED)
        if after is not None and after.status == states.TRUE:
            await self.context.announce_stall(body, before, Reason(after.reason), after.message)
