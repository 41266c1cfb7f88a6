"""A test "kubelet" plus Job controller: it really runs each Job's container command.

For every Job it creates a Pod, then runs the container's command in a private mount
namespace (`unshare --mount`), with a folder bound at each volume's mountPath (one folder per
PersistentVolumeClaim, fresh ones for emptyDirs, an optional small tmpfs to fill a disk, files
of a ConfigMap or Secret) and a temp file bound at the terminationMessagePath (the shared
container code is in `support.containers`). When the command exits it writes the Pod's
status (exit code, reason, termination message) and the Job's status as the Job controller
does: Complete; or a retry within backoffLimit; or Failed with PodFailurePolicy,
BackoffLimitExceeded or DeadlineExceeded.

The same loop drives the Deployment controller and the long-lived pods it creates
(`support.workloads`): each in a network namespace of its own, restarted when it exits,
probed; the settings below scale their timings down for tests.

Not honoured: the image (the host's interpreter runs the command); runAsUser (the test
interpreter lives where only root may run it); ttlSecondsAfterFinished.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmock import resource

from support.containers import PVCS as PVCS  # re-exported: tests import them from here
from support.containers import SECRETS as SECRETS
from support.containers import TERMINATION_LIMIT as TERMINATION_LIMIT
from support.containers import (
    ConfigError,
    MountError,
    Mountpoints,
    UnschedulableError,
    base_env,
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
from support.workloads import DEPLOYMENTS, Workloads

JOBS = resource("batch", "v1", "jobs")
PODS = resource("", "v1", "pods")


@dataclass
class Fault:
    """What a test wants to happen to a Job's pod."""

    kind: str  # "oom": killed for memory (exit 137); "hang": never exits by itself;
    # "crash": dies at once with no result, as a segfault would (exit 139)
    tmpfs_bytes: int | None = None


@dataclass
class RunningPod:
    name: str
    job: str
    namespace: str
    process: asyncio.subprocess.Process
    started: float
    directory: Path
    split: bool  # a split Job's pod (max_models counts these), not a cleanup's
    killed_reason: str | None = None


