"""Pure builders of the trunk server's manifests (`spec.serving`): its ConfigMap (the server's
`ServerConfig`), Deployment and Service.

Like `builders`, no I/O: (SplitModel, resolved spec, the trunk to serve, config) -> dicts, with
the pod under the "restricted" Pod Security profile. What is served comes from the recorded
split (`ServedTrunk`), never from the spec alone: a new split reaches the server only once its
Job succeeded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from splitcore.config import ServerConfig
from splitlearn_operator.builders import (
    ENV,
    container_security_context,
    labels,
    owner_reference,
    placement,
    pod_security_context,
    scratch_volumes,
)
from splitlearn_operator.config import (
    ANNOTATION_APPLIED,
    ANNOTATION_CONFIG_SHA256,
    ANNOTATION_SPLIT,
    ANNOTATION_TRUNK_SHA256,
    OperatorConfig,
)
from splitlearn_operator.spec import SERVING_HEALTH_PORT, SERVING_METRICS_PORT, ServingSpec

SERVING = "serving"  # the component label of everything the server is made of
CONTAINER = "trunk"
CONFIG_KEY = "server_config.yaml"
CONFIG_DIR = "/etc/splitcore"
TLS_DIR = f"{CONFIG_DIR}/tls"
CLIENT_CA_DIR = f"{CONFIG_DIR}/client-ca"
#: SIGTERM drains calls in flight for the server's `drain_seconds` (30); then a margin.
TERMINATION_GRACE_SECONDS = 45
#: libyaml's dumper when PyYAML has it: the pure-Python one cost more than the whole sync.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True)
class ServedTrunk:
    """One recorded split's trunk: where it lies and what its file's sha256 is."""

    claim: str
    storage_path: str  # the claim's mount path, as in the split Job
    model_id: str
    split_config: str
    sha256: str


def server_name(name: str) -> str:
    """`<name>-trunk`: the Deployment, the Service and the ConfigMap."""
    return f"{name}-trunk"


def endpoint(namespace: str, name: str, port: int) -> str:
    return f"{server_name(name)}.{namespace}.svc:{port}"


def server_config(serving: ServingSpec, trunk: ServedTrunk, config: OperatorConfig) -> ServerConfig:
    """The server's `ServerConfig`: this one trunk, loaded and checked before it is ready."""
    extras: dict[str, Any] = {
        "trunks": [
            {"model_name": trunk.model_id, "split_config": trunk.split_config,
             "sha256": trunk.sha256}
        ],
        "allow_training": serving.trainable,
        "health_port": SERVING_HEALTH_PORT,
    }  # fmt: skip
    if serving.session_timeout_seconds is not None:
        extras["session_idle_seconds"] = serving.session_timeout_seconds
    if serving.tls_secret:
        extras["tls_cert_file"] = f"{TLS_DIR}/tls.crt"
        extras["tls_key_file"] = f"{TLS_DIR}/tls.key"
    if serving.client_ca_secret:
        extras["tls_client_ca_file"] = f"{CLIENT_CA_DIR}/ca.crt"
    return ServerConfig(
        host="0.0.0.0",
        port=serving.port,
        max_models=1,
        metrics_port=SERVING_METRICS_PORT,
        health_check_interval=config.server.health_check_interval,
        enable_monitoring=True,
        log_level=config.server.log_level,
        model_storage_dir=trunk.storage_path,
        config=extras,
    )


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    name = body["metadata"]["name"]
    return {
        "name": server_name(name),
        "namespace": body["metadata"]["namespace"],
        "labels": labels(name, SERVING),
        "ownerReferences": [owner_reference(body)],
    }


def build_server_configmap(
    body: dict[str, Any], serving: ServingSpec, trunk: ServedTrunk, config: OperatorConfig
) -> dict[str, Any]:
    text = yaml.dump(
        server_config(serving, trunk, config).to_dict(),
        Dumper=_DUMPER, sort_keys=False, default_flow_style=False,
    )  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(body),
        "data": {CONFIG_KEY: text},
    }


