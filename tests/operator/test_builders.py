"""The manifests the operator creates, field by field, and the restricted Pod Security rules."""

from __future__ import annotations

from typing import Any

import pytest

from splitcore.config import ServerConfig
from splitlearn_operator import builders
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.spec import resolve_spec
from support.pod_security import restricted_violations


@pytest.fixture
def job(body, config) -> dict[str, Any]:
    return builders.build_split_job(body, resolve_spec(body, config), config)


def test_split_job_identity_and_ownership(job, body, config):
    spec = resolve_spec(body, config)
    assert job["metadata"]["name"] == f"gpt2-a-{spec.spec_hash}"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "splitlearn-operator",
        "app.kubernetes.io/component": "split",
        "splitlearn.io/splitmodel": "gpt2-a",
        "splitlearn.io/spec-hash": spec.spec_hash,
    }
    assert job["metadata"]["annotations"] == {"splitlearn.io/generation": "3"}
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "splitlearn.io/v1alpha1", "kind": "SplitModel", "name": "gpt2-a",
        "uid": "1234-abcd", "controller": True, "blockOwnerDeletion": True,
    }]  # fmt: skip
    assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]


def test_split_job_runs_splitcore_with_every_spec_field(job):
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == [
        "splitcore", "split", "--model-type", "gpt2", "--model", "/source/checkpoints/gpt2",
        "--split", "2-10", "--storage", "/models", "--model-name", "gpt2-a", "--format", "pt",
        "--device", "cpu", "--result-file", "/dev/termination-log",
    ]  # fmt: skip
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize(
    ("change", "flag"),
    [({"verify": True}, "--verify"), ({"allowPickle": True}, "--allow-pickle")],
)
def test_optional_flags(body, config, change, flag):
    body["spec"].update(change)
    command = builders.split_command(resolve_spec(body, config))
    assert command[-1] == flag


def test_plan_only_job_mounts_no_storage(body, config):
    body["spec"]["splitStorageConfig"]["autoSave"] = False
    job = builders.build_split_job(body, resolve_spec(body, config), config)
    pod = job["spec"]["template"]["spec"]
    assert "--no-save" in pod["containers"][0]["command"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp", "cache", "source"]


def test_split_job_fails_fast_on_invalid_input_and_is_bounded(job, config):
    spec = job["spec"]
    assert spec["backoffLimit"] == config.extras.job_backoff_limit
    assert spec["activeDeadlineSeconds"] == config.extras.job_active_deadline_seconds
    assert spec["ttlSecondsAfterFinished"] == config.extras.job_ttl_seconds_after_finished
    assert spec["podFailurePolicy"]["rules"][0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "split", "operator": "In", "values": [2]},
    }
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_split_job_volumes_and_mounts(job):
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "tmp", "emptyDir": {}},
        {"name": "cache", "emptyDir": {}},
        {"name": "storage", "persistentVolumeClaim": {"claimName": "models"}},
        {"name": "source", "persistentVolumeClaim": {"claimName": "models-src", "readOnly": True}},
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/cache"},
        {"name": "storage", "mountPath": "/models"},
        {"name": "source", "mountPath": "/source", "readOnly": True},
    ]
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"]}
    assert env["HF_HOME"] == "/cache/huggingface" and env["TMPDIR"] == "/tmp"


def test_split_job_pod_is_restricted(job):
    pod = job["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["fsGroup"] == 10001


def test_scheduling_and_resources_from_the_spec(body, config):
    body["spec"].update(
        resources={"limits": {"memory": "64Gi", "nvidia.com/gpu": 1}},
        nodeSelector={"gpu": "a100"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    pod = builders.build_split_job(body, resolve_spec(body, config), config)["spec"]["template"][
        "spec"
    ]
    assert pod["containers"][0]["resources"] == {"limits": {"memory": "64Gi", "nvidia.com/gpu": 1}}
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_cleanup_job_removes_exactly_this_split(body, config):
    spec = resolve_spec(body, config)
    job = builders.build_cleanup_job(body, spec, config)
    assert job["metadata"]["name"] == f"gpt2-a-cleanup-{spec.spec_hash}"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "cleanup"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == [
        "splitcore", "clean", "--storage", "/models", "--model-name", "gpt2-a", "--split",
        "2-10", "--format", "pt", "--result-file", "/dev/termination-log",
    ]  # fmt: skip
    assert "source" not in [v["name"] for v in pod["volumes"]]
    assert restricted_violations(pod) == []


def test_job_names_fit_kubernetes_limits():
    name = builders.job_name("x" * 253, "0123456789", "cleanup")
    assert len(name) <= 63 and name.endswith("-cleanup-0123456789")
    assert builders.job_name("a-b", "0123456789") == "a-b-0123456789"


@pytest.mark.parametrize(("policy", "owned"), [("Delete", True), ("Retain", False)])
def test_operator_created_claim_is_owned_only_under_delete(body, config, policy, owned):
    body["spec"]["storage"] = {"size": "20Gi", "accessModes": ["ReadWriteMany"]}
    body["spec"]["deletionPolicy"] = policy
    claim = builders.build_pvc(body, resolve_spec(body, config))
    assert claim["metadata"]["name"] == "gpt2-a-storage"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "20Gi"}},
    }
    assert ("ownerReferences" in claim["metadata"]) is owned


