"""Every chart value, set to something other than its default, lands exactly where it should.

One case per knob (or per group of knobs that only make sense together): the case's values are
rendered with the real `helm template`, its check says where each value lands, and every case
also passes the checks that hold for any values (valid objects, restricted pods, names that
refer to what is rendered, `helm test` reaching the operator). A last test walks values.yaml
and values.schema.json and fails on any key that no case sets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from splitcore.config import ServerConfig
from splitlearn_operator.config import OperatorConfig
from support.pod_security import restricted_violations
from support.repo import CHART, RELEASE
from support.repo import RELEASE_NAMESPACE as NAMESPACE

KUBERNETES_VERSION = "1.33.0"  # the version test_chart.py validates against
HOOK = "helm.sh/hook"
SELECTOR = {"app.kubernetes.io/name": "splitlearn-operator", "app.kubernetes.io/instance": RELEASE}


@dataclass(frozen=True)
class Chart:
    """One render of the chart, with the places values land in by name."""

    objects: list[dict[str, Any]]

    def of(self, kind: str, *, hooks: bool = False) -> list[dict[str, Any]]:
        """Objects of `kind`: installed ones, or with `hooks` the `helm test` ones."""
        return [
            obj
            for obj in self.objects
            if obj["kind"] == kind and (HOOK in obj["metadata"].get("annotations", {})) == hooks
        ]

    def one(self, kind: str, *, hooks: bool = False) -> dict[str, Any]:
        (found,) = self.of(kind, hooks=hooks)
        return found

    def names(self, *, hooks: bool = False) -> set[tuple[str, str]]:
        return {
            (obj["kind"], obj["metadata"]["name"])
            for obj in self.objects
            if (HOOK in obj["metadata"].get("annotations", {})) == hooks
        }

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def container(self) -> dict[str, Any]:
        (operator,) = self.pod["containers"]
        return operator

    @property
    def test_pod(self) -> dict[str, Any]:
        return self.one("Pod", hooks=True)["spec"]

    @property
    def test_container(self) -> dict[str, Any]:
        (healthz,) = self.test_pod["containers"]
        return healthz

    @cached_property
    def server_config(self) -> dict[str, Any]:
        """The operator's configuration file as the ConfigMap holds it."""
        data: dict[str, Any] = yaml.safe_load(self.one("ConfigMap")["data"]["server_config.yaml"])
        return data

    @staticmethod
    def ports(service: dict[str, Any]) -> dict[str, int]:
        """name -> number of a Service's ports."""
        return {port["name"]: port["port"] for port in service["spec"]["ports"]}

    @property
    def container_ports(self) -> dict[str, int]:
        return {port["name"]: port["containerPort"] for port in self.container["ports"]}

    @property
    def healthz_url(self) -> str:
        (url,) = [e["value"] for e in self.test_container["env"] if e["name"] == "HEALTHZ_URL"]
        return str(url)


Check = Callable[[Chart, Chart], None]  # (the case's render, the default render)
CASES: dict[str, tuple[dict[str, Any], Check]] = {}


def case(values: dict[str, Any]) -> Callable[[Check], Check]:
    """Register a check for `values` under the check's name."""

    def register(check: Check) -> Check:
        CASES[check.__name__] = (values, check)
        return check

    return register


# ---------------------------------------------------------------------------- image

IMAGE = "registry.example/ml/splitlearn-operator:9.9.9"
PULL_SECRETS = [{"name": "regcred"}, {"name": "mirror"}]


@case({"image": {"repository": "registry.example/ml/splitlearn-operator", "tag": "9.9.9",
                 "pullPolicy": "Always"}})  # fmt: skip
def image(chart: Chart, default: Chart) -> None:
    for container in (chart.container, chart.test_container):
        assert (container["image"], container["imagePullPolicy"]) == (IMAGE, "Always")
    config = chart.server_config["config"]
    assert (config["job_image"], config["job_image_pull_policy"]) == (IMAGE, "Always")


@case({"imagePullSecrets": PULL_SECRETS})
def image_pull_secrets(chart: Chart, default: Chart) -> None:
    assert chart.pod["imagePullSecrets"] == PULL_SECRETS
    assert chart.test_pod["imagePullSecrets"] == PULL_SECRETS
    # The split and cleanup Jobs run the same image: the operator gets the secrets' names.
    assert chart.server_config["config"]["job_image_pull_secrets"] == ["regcred", "mirror"]


