"""The test kubelet's side of Deployments: it runs their pods, long-lived.

`Node` runs each pod that `support.workloads` creates (unless `Kubelet.run_deployment_pods`
is False: then a pod is Running and Ready at once, with a made-up 127.213.x.y address and no
process):

* a network namespace and address of its own (`support.network`), `podIP`/`podIPs` in status;
* volumes as for Jobs (`support.containers`) plus what a missing object does: a missing claim
  leaves it Pending and Unschedulable (`FailedScheduling`), a missing ConfigMap or Secret
  Pending with its containers `waiting: ContainerCreating` (`FailedMount`, retried every
  `Kubelet.mount_retry_seconds`), a missing env reference `CreateContainerConfigError`;
* an image containing `does-not-exist` is never pulled (`ErrImagePull`, then
  `ImagePullBackOff`);
* each container's process restarted when it exits (restartPolicy Always): the first restart
  at once, then `CrashLoopBackOff` for `Kubelet.restart_backoff` seconds doubled up to
  `restart_backoff_cap` (shown as the kubelet's 10s..5m0s); `restartCount`, `lastState`;
* startup, readiness and liveness probes (`grpc`, `tcpSocket`, `httpGet`, `exec`): every
  `periodSeconds * time_scale` seconds (at most `probe_interval_cap`); a liveness or startup
  failure kills the container only once `failureThreshold` probes failed and
  `failureThreshold * periodSeconds` (scaled) passed, so a slow start is not cut short by the
  faster probing;
* deletion: SIGTERM, then SIGKILL after terminationGracePeriodSeconds (scaled). The API
  server here has no graceful deletion: the Pod object is gone at once, its process ends after.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmock import resource

from support.containers import (
    ConfigError,
    MountError,
    Source,
    UnschedulableError,
    base_env,
    check_claims,
    command_of,
    container_binds,
    container_env,
    exit_code_of,
    kill_group,
    mount_script,
    spawn,
    terminated_state,
    volume_sources,
)
from support.kubernetes import RealisticKubernetes, now
from support.network import Networks, PodNetwork

if TYPE_CHECKING:
    from support.kubelet import Kubelet

PODS = resource("", "v1", "pods")
EVENTS = resource("", "v1", "events")
NODE = "harness-node"
MISSING_IMAGE = "does-not-exist"


def kubelet_duration(seconds: float) -> str:
    """Go's time.Duration format for whole seconds: 10s, 1m20s, 5m0s."""
    whole = int(seconds)
    return f"{whole // 60}m{whole % 60}s" if whole >= 60 else f"{whole}s"


class Events:
    """Events as the kubelet and controllers post them: a repeat adds to `count`."""

    def __init__(self, api: RealisticKubernetes) -> None:
        self.api = api
        self._names: dict[tuple[str, str, str], str] = {}

    def post(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        kind: str = "Normal",
        component: str = "kubelet",
    ) -> None:
        metadata = involved["metadata"]
        namespace = metadata["namespace"]
        key = (metadata["uid"], reason, message)
        moment = now()
        name = self._names.get(key)
        if name is not None and (EVENTS, namespace, name) in self.api.store:

            def count(event: dict[str, Any]) -> dict[str, Any]:
                event["count"] = int(event.get("count", 1)) + 1
                event["lastTimestamp"] = moment
                return event

            self.api._update(EVENTS, namespace, name, count, None, None)
            return
        name = f"{metadata['name']}.{secrets.token_hex(8)}"
        self._names[key] = name
        self.api.put(EVENTS, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "v1"), "kind": involved.get("kind"),
                "name": metadata["name"], "namespace": namespace, "uid": metadata["uid"],
            },
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": moment, "lastTimestamp": moment,
            "source": {"component": component, "host": NODE},
            "reportingComponent": component, "reportingInstance": NODE,
        })  # fmt: skip


# ------------------------------------------------------------------------------ the node