@dataclass
class Kubelet:
    api: RealisticKubernetes
    root: Path
    faults: dict[str, Fault] = field(default_factory=dict)  # by SplitModel (or Job) name
    small_volumes: dict[str, int] = field(default_factory=dict)  # claim name -> tmpfs bytes
    pods: dict[tuple[str, str], RunningPod] = field(default_factory=dict)  # Jobs' pods
    max_parallel_seen: int = 0  # split Jobs' pods running at once, at most
    delay_seconds: float = 0.0  # every container sleeps this long before its command
    # ---- Deployments' pods (support.workloads)
    run_deployment_pods: bool = True  # False: Ready at once, no process, no network (benchmarks)
    time_scale: float = 0.05  # seconds in a spec (probe periods and delays, grace periods,
    # progressDeadlineSeconds, minReadySeconds) times this are the harness's seconds
    probe_interval_cap: float = 0.2  # a probe runs at least this often, whatever its period
    restart_backoff: float = 0.5  # CrashLoopBackOff: the first wait (the kubelet's 10 s)...
    restart_backoff_cap: float = 5.0  # ...doubled up to this (the kubelet's 5 min)
    mount_retry_seconds: float = 0.5  # a missing ConfigMap, Secret or claim is looked up again
    workloads: Workloads = field(init=False)
    mountpoints: Mountpoints = field(default_factory=Mountpoints)
    _task: asyncio.Task[None] | None = None
    _handled: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.workloads = Workloads(self)

    def volume(self, namespace: str, claim: str) -> Path:
        """The folder that stands for a PersistentVolumeClaim's volume."""
        path = self.root / "volumes" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        return path

    def kill_container(
        self, namespace: str, pod: str, container: str | None = None, oom: bool = False
    ) -> None:
        """SIGKILL a Deployment pod's container (OOMKilled with `oom`); it is restarted."""
        self.workloads.kill_container(namespace, pod, container, oom)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.workloads.stop()
        for pod in list(self.pods.values()):
            kill_group(pod.process)
            with contextlib.suppress(Exception):
                await pod.process.wait()
        self.mountpoints.release()

    async def _loop(self) -> None:
        while True:
            await self._sync()
            await asyncio.sleep(0.05)

    async def _sync(self) -> None:
        # Read the store without copying: hundreds of Jobs, every 50 ms.
        unfinished, deployments = [], []
        for (ref, _, _), obj in list(self.api.store.items()):
            if ref == JOBS:
                if not obj.get("status", {}).get("conditions"):
                    unfinished.append(obj)
            elif ref == DEPLOYMENTS:
                deployments.append(obj)
        for job in unfinished:
            metadata = job["metadata"]
            uid = metadata["uid"]
            key = (metadata["namespace"], metadata["name"])
            if job.get("status", {}).get("conditions"):
                continue  # finished
            if key in self.pods:
                await self._check_deadline(job, self.pods[key])
                continue
            if uid in self._handled and not self._wants_retry(job):
                continue
            self._handled.add(uid)
            await self._start_pod(job)
        # Jobs deleted while running: kill their pods.
        for key, pod in list(self.pods.items()):
            if self.api.get(JOBS, key[0], key[1]) is None and pod.process.returncode is None:
                pod.killed_reason = "Deleted"
                kill_group(pod.process)
        running = sum(
            1 for (namespace, job_name), pod in self.pods.items()
            if pod.process.returncode is None and pod.split
            and self.api.get(JOBS, namespace, job_name) is not None
        )  # fmt: skip
        self.max_parallel_seen = max(self.max_parallel_seen, running)
        self.workloads.sync(deployments)

    @staticmethod
    def _wants_retry(job: dict[str, Any]) -> bool:
        status = job.get("status", {})
        return not status.get("active") and not status.get("conditions")

    # ---- pods

    def mountpoint(self, path: str, is_file: bool = False) -> None:
        """Mount targets must exist; create (and later remove) the missing ones."""
        self.mountpoints.ensure(path, is_file)

    async def _start_pod(self, job: dict[str, Any]) -> None:
        metadata = job["metadata"]
        namespace, job_name = metadata["namespace"], metadata["name"]
        template = job["spec"]["template"]
        pod_name = f"{job_name}-{secrets.token_hex(3)[:5]}"
        pod_dir = self.root / "pods" / pod_name
        pod_dir.mkdir(parents=True)
        labels = {
            **template.get("metadata", {}).get("labels", {}),
            "job-name": job_name,
            "batch.kubernetes.io/job-name": job_name,
            "controller-uid": metadata["uid"],
        }
        pod = self.api.put(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "namespace": namespace,
                    "labels": labels,
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job_name,
                            "uid": metadata["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": template["spec"],
            },
        )
        self.api.write_status(PODS, namespace, pod_name, {"phase": "Pending"})
        status = dict(job.get("status", {}))
        status.setdefault("startTime", now())
        status["active"] = 1
        self.api.write_status(JOBS, namespace, job_name, status)
        spec = template["spec"]
        container = spec["containers"][0]
        try:
            sources = volume_sources(self, pod_dir, spec, namespace)
            binds = container_binds(self, spec, container, sources, pod_dir / "termination-log")
            variables = container_env(self.api, container, namespace, pod)
        except (UnschedulableError, MountError, ConfigError):
            return  # Pending: a claim, a Secret or a key is missing, as on a real node
        script = mount_script(binds, self.delay_seconds)
        command = command_of(container, variables)
        owner = metadata.get("labels", {}).get("splitlearn.io/splitmodel", "")
        fault = self.faults.get(owner) or self.faults.get(job_name)
        if fault and fault.kind == "hang":
            command = ["/bin/sleep", "3600"]
        if fault and fault.kind == "crash":
            command = ["/bin/sh", "-c", "echo Segmentation fault >&2; exit 139"]
        process = await spawn(
            script, command, {**base_env(), **variables}, pod_dir, pod_dir / "stdout.log"
        )
        split = labels.get("app.kubernetes.io/component") == "split"
        running = RunningPod(
            pod_name, job_name, namespace, process, time.monotonic(), pod_dir, split
        )
        self.pods[(namespace, job_name)] = running
        self.api.write_status(PODS, namespace, pod_name, {"phase": "Running", "startTime": now()})
        self._tasks.add(task := asyncio.create_task(self._finish(job, running, fault)))
        task.add_done_callback(self._tasks.discard)

    async def _check_deadline(self, job: dict[str, Any], pod: RunningPod) -> None:
        deadline = job["spec"].get("activeDeadlineSeconds")
        if (
            deadline
            and pod.process.returncode is None
            and time.monotonic() - pod.started > deadline
        ):
            pod.killed_reason = "DeadlineExceeded"
            kill_group(pod.process, signal.SIGTERM)

    async def _finish(self, job: dict[str, Any], pod: RunningPod, fault: Fault | None) -> None:
        if fault and fault.kind == "oom":
            await asyncio.sleep(0.2)
            pod.killed_reason = "OOMKilled"
            kill_group(pod.process)
        exit_code = exit_code_of(await pod.process.wait())
        if pod.killed_reason == "OOMKilled":
            exit_code = 137
        container = job["spec"]["template"]["spec"]["containers"][0]
        terminated = terminated_state(
            container, exit_code, pod.killed_reason,
            pod.directory / "termination-log", pod.directory / "stdout.log",
        )  # fmt: skip
        self.api.write_status(
            PODS, pod.namespace, pod.name,
            {"phase": "Succeeded" if exit_code == 0 else "Failed",
             "containerStatuses": [{"name": container["name"],
                                    "state": {"terminated": terminated}}]},
        )  # fmt: skip
        self.pods.pop((pod.namespace, pod.job), None)
        current = self.api.get(JOBS, pod.namespace, pod.job)
        if current is None or pod.killed_reason == "Deleted":
            return
        self._job_after_pod(current, exit_code, pod.killed_reason)

    def _job_after_pod(self, job: dict[str, Any], exit_code: int, killed: str | None) -> None:
        """The Job controller's decision after a pod ended."""
        status = dict(job.get("status", {}))
        status["active"] = 0
        moment = now()
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        if exit_code == 0:
            status.update(succeeded=1, completionTime=moment, conditions=[
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": moment},
                {"type": "Complete", "status": "True", "lastTransitionTime": moment},
            ])  # fmt: skip
            self.api.write_status(JOBS, namespace, name, status)
            return
        status["failed"] = int(status.get("failed", 0)) + 1
        reason = None
        if killed == "DeadlineExceeded":
            reason, message = "DeadlineExceeded", "Job was active longer than specified deadline"
        for rule in job["spec"].get("podFailurePolicy", {}).get("rules", []):
            codes = rule.get("onExitCodes")
            if reason is None and codes and rule["action"] == "FailJob":
                inside = exit_code in codes["values"]
                if inside == (codes["operator"] == "In"):
                    reason = "PodFailurePolicy"
                    message = f"Container exited with {exit_code}, matching a FailJob rule"
        if reason is None and status["failed"] > int(job["spec"].get("backoffLimit", 6)):
            reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        if reason is not None:
            status["conditions"] = [
                {"type": "FailureTarget", "status": "True", "reason": reason,
                 "message": message, "lastTransitionTime": moment},
                {"type": "Failed", "status": "True", "reason": reason, "message": message,
                 "lastTransitionTime": moment},
            ]  # fmt: skip
        self.api.write_status(JOBS, namespace, name, status)  # no condition: retried by _sync
