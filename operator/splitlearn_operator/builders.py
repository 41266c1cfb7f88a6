"""Pure builders of every manifest the operator creates: Jobs, the PVC, Events.

No I/O here: each function maps (SplitModel, resolved spec, config) to a dict, so every field
is unit-tested without a cluster. Every pod meets the "restricted" Pod Security profile.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from splitcore.result import ExitCode
from splitlearn_operator.config import (
    ANNOTATION_GENERATION,
    CONTAINER_NAME,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_SPEC_HASH,
    LABEL_SPLITMODEL,
    MANAGED_BY,
    SOURCE_MOUNT,
    OperatorConfig,
)
from splitlearn_operator.sources import CACHE_MOUNT, source_arguments, source_env
from splitlearn_operator.spec import ResolvedSpec

SPLIT = "split"
CLEANUP = "cleanup"
TERMINATION_LOG = "/dev/termination-log"


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    """Makes the SplitModel the controller of what we create: GC'd with it, watched by it."""
    return {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "name": body["metadata"]["name"],
        "uid": body["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(name: str, component: str, spec_hash: str | None = None) -> dict[str, str]:
    result = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_SPLITMODEL: name[:63],
    }
    if spec_hash:
        result[LABEL_SPEC_HASH] = spec_hash
    return result


def job_name(name: str, spec_hash: str, component: str = SPLIT) -> str:
    """Deterministic: the same SplitModel and spec always name the same Job (idempotent)."""
    suffix = f"-{spec_hash}" if component == SPLIT else f"-{component}-{spec_hash}"
    return f"{name[: 63 - len(suffix)].rstrip('-.')}{suffix}"


def pod_security_context(config: OperatorConfig) -> dict[str, Any]:
    uid = config.extras.job_run_as_user
    ids = {"runAsUser": uid, "runAsGroup": uid, "fsGroup": uid} if uid is not None else {}
    return {
        "runAsNonRoot": True,
        **ids,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# Writable places for a read-only root filesystem: temp files and library caches.
SCRATCH = {"tmp": "/tmp", "cache": "/cache"}
ENV = {
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "XDG_CACHE_HOME": "/cache",
    "HF_HOME": "/cache/huggingface",
    "TORCH_HOME": "/cache/torch",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def scratch_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """emptyDir volumes and their mounts for every writable place a pod needs."""
    volumes: list[dict[str, Any]] = [{"name": name, "emptyDir": {}} for name in SCRATCH]
    mounts: list[dict[str, Any]] = [
        {"name": name, "mountPath": path} for name, path in SCRATCH.items()
    ]
    return volumes, mounts


def placement(
    pod: dict[str, Any],
    config: OperatorConfig,
    node_selector: dict[str, str],
    tolerations: list[dict[str, Any]],
) -> dict[str, Any]:
    """The pod-level settings Jobs and servers share: account, pull secrets, placement."""
    extras = config.extras
    if extras.job_service_account:
        pod["serviceAccountName"] = extras.job_service_account
    if extras.job_image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in extras.job_image_pull_secrets]
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    return pod


def split_command(spec: ResolvedSpec) -> list[str]:
    """`splitcore split` with a flag for every spec field; the result goes to the
    termination message, where the operator reads it."""
    command = [
        "splitcore", "split",
        "--model-type", spec.model_type,
        *source_arguments(spec),
        "--split", spec.split_config,
        "--storage", spec.storage_path,
        "--model-name", spec.model_id,
        "--format", spec.file_format,
        "--device", spec.device,
        "--result-file", TERMINATION_LOG,
    ]  # fmt: skip
    if not spec.auto_save:
        command.append("--no-save")
    if spec.verify:
        command.append("--verify")
    if spec.allow_pickle:
        command.append("--allow-pickle")
    return command


def cleanup_command(spec: ResolvedSpec) -> list[str]:
    return [
        "splitcore", "clean",
        "--storage", spec.storage_path,
        "--model-name", spec.model_id,
        "--split", spec.split_config,
        "--format", spec.file_format,
        "--result-file", TERMINATION_LOG,
    ]  # fmt: skip


def _pod_spec(
    spec: ResolvedSpec, config: OperatorConfig, command: list[str], with_source: bool
) -> dict[str, Any]:
    volumes, mounts = scratch_volumes()
    if spec.storage is not None:
        volumes.append(
            {"name": "storage", "persistentVolumeClaim": {"claimName": spec.storage.name}}
        )
        mounts.append({"name": "storage", "mountPath": spec.storage_path})
    if with_source and spec.source_claim:
        volumes.append(
            {
                "name": "source",
                "persistentVolumeClaim": {"claimName": spec.source_claim, "readOnly": True},
            }
        )
        mounts.append({"name": "source", "mountPath": SOURCE_MOUNT, "readOnly": True})
    if with_source and spec.cache_claim:
        volumes.append(
            {"name": "source-cache", "persistentVolumeClaim": {"claimName": spec.cache_claim}}
        )
        mounts.append({"name": "source-cache", "mountPath": CACHE_MOUNT})
    extras = config.extras
    pod: dict[str, Any] = {
        "restartPolicy": "Never",  # podFailurePolicy needs it
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(config),
        "containers": [
            {
                "name": CONTAINER_NAME,
                "image": extras.job_image,
                "imagePullPolicy": extras.job_image_pull_policy,
                "command": command,
                "env": [{"name": key, "value": value} for key, value in ENV.items()]
                + (source_env(spec) if with_source else []),
                "resources": spec.resources,
                "securityContext": container_security_context(),
                "volumeMounts": mounts,
                "terminationMessagePath": TERMINATION_LOG,
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    return placement(pod, config, spec.node_selector, spec.tolerations)


def _job(
    body: dict[str, Any],
    spec: ResolvedSpec,
    config: OperatorConfig,
    component: str,
    command: list[str],
) -> dict[str, Any]:
    name = body["metadata"]["name"]
    job_labels = labels(name, component, spec.spec_hash)
    extras = config.extras
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, spec.spec_hash, component),
            "namespace": body["metadata"]["namespace"],
            "labels": job_labels,
            "annotations": {ANNOTATION_GENERATION: str(body["metadata"].get("generation", 1))},
            "ownerReferences": [owner_reference(body)],
        },
        "spec": {
            "backoffLimit": extras.job_backoff_limit,
            "activeDeadlineSeconds": extras.job_active_deadline_seconds,
            "ttlSecondsAfterFinished": extras.job_ttl_seconds_after_finished,
            "podFailurePolicy": {
                "rules": [
                    {  # invalid input: retrying cannot help
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER_NAME,
                            "operator": "In",
                            "values": [int(ExitCode.INVALID)],
                        },
                    },
                    {  # a node drained or preempted: not the Job's fault, not counted
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": job_labels},
                "spec": _pod_spec(spec, config, command, with_source=component == SPLIT),
            },
        },
    }


def build_split_job(
    body: dict[str, Any], spec: ResolvedSpec, config: OperatorConfig
) -> dict[str, Any]:
    """The Job that runs `splitcore split` for this spec."""
    return _job(body, spec, config, SPLIT, split_command(spec))


def build_cleanup_job(
    body: dict[str, Any], spec: ResolvedSpec, config: OperatorConfig
) -> dict[str, Any]:
    """The Job that removes the components (deletionPolicy: Delete)."""
    return _job(body, spec, config, CLEANUP, cleanup_command(spec))


def build_pvc(body: dict[str, Any], spec: ResolvedSpec) -> dict[str, Any]:
    """The claim the operator creates for `spec.storage.size`.

    It is owned by the SplitModel (garbage-collected with it) only under
    `deletionPolicy: Delete`; under `Retain` the claim, and the files, outlive the resource.
    """
    assert spec.storage is not None and spec.storage.create
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": spec.storage.name,
            "namespace": body["metadata"]["namespace"],
            "labels": labels(body["metadata"]["name"], "storage"),
        },
        "spec": {
            "accessModes": list(spec.storage.access_modes),
            "resources": {"requests": {"storage": spec.storage.size}},
        },
    }
    if spec.storage.storage_class:
        claim["spec"]["storageClassName"] = spec.storage.storage_class
    if spec.deletion_policy == "Delete":
        claim["metadata"]["ownerReferences"] = [owner_reference(body)]
    return claim


def build_event(
    body: dict[str, Any],
    event_type: str,
    reason: str,
    message: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A core/v1 Event about the SplitModel (what `kubectl describe` shows)."""
    moment = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    metadata = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{metadata['name'][:200]}.",
            "namespace": metadata["namespace"],
            "labels": {LABEL_MANAGED_BY: MANAGED_BY},
        },
        "involvedObject": {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "firstTimestamp": moment,
        "lastTimestamp": moment,
        "count": 1,
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
    }