@case({"imagePullSecrets": PULL_SECRETS,
       "server": {"config": {"job_image_pull_secrets": ["job-regcred"]}}})  # fmt: skip
def job_image_pull_secrets(chart: Chart, default: Chart) -> None:
    # As with job_image, the operator's own setting wins over the chart's pods' one.
    assert chart.pod["imagePullSecrets"] == PULL_SECRETS
    assert chart.server_config["config"]["job_image_pull_secrets"] == ["job-regcred"]


# ---------------------------------------------------------------------------- names


@case({"nameOverride": "splitter"})
def name_override(chart: Chart, default: Chart) -> None:
    fullname = f"{RELEASE}-splitter"
    assert chart.names() == {(kind, fullname) for kind, _ in default.names()}
    assert chart.names(hooks=True) == {("Pod", f"{fullname}-test")}
    selector = {**SELECTOR, "app.kubernetes.io/name": "splitter"}
    assert chart.deployment["spec"]["selector"]["matchLabels"] == selector
    for obj in chart.objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "splitter"


@case({"fullnameOverride": "ml-splitter"})
def fullname_override(chart: Chart, default: Chart) -> None:
    assert chart.names() == {(kind, "ml-splitter") for kind, _ in default.names()}
    assert chart.names(hooks=True) == {("Pod", "ml-splitter-test")}
    assert chart.deployment["spec"]["selector"]["matchLabels"] == SELECTOR  # the name stays


# ---------------------------------------------------------------------------- access


@case({"serviceAccount": {"create": False, "name": "ml-operator"}})
def existing_service_account(chart: Chart, default: Chart) -> None:
    assert chart.of("ServiceAccount") == []
    assert chart.pod["serviceAccountName"] == "ml-operator"
    subjects = chart.one("ClusterRoleBinding")["subjects"]
    assert subjects == [{"kind": "ServiceAccount", "name": "ml-operator", "namespace": NAMESPACE}]


@case({"serviceAccount": {"create": False}})
def namespace_default_service_account(chart: Chart, default: Chart) -> None:
    assert chart.of("ServiceAccount") == []
    assert chart.pod["serviceAccountName"] == "default"
    assert chart.one("ClusterRoleBinding")["subjects"][0]["name"] == "default"


