"""The trunk server (`spec.serving`) without a cluster: the spec, the manifests, what the
operator reads from the server's Deployment and pods, and the status it writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from splitcore.config import ServerConfig
from splitcore.result import Reason
from splitlearn_operator import status as states
from splitlearn_operator import view
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.server_builders import (
    CONFIG_KEY,
    ServedTrunk,
    build_server,
    endpoint,
    server_config,
)
from splitlearn_operator.serving import observe, owned_patch, problem_of, served_trunk
from splitlearn_operator.spec import ServingSpec, SpecError, resolve_spec
from splitlearn_operator.status import (
    EventReason,
    Progress,
    ServingState,
    ServingStatus,
    SplitModelStatus,
)
from splitlearn_operator.view import ServerInfo, ServerPod
from support.status_fixtures import COMPONENTS

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"
TRUNK = ServedTrunk("models", "/models", "gpt2-a", "2-10", "ab" * 32)
ENDPOINT = "gpt2-a-trunk.ml.svc:50051"


def serving_body(body: dict[str, Any], **serving: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    body["spec"]["splitStorageConfig"]["autoSave"] = True
    body["spec"]["serving"] = {"enabled": True, **serving}
    return body


# ------------------------------------------------------------------------------ the spec


def test_serving_defaults_and_fields(body, config):
    assert resolve_spec(body, config).serving is None
    spec = resolve_spec(serving_body(body), config)
    assert spec.serving == ServingSpec(
        replicas=1, port=50051, trainable=False,
        resources={"requests": {"cpu": "500m", "memory": "1Gi"}},
    )  # fmt: skip
    full = serving_body(
        body, replicas=0, port=7000, trainable=True, sessionTimeoutSeconds=60,
        resources={"limits": {"memory": "4Gi"}}, nodeSelector={"gpu": "no"},
        tolerations=[{"key": "k", "operator": "Exists"}],
        tls={"secretName": "tls", "caSecretName": "ca"},
    )  # fmt: skip
    assert resolve_spec(full, config).serving == ServingSpec(
        replicas=0, port=7000, trainable=True, resources={"limits": {"memory": "4Gi"}},
        node_selector={"gpu": "no"}, tolerations=[{"key": "k", "operator": "Exists"}],
        session_timeout_seconds=60, tls_secret="tls", client_ca_secret="ca",
    )  # fmt: skip


def test_serving_never_changes_the_split(body, config):
    """The spec hash names the split Job: scaling the server must not split again."""
    plain = resolve_spec(serving_body(body, enabled=False), config)
    served = resolve_spec(serving_body(body, replicas=3, port=7000), config)
    assert plain.spec_hash == served.spec_hash


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"autoSave": False}, "spec.serving needs autoSave: true (files to serve)"),
        ({"port": 8000}, "spec.serving.port 8000: a TCP port other than 8000 (metrics) and 8081"),
        ({"port": 8081}, "spec.serving.port 8081: a TCP port other than 8000 (metrics) and 8081"),
        ({"replicas": -1}, "spec.serving.replicas must be 0 or more"),
        ({"tls": {"caSecretName": "ca"}}, "spec.serving.tls.caSecretName needs secretName"),
        ({"name": "A" + "b" * 10}, "spec.serving: the Service Abbbbbbbbbb-trunk needs a name"),
        ({"name": "a" * 58}, "needs a name of at most 57 lowercase letters"),
    ],
)
def test_invalid_serving_is_refused_with_the_field(body, config, change, message):
    served = serving_body(body)
    if "autoSave" in change:
        served["spec"]["splitStorageConfig"]["autoSave"] = False
    elif "name" in change:
        served["metadata"]["name"] = change["name"]
    else:
        served["spec"]["serving"].update(change)
    with pytest.raises(SpecError) as raised:
        resolve_spec(served, config)
    assert raised.value.reason is Reason.INVALID_SPEC
    assert message in str(raised.value)


# ------------------------------------------------------------------------------ manifests


def test_the_servers_configuration_serves_exactly_the_recorded_trunk(config):
    serving = ServingSpec(session_timeout_seconds=90, tls_secret="tls", client_ca_secret="ca")
    server = server_config(serving, TRUNK, config)
    assert server == ServerConfig(
        host="0.0.0.0", port=50051, max_models=1, metrics_port=8000,
        health_check_interval=config.server.health_check_interval, enable_monitoring=True,
        log_level=config.server.log_level, model_storage_dir="/models",
        config={
            "trunks": [{"model_name": "gpt2-a", "split_config": "2-10", "sha256": "ab" * 32}],
            "allow_training": False, "health_port": 8081, "session_idle_seconds": 90,
            "tls_cert_file": "/etc/splitcore/tls/tls.crt",
            "tls_key_file": "/etc/splitcore/tls/tls.key",
            "tls_client_ca_file": "/etc/splitcore/client-ca/ca.crt",
        },
    )  # fmt: skip


def test_the_three_objects(body, config):
    configmap, deployment, service = build_server(body, ServingSpec(replicas=2), TRUNK, config)
    labels = {
        "app.kubernetes.io/managed-by": "splitlearn-operator",
        "app.kubernetes.io/component": "serving",
        "splitlearn.io/splitmodel": "gpt2-a",
    }
    owner = {"apiVersion": "splitlearn.io/v1alpha1", "kind": "SplitModel", "name": "gpt2-a",
             "uid": "1234-abcd", "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    for manifest in (configmap, deployment, service):
        assert manifest["metadata"]["name"] == "gpt2-a-trunk"
        assert manifest["metadata"]["namespace"] == "ml"
        assert manifest["metadata"]["labels"] == labels
        assert manifest["metadata"]["ownerReferences"] == [owner]
    text = configmap["data"][CONFIG_KEY]
    assert ServerConfig.from_dict(yaml.safe_load(text)) == server_config(
        ServingSpec(replicas=2), TRUNK, config
    )
    spec = deployment["spec"]
    assert spec["replicas"] == 2 and spec["selector"] == {"matchLabels": labels}
    assert spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}
    }  # fmt: skip
    assert spec["progressDeadlineSeconds"] == 600
    template = spec["template"]
    assert template["metadata"]["labels"] == labels
    annotations = template["metadata"]["annotations"]
    assert annotations["splitlearn.io/trunk-sha256"] == "ab" * 32
    assert annotations["splitlearn.io/split"] == "2-10"
    (container,) = template["spec"]["containers"]
    assert container["command"] == [
        "splitcore", "serve", "--config", "/etc/splitcore/server_config.yaml"
    ]  # fmt: skip
    assert container["image"] == config.extras.job_image
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("grpc", 50051), ("metrics", 8000), ("health", 8081)
    ]  # fmt: skip
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 8081}  # plaintext health port
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["storage"] == {"name": "storage", "mountPath": "/models", "readOnly": True}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/splitcore", "readOnly": True}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    assert volumes["storage"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert volumes["config"] == {"name": "config", "configMap": {"name": "gpt2-a-trunk"}}
    assert "tls" not in volumes
    assert service["spec"] == {
        "selector": labels,
        "ports": [
            {"name": "grpc", "port": 50051, "targetPort": "grpc", "protocol": "TCP"},
            {"name": "metrics", "port": 8000, "targetPort": "metrics", "protocol": "TCP"},
        ],
    }
    assert endpoint("ml", "gpt2-a", 50051) == ENDPOINT


def test_tls_secrets_are_mounted_never_read_and_training_mounts_read_write(body, config):
    serving = ServingSpec(trainable=True, tls_secret="tls", client_ca_secret="ca")
    _, deployment, _ = build_server(body, serving, TRUNK, config)
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"] == {"name": "tls", "secret": {"secretName": "tls"}}
    assert volumes["client-ca"] == {"name": "client-ca", "secret": {"secretName": "ca"}}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/splitcore/tls", "readOnly": True}
    assert mounts["storage"]["readOnly"] is False
    assert volumes["storage"]["persistentVolumeClaim"]["readOnly"] is False


def test_what_was_applied_is_one_hash_that_moves_with_every_change(body, config):
    def applied(serving: ServingSpec, trunk: ServedTrunk = TRUNK) -> str:
        return build_server(body, serving, trunk, config)[1]["metadata"]["annotations"][
            "splitlearn.io/applied"
        ]

    base = applied(ServingSpec())
    assert applied(ServingSpec()) == base  # deterministic: nothing to write
    assert applied(ServingSpec(replicas=2)) != base
    assert applied(ServingSpec(port=7000)) != base
    assert applied(ServingSpec(), ServedTrunk("models", "/models", "gpt2-a", "3-9", "cd" * 32))
    moved = build_server(body, ServingSpec(), TRUNK, config)[1]
    other = build_server(body, ServingSpec(session_timeout_seconds=5), TRUNK, config)[1]
    config_sha = "splitlearn.io/config-sha256"
    assert (
        moved["spec"]["template"]["metadata"]["annotations"][config_sha]
        != other["spec"]["template"]["metadata"]["annotations"][config_sha]
    )  # a new configuration rolls the pods


def test_an_update_clears_optional_pod_fields_it_no_longer_sets(body, config):
    _, deployment, _ = build_server(body, ServingSpec(), TRUNK, config)
    patch = owned_patch(deployment)
    pod = patch["spec"]["template"]["spec"]
    assert {k: pod[k] for k in ("nodeSelector", "tolerations", "imagePullSecrets")} == {
        "nodeSelector": None, "tolerations": None, "imagePullSecrets": None
    }  # fmt: skip
    assert "apiVersion" not in patch and "kind" not in patch
    assert (
        owned_patch(deployment)["metadata"]["annotations"] == deployment["metadata"]["annotations"]
    )


# ------------------------------------------------------------------------------ observing


def deployment_body(wanted: int = 1, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "gpt2-a-trunk", "namespace": "ml", "generation": 2,
            "labels": {"splitlearn.io/splitmodel": "gpt2-a"},
            "annotations": {"splitlearn.io/applied": "h"},
        },
        "spec": {
            "replicas": wanted,
            "template": {"metadata": {"annotations": {
                "splitlearn.io/trunk-sha256": TRUNK.sha256, "splitlearn.io/split": "2-10"}}},
        },
        "status": {"observedGeneration": 2, **status},
    }  # fmt: skip


def pod_body(name: str, ready: bool = True, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml",
                     "labels": {"splitlearn.io/splitmodel": "gpt2-a"},
                     "annotations": {"splitlearn.io/trunk-sha256": TRUNK.sha256}},
        "status": {"phase": "Running",
                   "conditions": [{"type": "Ready", "status": str(ready)}],
                   "containerStatuses": [{"name": "trunk", **container}]},
    }  # fmt: skip


ROLLED = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1}  # the status's counts


def test_a_deployment_is_rolled_out_by_kstatus_rules():
    assert ServerInfo.of(deployment_body(**ROLLED)).rolled_out
    assert not ServerInfo.of(deployment_body(2, **ROLLED)).rolled_out  # scaling up
    stale = deployment_body(**ROLLED)
    stale["metadata"]["generation"] = 3  # the controller has not seen the latest spec
    assert not ServerInfo.of(stale).rolled_out
    surplus = deployment_body(**{**ROLLED, "replicas": 2})  # an old pod is still there
    assert not ServerInfo.of(surplus).rolled_out
    assert view.index_server(deployment_body(**ROLLED)) == {
        ("ml", "gpt2-a"): ServerInfo.of(deployment_body(**ROLLED))
    }
    assert view.UNREADY_SERVERS in view.index_server(deployment_body(2, **ROLLED))


def test_a_progress_deadline_is_a_failure():
    failed = deployment_body(conditions=[{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "x" has timed out progressing.'}])  # fmt: skip
    info = ServerInfo.of(failed)
    assert info.failure == 'ProgressDeadlineExceeded: ReplicaSet "x" has timed out progressing.'
    assert problem_of(info, [], {}) == (
        Reason.SERVING_FAILED,
        "the trunk server's Deployment: ProgressDeadlineExceeded: "
        'ReplicaSet "x" has timed out progressing.',
    )


@pytest.mark.parametrize(
    ("waiting", "reason", "message"),
    [
        ({"reason": "CrashLoopBackOff", "message": "back-off 10s"}, Reason.SERVING_CRASH_LOOP,
         "pod p keeps exiting: splitcore serve: trunk gpt2-a 2-10: sha256 mismatch"),
        ({"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'},
         Reason.SERVING_IMAGE_PULL_FAILED, 'pod p: ImagePullBackOff: Back-off pulling image "x"'),
        ({"reason": "ErrImagePull", "message": "not found"},
         Reason.SERVING_IMAGE_PULL_FAILED, "pod p: ErrImagePull: not found"),
        ({"reason": "CreateContainerConfigError", "message": "bad"}, Reason.SERVING_FAILED,
         "pod p: CreateContainerConfigError: bad"),
    ],
)  # fmt: skip
def test_pods_that_cannot_start_by_themselves_are_problems(waiting, reason, message):
    last = {"terminated": {"exitCode": 1, "message": "loading\nsplitcore serve: trunk gpt2-a "
                                                     "2-10: sha256 mismatch\n"}}  # fmt: skip
    pod = ServerPod.of(pod_body("p", False, state={"waiting": waiting}, lastState=last))
    if reason is not Reason.SERVING_CRASH_LOOP:
        pod = ServerPod.of(pod_body("p", False, state={"waiting": waiting}))
    assert problem_of(None, [pod], {}) == (reason, message)


def test_a_crash_loop_stays_one_between_two_crashes():
    last = {"terminated": {"exitCode": 1, "message": "splitcore serve: trunk x: corrupt"}}
    starting_again = ServerPod.of(
        pod_body("p", False, state={"running": {}}, restartCount=2, lastState=last)
    )
    assert problem_of(None, [starting_again], {}) == (
        Reason.SERVING_CRASH_LOOP, "pod p keeps exiting: splitcore serve: trunk x: corrupt"
    )  # fmt: skip
    killed_once = ServerPod.of(
        pod_body("p", False, state={"running": {}}, restartCount=1, lastState=last)
    )
    assert problem_of(None, [killed_once], {}) is None  # one restart is not a loop
    recovered = ServerPod.of(pod_body("p", True, state={"running": {}}, restartCount=5,
                                      lastState=last))  # fmt: skip
    assert problem_of(None, [recovered], {}) is None


def test_a_missing_secret_shows_only_in_the_kubelets_events():
    creating = ServerPod.of({"metadata": {"name": "p"}, "status": {"phase": "Pending"}})
    assert creating.waiting_reason == "ContainerCreating"
    assert problem_of(None, [creating], {}) is None  # starting, as far as anyone knows
    message = 'MountVolume.SetUp failed for volume "tls" : secret "tls" not found'
    assert problem_of(None, [creating], {"p": message}) == (
        Reason.SERVING_SECRET_NOT_FOUND, f"pod p: {message}"
    )  # fmt: skip


def test_observing_counts_only_ready_pods_of_the_recorded_trunk():
    server = ServerInfo.of(deployment_body(2, replicas=2, updatedReplicas=1, readyReplicas=2))
    old = pod_body("old")
    old["metadata"]["annotations"]["splitlearn.io/trunk-sha256"] = "00" * 32
    pods = [ServerPod.of(p) for p in (old, pod_body("new"), pod_body("starting", False))]
    state = observe(ServingSpec(replicas=2), TRUNK, server, pods, {}, ENDPOINT)
    assert state == ServingState(
        status=ServingStatus(ENDPOINT, 2, 2, TRUNK.sha256, "2-10"),
        current=True, ready_on_current=1, complete=False, problem=None,
    )  # fmt: skip
    scaled_down = ServerInfo.of(deployment_body(0, replicas=0, readyReplicas=0))
    assert observe(ServingSpec(replicas=0), TRUNK, scaled_down, pods, {}, ENDPOINT) == ServingState(
        status=ServingStatus(ENDPOINT, 0, 0, TRUNK.sha256, "2-10"),
        current=True,
        ready_on_current=0,
        complete=True,
        problem=None,
    )  # fmt: skip  (the pods' deletion may not have reached the index yet)
    done = ServerInfo.of(deployment_body(**ROLLED))
    assert observe(ServingSpec(), TRUNK, done, pods[1:2], {}, ENDPOINT).complete
    other = ServedTrunk("models", "/models", "gpt2-a", "3-9", "cd" * 32)
    previous = observe(ServingSpec(), other, done, pods[1:2], {}, ENDPOINT)
    assert (previous.current, previous.complete, previous.ready_on_current) == (False, False, 0)


def test_the_trunk_served_is_the_recorded_split_of_this_spec(body, config):
    spec = resolve_spec(serving_body(body), config)
    trunk = COMPONENTS[1]  # the trunk, sha256 "ab" * 32
    recorded = SplitModelStatus(spec_hash=spec.spec_hash, components_spec_hash=spec.spec_hash,
                                components=(trunk,))  # fmt: skip
    assert served_trunk(spec, recorded) == ServedTrunk(
        "models", "/models", "gpt2-a", "2-10", "ab" * 32
    )
    running = SplitModelStatus(spec_hash=spec.spec_hash, components_spec_hash="older",
                               components=(trunk,))  # fmt: skip
    assert served_trunk(spec, running) is None  # the new split's Job has not succeeded yet


# ------------------------------------------------------------------------------ status


def recorded(spec_hash: str = "h") -> SplitModelStatus:
    running = states.reconciling(SplitModelStatus(), 3, "j", spec_hash, "models", T0)
    return states.ready(running, 3, (), True, None, T0, None, spec_hash)


def state(**changes: Any) -> ServingState:
    values: dict[str, Any] = {
        "status": ServingStatus(ENDPOINT, 1, 1, TRUNK.sha256, "2-10"),
        "current": True, "ready_on_current": 1, "complete": True, "problem": None,
    }  # fmt: skip
    values.update(changes)
    return ServingState(**values)


def conditions(status: SplitModelStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_ready_waits_for_the_trunk_to_be_served():
    rolling = states.with_serving(recorded(), 3, "h", state(complete=False, ready_on_current=0,
                                  status=ServingStatus(ENDPOINT, 1, 0, TRUNK.sha256, "2-10")),
                                  T1)  # fmt: skip
    assert conditions(rolling) == {
        "Ready": ("False", Progress.ROLLING_OUT), "Reconciling": ("True", Progress.ROLLING_OUT),
        "Stalled": ("False", Progress.ROLLING_OUT), "Serving": ("False", Progress.ROLLING_OUT),
    }  # fmt: skip
    served = states.with_serving(rolling, 3, "h", state(), T1)
    assert conditions(served) == {
        "Ready": ("True", Progress.SUCCEEDED), "Reconciling": ("False", Progress.SUCCEEDED),
        "Stalled": ("False", Progress.SUCCEEDED), "Serving": ("True", Progress.SERVED),
    }  # fmt: skip
    assert served.condition("Ready").message == (
        "0 components written and recorded; trunk served at gpt2-a-trunk.ml.svc:50051"
    )
    assert served.to_dict()["serving"] == {
        "endpoint": ENDPOINT, "replicas": 1, "readyReplicas": 1, "sha256": TRUNK.sha256,
        "splitConfig": "2-10",
    }  # fmt: skip


def test_a_server_that_cannot_start_stalls_the_resource():
    problem = (Reason.SERVING_CRASH_LOOP, "pod p keeps exiting: corrupt")
    stuck = states.with_serving(recorded(), 3, "h", state(problem=problem, ready_on_current=0,
                                complete=False), T1)  # fmt: skip
    assert conditions(stuck) == {
        "Ready": ("False", Reason.SERVING_CRASH_LOOP),
        "Reconciling": ("False", Reason.SERVING_CRASH_LOOP),
        "Stalled": ("True", Reason.SERVING_CRASH_LOOP),
        "Serving": ("False", Reason.SERVING_CRASH_LOOP),
    }
    assert stuck.last_failure == states.Failure("ServingCrashLoop", problem[1], T1)


def test_the_same_stall_seen_again_rewrites_nothing():
    problem = (Reason.SERVING_SECRET_NOT_FOUND, 'pod p: secret "tls" not found')
    stuck = state(problem=problem, ready_on_current=0, complete=False)
    first = states.with_serving(recorded(), 3, "h", stuck, T0)
    assert states.with_serving(first, 3, "h", stuck, T1) == first
    recovered = states.with_serving(first, 3, "h", state(), T1)
    again = states.with_serving(recovered, 3, "h", stuck, T1)
    assert again.last_failure == states.Failure(problem[0], problem[1], T1)  # a new failure


def test_scaled_to_zero_is_ready_but_not_serving():
    zero = state(status=ServingStatus(ENDPOINT, 0, 0, TRUNK.sha256, "2-10"), ready_on_current=0)
    result = states.with_serving(recorded(), 3, "h", zero, T1)
    assert conditions(result)["Ready"] == ("True", Progress.SUCCEEDED)
    assert conditions(result)["Serving"] == ("False", Progress.SCALED_TO_ZERO)


def test_while_a_new_split_runs_only_serving_moves():
    """The Job owns Ready/Reconciling/Stalled until its split is recorded; the previous
    trunk keeps being served and says so."""
    rerun = states.reconciling(recorded("old"), 4, "j2", "new", "models", T1)
    previous = state(current=False, ready_on_current=0, complete=False)
    result = states.with_serving(rerun, 4, "new", previous, T1)
    assert conditions(result) == {
        **conditions(rerun), "Serving": ("False", Progress.PREVIOUS_SPLIT)
    }  # fmt: skip
    assert result.condition("Serving").message == (
        "1 replicas serve the previous split 2-10 at gpt2-a-trunk.ml.svc:50051 until the new "
        "split is recorded"
    )
    nothing = state(status=ServingStatus(ENDPOINT, 1, 0), current=False, ready_on_current=0,
                    complete=False)  # fmt: skip
    first = states.with_serving(rerun, 4, "new", nothing, T1)
    assert conditions(first)["Serving"] == ("False", Progress.WAITING_FOR_SPLIT)


def test_serving_off_removes_its_status_and_restamps_the_generation():
    served = states.with_serving(recorded(), 3, "h", state(), T1)
    off = states.with_serving(served, 4, "h", None, T1)  # spec.serving.enabled: false
    assert "Serving" not in conditions(off) and off.serving is None
    assert off.observed_generation == 4
    assert conditions(off)["Ready"] == ("True", Progress.SUCCEEDED)
    assert off.to_dict()["serving"] is None  # a merge patch removes it
    assert {c.observed_generation for c in off.conditions} == {4}


def test_the_serving_events_are_named():
    assert (EventReason.SERVING_STARTED, EventReason.SERVING_UPDATED,
            EventReason.SERVING_STOPPED) == ("ServingStarted", "ServingUpdated",
                                             "ServingStopped")  # fmt: skip


def test_the_config_has_a_progress_deadline_for_servers():
    config = OperatorConfig.from_server_config(
        ServerConfig(config={"serving_progress_deadline_seconds": 60})
    )
    assert config.extras.serving_progress_deadline_seconds == 60