def _grpc_probe(period: int, failures: int) -> dict[str, Any]:
    """The standard health service on the plaintext health port (probes cannot speak TLS)."""
    return {
        "grpc": {"port": SERVING_HEALTH_PORT},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def _server_pod(
    serving: ServingSpec, trunk: ServedTrunk, config: OperatorConfig, configmap: str
) -> dict[str, Any]:
    volumes, mounts = scratch_volumes()
    read_only = not serving.trainable  # training saves new trunks beside the served one
    volumes += [
        {"name": "config", "configMap": {"name": configmap}},
        {"name": "storage",
         "persistentVolumeClaim": {"claimName": trunk.claim, "readOnly": read_only}},
    ]  # fmt: skip
    mounts += [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "storage", "mountPath": trunk.storage_path, "readOnly": read_only},
    ]
    secrets = (("tls", serving.tls_secret, TLS_DIR),
               ("client-ca", serving.client_ca_secret, CLIENT_CA_DIR))  # fmt: skip
    for volume, secret, folder in secrets:
        if secret:
            volumes.append({"name": volume, "secret": {"secretName": secret}})
            mounts.append({"name": volume, "mountPath": folder, "readOnly": True})
    extras = config.extras
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": pod_security_context(config),
        "containers": [
            {
                "name": CONTAINER,
                "image": extras.job_image,
                "imagePullPolicy": extras.job_image_pull_policy,
                "command": ["splitcore", "serve", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}"],
                "ports": [
                    {"name": "grpc", "containerPort": serving.port, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": SERVING_METRICS_PORT, "protocol": "TCP"},
                    {"name": "health", "containerPort": SERVING_HEALTH_PORT, "protocol": "TCP"},
                ],
                "env": [{"name": key, "value": value} for key, value in ENV.items()],
                "resources": serving.resources,
                "securityContext": container_security_context(),
                "volumeMounts": mounts,
                # Loading a large trunk takes a while: liveness waits for the first success.
                "startupProbe": _grpc_probe(period=5, failures=120),
                "readinessProbe": _grpc_probe(period=5, failures=2),
                "livenessProbe": _grpc_probe(period=10, failures=3),
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
        "volumes": volumes,
    }
    return placement(pod, config, serving.node_selector, serving.tolerations)


def build_server_deployment(
    body: dict[str, Any], serving: ServingSpec, trunk: ServedTrunk, config: OperatorConfig,
    config_text: str,
) -> dict[str, Any]:  # fmt: skip
    """`<name>-trunk`: rolls one pod at a time and never below the ready count it has
    (maxUnavailable 0), so the Service always has a ready server while replicas >= 1."""
    metadata = _metadata(body)
    selector = labels(body["metadata"]["name"], SERVING)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": serving.replicas,
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": config.extras.serving_progress_deadline_seconds,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": selector,
                    "annotations": {
                        ANNOTATION_TRUNK_SHA256: trunk.sha256,
                        ANNOTATION_SPLIT: trunk.split_config,
                        # a new configuration rolls the pods (they read it at start)
                        ANNOTATION_CONFIG_SHA256: hashlib.sha256(config_text.encode()).hexdigest(),
                    },
                },
                "spec": _server_pod(serving, trunk, config, metadata["name"]),
            },
        },
    }


def build_server_service(body: dict[str, Any], serving: ServingSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(body),
        "spec": {
            "selector": labels(body["metadata"]["name"], SERVING),
            "ports": [
                {"name": "grpc", "port": serving.port, "targetPort": "grpc", "protocol": "TCP"},
                {
                    "name": "metrics",
                    "port": SERVING_METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def build_server(
    body: dict[str, Any], serving: ServingSpec, trunk: ServedTrunk, config: OperatorConfig
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ConfigMap, Deployment and Service, the Deployment annotated with the hash of all
    three: while that hash holds, nothing needs writing."""
    configmap = build_server_configmap(body, serving, trunk, config)
    deployment = build_server_deployment(
        body, serving, trunk, config, configmap["data"][CONFIG_KEY]
    )
    service = build_server_service(body, serving)
    encoded = json.dumps([configmap, deployment, service], sort_keys=True).encode()
    deployment["metadata"]["annotations"] = {
        ANNOTATION_APPLIED: hashlib.sha256(encoded).hexdigest()[:16]
    }
    return configmap, deployment, service