@dataclass
class ContainerRunner:
    """One container of a pod: its process, restarts, probes and status."""

    pod: PodRunner
    spec: dict[str, Any]
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    ready: bool = False
    started: bool = False
    process: asyncio.subprocess.Process | None = None
    killed_reason: str | None = None
    instances: int = 0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def directory(self) -> Path:
        return self.pod.directory / self.name

    @property
    def log(self) -> Path:
        return self.directory / "stdout.log"

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.instances:
            status["containerID"] = f"harness://{self.pod.uid}/{self.name}/{self.instances}"
            status["imageID"] = f"harness://{self.spec.get('image', '')}"
        return status

    def _waiting(self, reason: str, message: str | None = None) -> None:
        self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        self.ready = self.started = False
        self.pod.publish()

    async def run(self) -> None:
        kubelet = self.pod.node.kubelet
        self.directory.mkdir(parents=True, exist_ok=True)
        pull_backoff = kubelet.restart_backoff
        crash_backoff = kubelet.restart_backoff
        first_restart = True
        image = str(self.spec.get("image", ""))
        while not self.pod.terminating:
            if MISSING_IMAGE in image:
                self._pull_failed(image, pull_backoff)
                if not await self.pod.pause(pull_backoff):
                    return
                pull_backoff = min(pull_backoff * 2, kubelet.restart_backoff_cap)
                continue
            try:
                env = container_env(kubelet.api, self.spec, self.pod.namespace, self.pod.view())
            except ConfigError as error:
                self.pod.event("Failed", f"Error: {error}", "Warning")
                self._waiting("CreateContainerConfigError", str(error))
                if not await self.pod.pause(kubelet.mount_retry_seconds):
                    return
                continue
            ran = await self._run_once(env)
            if self.pod.terminating:
                return
            if ran > 2 * kubelet.restart_backoff_cap:  # ran long enough: the back-off resets
                crash_backoff, first_restart = kubelet.restart_backoff, True
            if first_restart:  # the kubelet restarts a container once without waiting
                first_restart = False
                continue
            shown = kubelet_duration(10 * crash_backoff / kubelet.restart_backoff)
            shown = shown if crash_backoff < kubelet.restart_backoff_cap else "5m0s"
            message = (
                f"back-off {shown} restarting failed container={self.name} "
                f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})"
            )
            self.pod.event(
                "BackOff", f"Back-off restarting failed container {self.name} in pod "
                f"{self.pod.name}_{self.pod.namespace}({self.pod.uid})", "Warning",
            )  # fmt: skip
            self._waiting("CrashLoopBackOff", message)
            if not await self.pod.pause(crash_backoff):
                return
            crash_backoff = min(crash_backoff * 2, kubelet.restart_backoff_cap)

    def _pull_failed(self, image: str, backoff: float) -> None:
        if self.state.get("waiting", {}).get("reason") not in ("ErrImagePull", "ImagePullBackOff"):
            message = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                f'failed to resolve reference "{image}": {image}: not found'
            )
            self.pod.event("Pulling", f'Pulling image "{image}"')
            self.pod.event("Failed", f'Failed to pull image "{image}": {message}', "Warning")
            self.pod.event("Failed", "Error: ErrImagePull", "Warning")
            self._waiting("ErrImagePull", message)
            return
        self.pod.event("BackOff", f'Back-off pulling image "{image}"')
        self.pod.event("Failed", "Error: ImagePullBackOff", "Warning")
        self._waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')

    async def _run_once(self, env: dict[str, str]) -> float:
        """Start the container, probe it, wait for it to end; how long it ran."""
        pod, kubelet = self.pod, self.pod.node.kubelet
        termination = self.directory / "termination-log"
        binds = container_binds(kubelet, pod.spec, self.spec, pod.sources, termination)
        script = mount_script(binds, kubelet.delay_seconds)
        self.log.touch()
        offset = self.log.stat().st_size
        wrapper = pod.network.wrapper if pod.network else ()
        environment = {**base_env(), "HOSTNAME": pod.name, **env}
        began = time.monotonic()
        process = await spawn(
            script, command_of(self.spec, env), environment, self.directory, self.log, wrapper
        )
        self.process, self.killed_reason = process, None
        if pod.terminating:
            kill_group(process)
            await process.wait()
            return 0.0
        if self.instances:
            self.restarts += 1
        self.instances += 1
        started_at = now()
        self.state = {"running": {"startedAt": started_at}}
        self.started = "startupProbe" not in self.spec
        self.ready = self.started and "readinessProbe" not in self.spec
        pod.event("Created", f"Created container {self.name}")
        pod.event("Started", f"Started container {self.name}")
        pod.publish()
        probing = asyncio.create_task(self._probe(process, environment))
        code = await process.wait()
        probing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probing
        ran = time.monotonic() - began
        if pod.terminating:
            return ran
        exit_code = 137 if self.killed_reason == "OOMKilled" else exit_code_of(code)
        self.last_state = {
            "terminated": terminated_state(
                self.spec, exit_code, self.killed_reason, termination, self.log, offset,
                started_at,
            )
        }  # fmt: skip
        self.state = {"terminated": self.last_state["terminated"]}
        self.ready = self.started = False
        pod.publish()
        return ran

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        kill_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            kill_group(process)
            await process.wait()

    # ---- probes

    async def _probe(self, process: asyncio.subprocess.Process, env: dict[str, str]) -> None:
        startup = self.spec.get("startupProbe")
        if startup and not await self._watch(startup, "Startup", process, env):
            return
        if not self.started:
            self.started = True
            self.ready = "readinessProbe" not in self.spec
            self.pod.publish()
        await asyncio.gather(*(
            self._watch(self.spec[key], kind, process, env)
            for key, kind in (("readinessProbe", "Readiness"), ("livenessProbe", "Liveness"))
            if key in self.spec
        ))  # fmt: skip

    async def _watch(
        self,
        probe: dict[str, Any],
        kind: str,
        process: asyncio.subprocess.Process,
        env: dict[str, str],
    ) -> bool:
        """Probe until a startup probe passes (True) or a failing one kills (False); a
        readiness probe sets `ready` for as long as the container runs."""
        kubelet = self.pod.node.kubelet
        scale = kubelet.time_scale
        period_seconds = float(probe.get("periodSeconds", 10))
        period = max(0.02, min(period_seconds * scale, kubelet.probe_interval_cap))
        failure_threshold = int(probe.get("failureThreshold", 3))
        success_threshold = int(probe.get("successThreshold", 1))
        budget = failure_threshold * period_seconds * scale
        timeout = float(probe.get("timeoutSeconds", 1))
        await asyncio.sleep(float(probe.get("initialDelaySeconds", 0)) * scale)
        successes = failures = 0
        failing_since: float | None = None
        while process.returncode is None:
            try:
                ok, message = await self.pod.node.check(probe, self, process, env, timeout)
            except Exception as error:  # a bad probe (say, an unknown port name) fails
                ok, message = False, str(error)
            if process.returncode is not None:
                break
            if ok:
                successes, failures, failing_since = successes + 1, 0, None
            else:
                successes, failures = 0, failures + 1
                failing_since = failing_since or time.monotonic()
                if failures == failure_threshold:
                    self.pod.event("Unhealthy", f"{kind} probe failed: {message}", "Warning")
            if kind == "Startup" and ok:
                return True
            if kind == "Readiness":
                if ok and successes >= success_threshold and not self.ready:
                    self.ready = True
                    self.pod.publish()
                elif not ok and failures >= failure_threshold and self.ready:
                    self.ready = False
                    self.pod.publish()
            elif (
                not ok
                and failing_since is not None
                and failures >= failure_threshold
                and time.monotonic() - failing_since >= budget - period
            ):
                self.pod.event(
                    "Killing",
                    f"Container {self.name} failed {kind.lower()} probe, will be restarted",
                )
                await self.stop(self.pod.grace)
                return False
            await asyncio.sleep(period)
        return False