def test_event_about_the_splitmodel(body):
    event = builders.build_event(body, "Warning", "OOMKilled", "out of memory")
    assert event["involvedObject"] == {
        "apiVersion": "splitlearn.io/v1alpha1", "kind": "SplitModel", "name": "gpt2-a",
        "namespace": "ml", "uid": "1234-abcd",
    }  # fmt: skip
    assert (event["type"], event["reason"], event["message"]) == (
        "Warning",
        "OOMKilled",
        "out of memory",
    )
    assert event["metadata"]["generateName"] == "gpt2-a."


def test_job_pods_get_the_configured_image_pull_secrets(body):
    config = OperatorConfig.from_server_config(
        ServerConfig(
            auto_save_split_models=True, config={"job_image_pull_secrets": ["regcred", "mirror"]}
        )
    )
    spec = resolve_spec(body, config)
    for job in (builders.build_split_job(body, spec, config),
                builders.build_cleanup_job(body, spec, config)):  # fmt: skip
        assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [
            {"name": "regcred"}, {"name": "mirror"},
        ]  # fmt: skip


def test_no_pull_secrets_and_a_platform_assigned_uid_leave_those_fields_out(body):
    """OpenShift assigns the UID: `job_run_as_user: null` pins none, still restricted."""
    config = OperatorConfig.from_server_config(
        ServerConfig(auto_save_split_models=True, config={"job_run_as_user": None})
    )
    job = builders.build_split_job(body, resolve_spec(body, config), config)
    pod = job["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in pod
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert restricted_violations(pod) == []


def _split_pod(body, config, source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body["spec"]["source"] = source
    body["spec"].update(spec)
    job = builders.build_split_job(body, resolve_spec(body, config), config)
    return job["spec"]["template"]["spec"]


def test_a_hub_source_is_fetched_by_the_job_with_the_token_only_from_its_secret(body, config):
    hub = {"repoId": "org/llama", "revision": "v1.2", "endpoint": "https://hub.internal",
           "tokenSecretRef": {"name": "hf", "key": "token"}}  # fmt: skip
    pod = _split_pod(body, config, {"hub": hub}, modelPath="weights/fp16")
    (container,) = pod["containers"]
    command = container["command"]
    position = command.index("--hub")
    assert command[position : position + 10] == [
        "--hub", "org/llama", "--revision", "v1.2", "--endpoint", "https://hub.internal",
        "--model-path", "weights/fp16", "--cache", "/models/.cache/sources",
    ]  # fmt: skip
    assert "--model" not in command
    assert container["env"][-1] == {
        "name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}
    }  # fmt: skip
    assert [v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v] == ["storage"]


def test_an_s3_source_gets_its_keys_from_the_secret_and_may_cache_on_its_own_claim(body, config):
    s3 = {"uri": "s3://models/team/gpt2", "endpointURL": "http://minio:9000",
          "region": "eu-west-1", "credentialsSecretRef": {"name": "s3-keys"}}  # fmt: skip
    pod = _split_pod(body, config, {"s3": s3, "cacheClaimName": "downloads"})
    (container,) = pod["containers"]
    command = container["command"]
    position = command.index("--s3")
    assert command[position : position + 10] == [
        "--s3", "s3://models/team/gpt2", "--endpoint-url", "http://minio:9000",
        "--region", "eu-west-1", "--model-path", "checkpoints/gpt2", "--cache", "/source-cache",
    ]  # fmt: skip
    assert container["env"][-2:] == [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]
    assert {"name": "source-cache", "mountPath": "/source-cache"} in container["volumeMounts"]
    assert {"name": "source-cache", "persistentVolumeClaim": {"claimName": "downloads"}} in pod[
        "volumes"
    ]
    assert restricted_violations(pod) == []


def test_a_bare_hub_id_without_a_source_is_a_hub_source(body, config):
    del body["spec"]["source"]
    body["spec"]["modelPath"] = "openai-community/gpt2"
    spec = resolve_spec(body, config)
    command = builders.build_split_job(body, spec, config)["spec"]["template"]["spec"][
        "containers"
    ][0]["command"]
    position = command.index("--hub")
    assert command[position : position + 4] == [
        "--hub", "openai-community/gpt2", "--cache", "/models/.cache/sources",
    ]  # fmt: skip