ROLE_ARN = {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/splitter"}


@case({"serviceAccount": {"name": "splitter", "annotations": ROLE_ARN}})
def named_service_account(chart: Chart, default: Chart) -> None:
    account = chart.one("ServiceAccount")
    assert account["metadata"]["name"] == "splitter"
    assert account["metadata"]["annotations"] == ROLE_ARN
    assert chart.pod["serviceAccountName"] == "splitter"
    assert chart.one("ClusterRoleBinding")["subjects"][0]["name"] == "splitter"


@case({"rbac": {"create": False}})
def no_rbac(chart: Chart, default: Chart) -> None:
    roles = {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    assert chart.names() == {(kind, name) for kind, name in default.names() if kind not in roles}


@case({"rbac": {"clusterWide": False}})
def namespaced(chart: Chart, default: Chart) -> None:
    assert chart.of("ClusterRole") == [] and chart.of("ClusterRoleBinding") == []
    role, binding = chart.one("Role"), chart.one("RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    groups = {group for rule in role["rules"] for group in rule["apiGroups"]}
    assert "apiextensions.k8s.io" not in groups  # no CRD watch without all namespaces
    assert chart.container["args"][-2:] == ["--namespace", NAMESPACE]


# ---------------------------------------------------------------------------- server


SERVER_SETTINGS = {
    "host": "::",
    "max_workers": 3,
    "max_models": 2,
    "log_level": "DEBUG",
    "model_storage_dir": "/data/models",
    "auto_save_split_models": False,
}


@case({"server": SERVER_SETTINGS})
def server_settings(chart: Chart, default: Chart) -> None:
    """Settings only the operator reads: they land in its configuration file, nowhere else."""
    assert chart.server_config == {**default.server_config, **SERVER_SETTINGS}
    assert chart.pod == default.pod  # but the pod restarts: its config checksum changed
    template = chart.deployment["spec"]["template"]["metadata"]["annotations"]
    before = default.deployment["spec"]["template"]["metadata"]["annotations"]
    assert template["checksum/config"] != before["checksum/config"]


@case({"server": {"port": 8080}})
def http_port(chart: Chart, default: Chart) -> None:
    assert chart.server_config["port"] == 8080
    assert chart.container_ports == {"http": 8080, "metrics": 8000}
    assert chart.ports(chart.one("Service")) == {"http": 8080, "metrics": 8000}
    assert urlsplit(chart.healthz_url).port == 8080
    for probe in ("livenessProbe", "readinessProbe"):
        assert chart.container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


@case({"server": {"metrics_port": 9100}})
def metrics_port(chart: Chart, default: Chart) -> None:
    assert chart.server_config["metrics_port"] == 9100
    assert chart.container_ports == {"http": 50051, "metrics": 9100}
    assert chart.ports(chart.one("Service")) == {"http": 50051, "metrics": 9100}


@case({"server": {"health_check_interval": 12.5}})
def health_check_interval(chart: Chart, default: Chart) -> None:
    assert chart.server_config["health_check_interval"] == 12.5
    # The probe comes no more often than the operator re-checks the API.
    assert chart.container["livenessProbe"]["periodSeconds"] == 13


@case({"server": {"health_check_interval": 0.5}})
def sub_second_health_check_interval(chart: Chart, default: Chart) -> None:
    # periodSeconds 0 would be defaulted to 10 s by the API server.
    assert chart.container["livenessProbe"]["periodSeconds"] == 1


@case({"server": {"enable_monitoring": False}})
def no_monitoring(chart: Chart, default: Chart) -> None:
    assert chart.server_config["enable_monitoring"] is False
    assert chart.container_ports == {"http": 50051}
    assert chart.ports(chart.one("Service")) == {"http": 50051}


OPERATOR_EXTRAS = {
    "log_format": "json",
    "job_image": "registry.example/ml/split-job:1.0",
    "job_image_pull_policy": "Never",
    "job_service_account": "splitter-jobs",
    "job_backoff_limit": 0,
    "job_active_deadline_seconds": 600,
    "job_ttl_seconds_after_finished": 0,
    "job_run_as_user": 2000,
    "job_default_resources": {"requests": {"cpu": "2", "memory": "4Gi"}},
    "queue_retry_seconds": 1.5,
    "wait_retry_seconds": 7.5,
    "resync_seconds": 12.0,
    "watch_server_timeout_seconds": 60,
    "watch_client_timeout_seconds": 90,
}


@case({"server": {"config": OPERATOR_EXTRAS}})
def operator_extras(chart: Chart, default: Chart) -> None:
    # Every extra lands as written: the user's job image and pull policy win over the chart's.
    assert chart.server_config["config"] == OPERATOR_EXTRAS
    assert chart.container["image"] == default.container["image"]  # the operator's stays


# ---------------------------------------------------------------------------- the pod

RESOURCES = {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


@case({"resources": RESOURCES})
def resources(chart: Chart, default: Chart) -> None:
    assert chart.container["resources"] == RESOURCES


EXTRA_ENV = [
    {"name": "HF_HUB_OFFLINE", "value": "1"},
    {"name": "PROXY_TOKEN", "valueFrom": {"secretKeyRef": {"name": "proxy", "key": "token"}}},
]


@case({"extraEnv": EXTRA_ENV})
def extra_env(chart: Chart, default: Chart) -> None:
    assert chart.container["env"] == EXTRA_ENV
    assert "HF_HUB_OFFLINE" not in json.dumps(chart.test_pod)  # the operator's only


@case({"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}})
def openshift_random_uid(chart: Chart, default: Chart) -> None:
    """OpenShift's restricted SCCs pick the UID and GID: the chart must not pin them."""
    expected = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert chart.pod["securityContext"] == expected
    assert chart.test_pod["securityContext"] == expected


LOCALHOST_SECCOMP = {"type": "Localhost", "localhostProfile": "profiles/splitlearn.json"}


@case({"securityContext": {"seccompProfile": LOCALHOST_SECCOMP}})
def container_security_context(chart: Chart, default: Chart) -> None:
    for container in (chart.container, chart.test_container):
        assert container["securityContext"] == {
            **default.container["securityContext"],
            "seccompProfile": LOCALHOST_SECCOMP,
        }


@case({"priorityClassName": "ml-critical"})
def priority_class(chart: Chart, default: Chart) -> None:
    assert chart.pod["priorityClassName"] == "ml-critical"
    assert chart.pod == {**default.pod, "priorityClassName": "ml-critical"}


@case({"podAnnotations": {"example.com/team": "ml"}, "podLabels": {"team": "ml"}})
def pod_metadata(chart: Chart, default: Chart) -> None:
    template = chart.deployment["spec"]["template"]["metadata"]
    checksum = default.deployment["spec"]["template"]["metadata"]["annotations"]
    assert template["annotations"] == {**checksum, "example.com/team": "ml"}
    assert template["labels"] == {**SELECTOR, "team": "ml"}
    assert chart.deployment["spec"]["selector"]["matchLabels"] == SELECTOR  # immutable


SCHEDULING = {
    "nodeSelector": {"kubernetes.io/arch": "arm64"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                     "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "pool", "operator": "In", "values": ["cpu"]}]}]}}},
}  # fmt: skip


@case(SCHEDULING)
def scheduling(chart: Chart, default: Chart) -> None:
    assert chart.pod == {**default.pod, **SCHEDULING}


# ---------------------------------------------------------------------------- metrics and tests


@case({"metrics": {"service": {"enabled": False}}})
def no_metrics_service(chart: Chart, default: Chart) -> None:
    assert chart.of("Service") == []
    # `helm test` still reaches the operator, through a Service that lives only for the test.
    service = chart.one("Service", hooks=True)
    assert service["metadata"]["name"] == f"{RELEASE}-test"
    assert service["metadata"]["annotations"]["helm.sh/hook-weight"] == "-1"  # before the pod
    assert urlsplit(chart.healthz_url).hostname == f"{RELEASE}-test.{NAMESPACE}"


@case({"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s",
                                      "labels": {"release": "kps"}}}})  # fmt: skip
def service_monitor(chart: Chart, default: Chart) -> None:
    monitor = chart.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/", "interval": "15s"}]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


@case({"test": {"enabled": False}})
def no_helm_test(chart: Chart, default: Chart) -> None:
    assert chart.names(hooks=True) == set()
    assert chart.names() == default.names()


# ---------------------------------------------------------------------------- every case


def wiring_problems(chart: Chart) -> list[str]:
    """Names that point at nothing rendered: each a broken install or a failing `helm test`."""
    problems = []
    pod_labels = chart.deployment["spec"]["template"]["metadata"]["labels"]
    if not chart.deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items():
        problems.append("the Deployment's selector misses its pods")
    (volume,) = [v for v in chart.pod["volumes"] if "configMap" in v]
    if volume["configMap"]["name"] != chart.one("ConfigMap")["metadata"]["name"]:
        problems.append("the config volume names another ConfigMap")
    accounts = [obj["metadata"]["name"] for obj in chart.of("ServiceAccount")]
    if accounts and accounts != [chart.pod["serviceAccountName"]]:
        problems.append("the pod runs as another ServiceAccount than the chart's")
    for binding in chart.of("ClusterRoleBinding") + chart.of("RoleBinding"):
        role = binding["roleRef"]
        if (role["kind"], role["name"]) not in chart.names():
            problems.append(f"{binding['kind']} binds a role that is not rendered")
        if binding["subjects"] != [{"kind": "ServiceAccount", "namespace": NAMESPACE,
                                    "name": chart.pod["serviceAccountName"]}]:  # fmt: skip
            problems.append(f"{binding['kind']} grants another account than the pod's")
    services = {
        service["metadata"]["name"]: service
        for service in chart.of("Service") + chart.of("Service", hooks=True)
    }
    for service in services.values():
        if not service["spec"]["selector"].items() <= pod_labels.items():
            problems.append(f"Service {service['metadata']['name']} selects no operator pod")
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in chart.container_ports:
                problems.append(f"Service port {port['name']} targets no container port")
    for monitor in chart.of("ServiceMonitor"):
        (service,) = chart.of("Service")
        if not monitor["spec"]["selector"]["matchLabels"].items() <= (
            service["metadata"]["labels"].items()
        ):
            problems.append("the ServiceMonitor selects no Service")
        if {e["port"] for e in monitor["spec"]["endpoints"]} - set(chart.ports(service)):
            problems.append("the ServiceMonitor scrapes a port the Service lacks")
    if chart.of("Pod", hooks=True):
        url = urlsplit(chart.healthz_url)
        name, _, namespace = (url.hostname or "").partition(".")
        if namespace != NAMESPACE or name not in services:
            problems.append(f"helm test calls {url.hostname}, a Service not rendered")
        elif chart.ports(services[name]).get("http") != url.port or url.path != "/healthz":
            problems.append(f"helm test calls {url.geturl()}, not the operator's /healthz")
    return problems


@pytest.fixture(scope="module")
def default(render: Callable[..., list[dict[str, Any]]]) -> Chart:
    return Chart(render())


@pytest.mark.parametrize("name", list(CASES))
def test_each_value_lands_where_it_should(render, default, name):
    values, check = CASES[name]
    chart = Chart(render(values))
    check(chart, default)
    assert chart.objects != default.objects, "the value changed nothing"
    assert wiring_problems(chart) == []
    pods = [chart.pod] + [pod["spec"] for pod in chart.of("Pod", hooks=True)]
    assert [restricted_violations(pod) for pod in pods] == [[] for _ in pods]
    for obj in chart.objects:
        if obj["kind"] != "ServiceMonitor":  # not in kubernetes-validate; test_chart checks it
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_defaults_render_no_optional_field(default):
    assert wiring_problems(default) == []
    for absent in ("imagePullSecrets", "priorityClassName", "nodeSelector", "tolerations",
                   "affinity"):  # fmt: skip
        assert absent not in default.pod and absent not in default.test_pod
    assert "env" not in default.container
    assert "job_image_pull_secrets" not in default.server_config["config"]
    assert default.of("ServiceMonitor") == [] and default.of("Service", hooks=True) == []
    assert default.pod["securityContext"] == default.test_pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert default.container["livenessProbe"]["periodSeconds"] == 30


@pytest.mark.parametrize("name", list(CASES))
def test_the_operator_reads_every_rendered_config(render, name):
    raw = Chart(render(CASES[name][0])).server_config
    server = ServerConfig.from_dict(raw)
    extras = OperatorConfig.from_server_config(server).extras
    assert {key: getattr(extras, key) for key in raw["config"]} == raw["config"]
    assert {k: v for k, v in server.to_dict().items() if k != "config"} == {
        k: v for k, v in raw.items() if k != "config"
    }


# ---------------------------------------------------------------------------- coverage


# Mappings the chart renders whole (toYaml): one case proves every key of them lands. Their
# keys are the restricted profile's settings, which no case may weaken to show they move.
RENDERED_WHOLE = {("podSecurityContext",), ("securityContext",)}


def leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths to the leaves of a values tree; an empty mapping is a leaf."""
    if isinstance(values, dict) and values and prefix not in RENDERED_WHOLE:
        for key, value in values.items():
            yield from leaf_paths(value, (*prefix, key))
    else:
        yield prefix


def schema_paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths to the properties a schema declares, down to those without properties."""
    if "properties" not in schema:
        yield prefix
    for key, child in schema.get("properties", {}).items():
        yield from schema_paths(child, (*prefix, key))


def lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def test_every_value_and_schema_key_is_exercised_by_a_case():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    set_by_cases = {path for values, _ in CASES.values() for path in leaf_paths(values)}

    def exercised(path: tuple[str, ...]) -> bool:
        """Some case sets the key itself, a key inside it, or the mapping it is in."""
        return any(
            given[: len(path)] == path or path[: len(given)] == given for given in set_by_cases
        )

    knobs = set(leaf_paths(defaults)) | set(schema_paths(schema))
    assert sorted(".".join(path) for path in knobs if not exercised(path)) == []
    # Each case sets its knobs to something else than the default.
    for name, (values, _) in CASES.items():
        for path in leaf_paths(values):
            try:
                default = lookup(defaults, path)
            except KeyError:  # not in values.yaml: only in the schema (server.config.*)
                continue
            assert lookup(values, path) != default, f"{name}: {'.'.join(path)} is the default"
