"""A test "kubelet" plus Job controller: it really runs each Job's container command.

For every Job it creates a Pod, then runs the container's command in a private mount
namespace (`unshare --mount`), with a folder bound at each volume's mountPath (one folder per
PersistentVolumeClaim, fresh ones for emptyDirs, an optional small tmpfs to fill a disk) and a
temp file bound at the terminationMessagePath. When the command exits it writes the Pod's
status (exit code, reason, termination message) and the Job's status as the Job controller
does: Complete; or a retry within backoffLimit; or Failed with PodFailurePolicy,
BackoffLimitExceeded or DeadlineExceeded.

Not honoured: the image (the host's interpreter runs the command); runAsUser (the test
interpreter lives where only root may run it); ttlSecondsAfterFinished.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmock import resource

from support.kubernetes import RealisticKubernetes, now
from support.repo import REPO

JOBS = resource("batch", "v1", "jobs")
PODS = resource("", "v1", "pods")
PVCS = resource("", "v1", "persistentvolumeclaims")
SECRETS = resource("", "v1", "secrets")
TERMINATION_LIMIT = 4096


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
    pods: dict[tuple[str, str], RunningPod] = field(default_factory=dict)
    max_parallel_seen: int = 0  # split Jobs' pods running at once, at most
    delay_seconds: float = 0.0  # every container sleeps this long before its command
    _created_mountpoints: list[Path] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _handled: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def volume(self, namespace: str, claim: str) -> Path:
        """The folder that stands for a PersistentVolumeClaim's volume."""
        path = self.root / "volumes" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        return path

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pod in list(self.pods.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await pod.process.wait()
        for mountpoint in reversed(self._created_mountpoints):
            with contextlib.suppress(OSError):
                mountpoint.unlink() if mountpoint.is_file() else mountpoint.rmdir()

    async def _loop(self) -> None:
        while True:
            await self._sync()
            await asyncio.sleep(0.05)

    async def _sync(self) -> None:
        # Read the store without copying: hundreds of Jobs, every 50 ms.
        unfinished = [
            obj
            for (ref, _, _), obj in list(self.api.store.items())
            if ref == JOBS and not obj.get("status", {}).get("conditions")
        ]
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
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pod.process.pid, signal.SIGKILL)
        running = sum(
            1 for (namespace, job_name), pod in self.pods.items()
            if pod.process.returncode is None and pod.split
            and self.api.get(JOBS, namespace, job_name) is not None
        )  # fmt: skip
        self.max_parallel_seen = max(self.max_parallel_seen, running)

    @staticmethod
    def _wants_retry(job: dict[str, Any]) -> bool:
        status = job.get("status", {})
        return not status.get("active") and not status.get("conditions")

    # ---- pods

    def _mountpoint(self, path: str, is_file: bool = False) -> None:
        """Mount targets must exist; create (and later remove) the missing ones."""
        target = Path(path)
        if target.exists():
            return
        missing = [p for p in [target, *target.parents] if not p.exists()]
        for created in reversed(missing):
            if created == target and is_file:
                created.touch()
            else:
                created.mkdir()
            self._created_mountpoints.append(created)

    def _env(self, container: dict[str, Any], namespace: str) -> dict[str, str] | None:
        """The container's env, `secretKeyRef`s resolved from the API; None if one is missing."""
        env = {}
        for item in container.get("env", []):
            reference = item.get("valueFrom", {}).get("secretKeyRef")
            if reference is None:
                env[item["name"]] = item["value"]
                continue
            secret = self.api.get(SECRETS, namespace, reference["name"]) or {}
            if reference["key"] in (secret.get("stringData") or {}):
                env[item["name"]] = secret["stringData"][reference["key"]]
            elif reference["key"] in (secret.get("data") or {}):
                env[item["name"]] = base64.b64decode(secret["data"][reference["key"]]).decode()
            else:
                return None
        return env

    def _script(self, pod_dir: Path, spec: dict[str, Any], namespace: str) -> str | None:
        """The mount commands and the exec; None when a claim is missing (pod Pending)."""
        container = spec["containers"][0]
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        fs_group = spec.get("securityContext", {}).get("fsGroup")
        binds: list[tuple[str | None, str, bool]] = []  # (source or None for tmpfs, target, ro)
        sizes: dict[str, int] = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            target = mount["mountPath"]
            self._mountpoint(target)
            read_only = bool(mount.get("readOnly"))
            source: Path | None
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if self.api.get(PVCS, namespace, claim) is None:
                    return None  # the pod stays Pending, as on a real node
                source = self.volume(namespace, claim)
                if claim in self.small_volumes:
                    sizes[target] = self.small_volumes[claim]
                    source = None
                read_only = read_only or bool(volume["persistentVolumeClaim"].get("readOnly"))
            else:  # emptyDir
                source = pod_dir / "emptydir" / mount["name"]
                source.mkdir(parents=True)
            if source is not None and fs_group is not None and not read_only:
                os.chown(source, -1, int(fs_group))
                source.chmod(0o2775)
            binds.append((str(source) if source else None, target, read_only))
        termination = container.get("terminationMessagePath", "/dev/termination-log")
        self._mountpoint(termination, is_file=True)
        (pod_dir / "termination-log").touch()
        binds.append((str(pod_dir / "termination-log"), termination, False))
        # A mount over a folder that holds our sources (say /tmp) must come last.
        binds.sort(key=lambda b: str(self.root).startswith(b[1].rstrip("/") + "/"))
        lines = ["set -e"]
        for source_path, target, read_only in binds:
            quoted = shlex.quote(target)
            mount = (
                f"mount -t tmpfs -o size={sizes[target]} tmpfs {quoted}"
                if source_path is None
                else f"mount --bind {shlex.quote(source_path)} {quoted}"
            )
            if str(REPO).startswith(target.rstrip("/") + "/"):
                # The mount hides the repository (and its .venv, the interpreter the command
                # runs with): keep a handle on it as the working directory, put it back inside.
                keep = shlex.quote(str(REPO))
                lines += [f"cd {keep}", mount, f"mkdir -p {keep}",
                          f"mount --no-canonicalize --bind . {keep}", "cd /"]  # fmt: skip
            else:
                lines.append(mount)
            if read_only:
                lines.append(f"mount -o remount,bind,ro {quoted}")
        if self.delay_seconds:
            lines.append(f"sleep {self.delay_seconds}")
        lines.append('exec "$@"')
        return "\n".join(lines)

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
        self.api.put(
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
        script = self._script(pod_dir, template["spec"], namespace)
        if script is None:
            return  # Pending: a claim is missing
        container = template["spec"]["containers"][0]
        command = [*container.get("command", []), *container.get("args", [])]
        binary = shutil.which(
            command[0], path=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        )
        variables = self._env(container, namespace)
        if variables is None:
            return  # Pending (CreateContainerConfigError): a Secret or its key is missing
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **variables}
        owner = metadata.get("labels", {}).get("splitlearn.io/splitmodel", "")
        fault = self.faults.get(owner) or self.faults.get(job_name)
        if fault and fault.kind == "hang":
            command, binary = ["sleep", "3600"], "/bin/sleep"
        if fault and fault.kind == "crash":
            command, binary = ["sh", "-c", "echo Segmentation fault >&2; exit 139"], "/bin/sh"
        process = await asyncio.create_subprocess_exec(
            "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "pod",
            binary or command[0], *command[1:],
            stdout=(pod_dir / "stdout.log").open("wb"), stderr=asyncio.subprocess.STDOUT,
            env=env, start_new_session=True, cwd=pod_dir,
        )  # fmt: skip
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
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGTERM)

    async def _finish(self, job: dict[str, Any], pod: RunningPod, fault: Fault | None) -> None:
        if fault and fault.kind == "oom":
            await asyncio.sleep(0.2)
            pod.killed_reason = "OOMKilled"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)
        code = await pod.process.wait()
        exit_code = 128 - code if code < 0 else code
        if pod.killed_reason == "OOMKilled":
            exit_code = 137
        message = (
            (pod.directory / "termination-log")
            .read_bytes()[:TERMINATION_LIMIT]
            .decode(errors="replace")
        )
        if not message and exit_code != 0:  # FallbackToLogsOnError
            log = (pod.directory / "stdout.log").read_bytes()
            message = log[-2048:].decode(errors="replace")
        reason = pod.killed_reason or ("Completed" if exit_code == 0 else "Error")
        terminated = {
            "exitCode": exit_code, "reason": reason, "message": message,
            "startedAt": now(), "finishedAt": now(),
        }  # fmt: skip
        container = job["spec"]["template"]["spec"]["containers"][0]["name"]
        self.api.write_status(
            PODS, pod.namespace, pod.name,
            {"phase": "Succeeded" if exit_code == 0 else "Failed",
             "containerStatuses": [{"name": container, "state": {"terminated": terminated}}]},
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