class PodRunner:
    """A Deployment's pod on the node: its sandbox (network), volumes and containers."""

    def __init__(self, node: Node, pod: dict[str, Any]) -> None:
        metadata = pod["metadata"]
        self.node = node
        self.namespace: str = metadata["namespace"]
        self.name: str = metadata["name"]
        self.uid: str = metadata["uid"]
        self.metadata = metadata
        self.spec: dict[str, Any] = pod["spec"]
        self.directory = node.kubelet.root / "pods" / self.name
        self.containers = [ContainerRunner(self, c) for c in self.spec["containers"]]
        self.network: PodNetwork | None = None
        self.sources: dict[str, Source] = {}
        self.unschedulable: str | None = None
        self.sandbox = False
        self.start_time: str | None = None
        self.terminating = False
        self.stopping = asyncio.Event()
        self.transitions: dict[str, tuple[str, str]] = {}  # condition -> (status, time)
        self.written: dict[str, Any] | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def grace(self) -> float:
        seconds = self.spec.get("terminationGracePeriodSeconds", 30)
        return float(seconds) * self.node.kubelet.time_scale

    @property
    def ip(self) -> str | None:
        return self.network.ip if self.network else None

    def involved(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": self.metadata}

    def event(self, reason: str, message: str, kind: str = "Normal") -> None:
        self.node.events.post(self.involved(), reason, message, kind)

    def view(self) -> dict[str, Any]:
        """The pod as the downward API reads it."""
        return {"metadata": self.metadata, "spec": self.spec, "status": self.status()}

    async def pause(self, seconds: float) -> bool:
        """Sleep, unless the pod is being deleted; whether it still runs."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        return not self.terminating

    def _condition(
        self, kind: str, ok: bool, reason: str = "", message: str = ""
    ) -> dict[str, Any]:
        status = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = previous = (status, now())
        condition = {"type": kind, "status": status, "lastProbeTime": None,
                     "lastTransitionTime": previous[1]}  # fmt: skip
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        return condition

    def status(self) -> dict[str, Any]:
        if self.unschedulable is not None:
            return {
                "phase": "Pending",
                "conditions": [self._condition(
                    "PodScheduled", False, "Unschedulable", self.unschedulable
                )],
                "qosClass": "BestEffort",
            }  # fmt: skip
        unready = [c.name for c in self.containers if not c.ready]
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
        reason = "ContainersNotReady" if unready else ""
        status: dict[str, Any] = {
            "phase": "Running" if any(c.instances for c in self.containers) else "Pending",
            "conditions": [
                self._condition("PodReadyToStartContainers", self.sandbox),
                self._condition("Initialized", True),
                self._condition("Ready", not unready, reason, message),
                self._condition("ContainersReady", not unready, reason, message),
                self._condition("PodScheduled", True),
            ],
            "containerStatuses": [c.status() for c in self.containers],
            "qosClass": "BestEffort",
        }
        if self.network is not None:
            status["hostIP"] = self.network.host_ip
            status["hostIPs"] = [{"ip": self.network.host_ip}]
            status["podIP"] = self.network.ip
            status["podIPs"] = [{"ip": self.network.ip}]
        if self.start_time:
            status["startTime"] = self.start_time
        return status

    def publish(self) -> None:
        """Write the pod's status if it changed."""
        if self.terminating:
            return
        status = self.status()
        if status != self.written:
            self.written = copy.deepcopy(status)
            self.node.kubelet.api.write_status(PODS, self.namespace, self.name, status)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        kubelet = self.node.kubelet
        try:
            while True:
                try:
                    check_claims(kubelet.api, self.spec, self.namespace)
                    break
                except UnschedulableError as error:
                    self.unschedulable = f"0/1 nodes are available: {error}."
                    self.node.events.post(
                        self.involved(), "FailedScheduling", self.unschedulable, "Warning",
                        "default-scheduler",
                    )  # fmt: skip
                    self.publish()
                    if not await self.pause(kubelet.mount_retry_seconds):
                        return
            self.unschedulable = None
            self.node.events.post(
                self.involved(), "Scheduled",
                f"Successfully assigned {self.namespace}/{self.name} to {NODE}",
                component="default-scheduler",
            )  # fmt: skip
            self.start_time = now()
            self.publish()
            while self.network is None:
                try:
                    self.network = await self.node.networks.create()
                except Exception as error:
                    self.event("FailedCreatePodSandBox", f"Failed to create pod sandbox: "
                               f"{error}", "Warning")  # fmt: skip
                    if not await self.pause(kubelet.mount_retry_seconds):
                        return
            if self.terminating:
                return
            self.sandbox = True
            self.publish()
            while True:
                try:
                    self.sources = volume_sources(
                        kubelet, self.directory, self.spec, self.namespace
                    )
                    break
                except (MountError, UnschedulableError) as error:
                    self.event("FailedMount", str(error), "Warning")
                    self.publish()
                    if not await self.pause(kubelet.mount_retry_seconds):
                        return
            await asyncio.gather(*(container.run() for container in self.containers))
        except Exception as error:  # a harness bug: say so where a test looks
            self.node.errors.append(f"pod {self.namespace}/{self.name}: {error!r}")
            logging.getLogger(__name__).exception("pod %s/%s", self.namespace, self.name)
            self.event("Failed", f"test kubelet error: {error!r}", "Warning")
        finally:
            for container in self.containers:
                if container.process is not None:
                    kill_group(container.process)
                    await container.process.wait()
            if self.network is not None:
                await self.node.networks.remove(self.network)

    async def terminate(self, grace: float) -> None:
        """The pod was deleted: stop its containers (SIGTERM, SIGKILL after `grace`)."""
        self.terminating = True
        self.stopping.set()
        await asyncio.gather(*(container.stop(grace) for container in self.containers))
        if self.task is not None:
            await self.task


class Node:
    """The kubelet's side for Deployments' pods: runs them, probes them, removes them."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.events = Events(kubelet.api)
        self.networks = Networks()
        self.pods: dict[tuple[str, str], PodRunner] = {}
        self.errors: list[str] = []  # what went wrong in the harness itself
        self._terminating: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._executor: ThreadPoolExecutor | None = None

    def admit(self, pod: dict[str, Any]) -> None:
        runner = PodRunner(self, pod)
        self.pods[(runner.namespace, runner.name)] = runner
        runner.start()

    def terminate(self, namespace: str, name: str, grace: float | None = None) -> None:
        runner = self.pods.pop((namespace, name), None)
        if runner is None:
            return
        key = (namespace, name)
        task = asyncio.create_task(runner.terminate(runner.grace if grace is None else grace))
        self._terminating[key] = task
        task.add_done_callback(lambda _: self._terminating.pop(key, None))

    def terminating(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self._terminating

    def reap(self) -> None:
        """Pods deleted through the API (or collected with their Deployment): stop them."""
        store = self.kubelet.api.store
        for namespace, name in [key for key in self.pods if (PODS, *key) not in store]:
            self.terminate(namespace, name)

    def kill_container(self, namespace: str, pod: str, container: str | None, oom: bool) -> None:
        runner = self.pods[(namespace, pod)]
        target = next(c for c in runner.containers if container in (None, c.name))
        if target.process is None or target.process.returncode is not None:
            raise AssertionError(f"container {target.name} of {pod} is not running")
        target.killed_reason = "OOMKilled" if oom else None
        kill_group(target.process)

    async def stop(self) -> None:
        for namespace, name in list(self.pods):
            self.terminate(namespace, name, grace=0)
        if self._terminating:
            await asyncio.gather(*self._terminating.values(), return_exceptions=True)
        await self.networks.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # ---- probes

    async def check(
        self,
        probe: dict[str, Any],
        container: ContainerRunner,
        process: asyncio.subprocess.Process,
        env: dict[str, str],
        timeout: float,
    ) -> tuple[bool, str]:
        """One probe: (passed, why not)."""
        address = container.pod.ip or "127.0.0.1"
        if "grpc" in probe:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(16, thread_name_prefix="probe")
            port, service = int(probe["grpc"]["port"]), probe["grpc"].get("service") or ""
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, grpc_health, f"{address}:{port}", service, timeout
            )
        if "tcpSocket" in probe:
            port = container_port(container.spec, probe["tcpSocket"]["port"])
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
            except (OSError, TimeoutError) as error:
                return False, f"dial tcp {address}:{port}: {error}"
            writer.close()
            return True, ""
        if "httpGet" in probe:
            return await http_probe(probe["httpGet"], container.spec, address, timeout)
        if "exec" in probe:
            checking = await asyncio.create_subprocess_exec(
                "nsenter", "--target", str(process.pid), "--mount", "--net", "--",
                *probe["exec"]["command"],
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env={**base_env(), **env}, cwd="/",
            )  # fmt: skip
            try:
                output, _ = await asyncio.wait_for(checking.communicate(), timeout)
            except TimeoutError:
                kill_group(checking)
                with contextlib.suppress(ProcessLookupError):
                    checking.kill()
                await checking.wait()
                return False, f"command timed out after {timeout}s"
            return checking.returncode == 0, output.decode(errors="replace")[-500:]
        return True, ""


def container_port(container: dict[str, Any], port: Any) -> int:
    """A port number, or the number of the container port of that name."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in container.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"no container port named {port!r}")


def grpc_health(address: str, service: str, timeout: float) -> tuple[bool, str]:
    """The kubelet's gRPC probe: grpc.health.v1.Health/Check answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [("grpc.enable_http_proxy", 0)]
    with grpc.insecure_channel(address, options=options) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return False, f'timeout: failed to connect service "{address}" within {timeout}s'
            return False, f"rpc error: code = {error.code().name} desc = {error.details()}"
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return False, f'service unhealthy (responded with "{name}")'
    return True, ""


async def http_probe(
    get: dict[str, Any], container: dict[str, Any], address: str, timeout: float
) -> tuple[bool, str]:
    import aiohttp

    port = container_port(container, get["port"])
    scheme = str(get.get("scheme", "HTTP")).lower()
    url = f"{scheme}://{address}:{port}{get.get('path', '/')}"
    headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
    try:
        async with aiohttp.ClientSession() as session, session.get(
            url, headers=headers, ssl=False, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:  # fmt: skip
            if 200 <= response.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {response.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return False, f'Get "{url}": {error}'
