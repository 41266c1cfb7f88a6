"""The Helm chart: lint, renders valid objects, restricted pods, least-privilege RBAC."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from splitcore.config import ServerConfig
from splitlearn_operator import builders
from splitlearn_operator.config import OperatorConfig
from splitlearn_operator.spec import resolve_spec
from support.pod_security import restricted_violations
from support.repo import CHART, REPO
from support.repo import RELEASE_NAMESPACE as NAMESPACE

KUBERNETES_VERSION = "1.33.0"
VALUE_SETS = {
    "default": {},
    "namespaced": {"rbac": {"clusterWide": False}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}},
}
# prometheus-operator's CRD is not in kubernetes-validate: check the fields we render.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "required": ["matchLabels"]},
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def test_helm_lint_strict(helm):
    for values in VALUE_SETS.values():
        flags = [arg for key, value in values.items()
                 for arg in ("--set-json", f"{key}={json.dumps(value)}")]  # fmt: skip
        done = subprocess.run(
            [helm, "lint", "--strict", str(CHART), *flags], capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_objects_are_valid_kubernetes(render, name):
    objects = render(VALUE_SETS[name], "--include-crds")
    kinds = sorted(obj["kind"] for obj in objects)
    expected = [
        "ConfigMap",
        "CustomResourceDefinition",
        "Deployment",
        "Pod",
        "Service",
        "ServiceAccount",
    ]
    expected += (
        ["Role", "RoleBinding"] if name == "namespaced" else ["ClusterRole", "ClusterRoleBinding"]
    )
    expected += ["ServiceMonitor"] if name == "monitoring" else []
    assert kinds == sorted(expected)
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            continue
        # SchemaNotFoundError fails the test: an unknown kind is never waved through.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_chart_crd_is_the_crd(render):
    assert (CHART / "crds" / "splitmodels.splitlearn.io.yaml").read_text() == (
        REPO / "crds" / "splitmodels.splitlearn.io.yaml"
    ).read_text()


def test_the_configmap_is_a_server_config_with_the_image_for_jobs(render):
    objects = render({"server": {"max_models": 3, "config": {"log_format": "json"}},
                      "image": {"tag": "1.2.3"}})  # fmt: skip
    (config_map,) = by_kind(objects, "ConfigMap")
    server = yaml.safe_load(config_map["data"]["server_config.yaml"])
    config = OperatorConfig.from_server_config(ServerConfig.from_dict(server))
    assert config.server.max_models == 3
    assert config.extras.log_format == "json"
    assert config.extras.job_image == "ghcr.io/splitlearn/splitlearn-operator:1.2.3"
    (deployment,) = by_kind(objects, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == config.extras.job_image  # Jobs run the operator's image


@pytest.mark.parametrize("name", ["default", "namespaced"])
def test_deployment_runs_one_restricted_operator(render, name):
    objects = render(VALUE_SETS[name])
    (deployment,) = by_kind(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert restricted_violations(pod) == []
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["periodSeconds"] == 30  # health_check_interval
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 50051, "metrics": 8000}
    scope = ["--all-namespaces"] if name == "default" else ["--namespace", NAMESPACE]
    assert container["args"] == ["--config", "/etc/splitlearn/server_config.yaml", *scope]


def test_every_pod_the_project_creates_is_restricted(render):
    objects = render()
    config = OperatorConfig.from_server_config(ServerConfig(auto_save_split_models=True))
    spec = {"modelPath": "gpt2", "source": {"claimName": "s"}, "storage": {"claimName": "m"},
            "splitStorageConfig": {"splitConfig": "2-10"}}  # fmt: skip
    body = {"apiVersion": "splitlearn.io/v1alpha1", "kind": "SplitModel",
            "metadata": {"name": "x", "namespace": "ml", "uid": "u", "generation": 1},
            "spec": spec}  # fmt: skip
    spec = resolve_spec(body, config)
    pods = {
        "deployment": by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"],
        "helm test": by_kind(objects, "Pod")[0]["spec"],
        "split job": builders.build_split_job(body, spec, config)["spec"]["template"]["spec"],
        "cleanup job": builders.build_cleanup_job(body, spec, config)["spec"]["template"]["spec"],
    }
    assert {name: restricted_violations(pod) for name, pod in pods.items()} == {
        name: [] for name in pods
    }


# ---------------------------------------------------------------------------- RBAC

VERBS = {
    "get": ("get",),
    "list": ("list",),
    "create": ("create",),
    "patch": ("patch",),
    "delete": ("delete",),
    "create_or_patch": ("create", "patch"),
}


def client_calls() -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every `self.client.<verb>(RESOURCE, ...)`
    in the operator's code, found by reading the code itself."""
    from splitlearn_operator import api

    resources = {
        name: value for name, value in vars(api).items() if isinstance(value, api.Resource)
    }
    calls = set()
    for path in (REPO / "operator" / "splitlearn_operator").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            if not (isinstance(owner, ast.Attribute) and owner.attr == "client"):
                continue
            if node.func.attr not in VERBS:
                continue
            first = node.args[0]
            assert isinstance(first, ast.Name) and first.id in resources, ast.unparse(node)
            resource = resources[first.id]
            sub = None
            if node.func.attr == "patch" and len(node.args) >= 5:
                sub = ast.literal_eval(node.args[4])
            plural = f"{resource.plural}/{sub}" if sub else resource.plural
            calls |= {(resource.group, plural, verb) for verb in VERBS[node.func.attr]}
    return calls


def kopf_calls(clusterwide: bool) -> set[tuple[str, str, str]]:
    """What kopf itself does for our handlers: list+watch every watched resource, patch the
    resources it keeps progress on; with all namespaces, follow CRDs too."""
    import kopf

    import splitlearn_operator.handlers  # noqa: F401  (registers the handlers)

    registry = kopf._core.intents.registries.get_default_registry()
    calls = set()
    for kind, handlers in (("watch", registry._indexing), ("watch", registry._watching),
                           ("change", registry._changing)):  # fmt: skip
        for handler in handlers.get_all_handlers():
            selector = handler.selector
            plural = selector.plural or selector.any_name
            calls |= {(selector.group, plural, "list"), (selector.group, plural, "watch")}
            if kind == "change":  # kopf keeps progress and finalizers on the object itself
                calls.add((selector.group, plural, "patch"))
    if clusterwide:
        crds = ("apiextensions.k8s.io", "customresourcedefinitions")
        calls |= {(*crds, "list"), (*crds, "watch")}
    return calls


def granted(objects: list[dict[str, Any]], kind: str) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for role in by_kind(objects, kind)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize(
    ("name", "kind", "clusterwide"),
    [("default", "ClusterRole", True), ("namespaced", "Role", False)],
)
def test_rbac_grants_exactly_what_the_code_calls(render, name, kind, clusterwide):
    objects = render(VALUE_SETS[name])
    needed = client_calls() | kopf_calls(clusterwide)
    assert granted(objects, kind) == needed
    if not clusterwide:
        assert by_kind(objects, "ClusterRole") == []  # nothing cluster-scoped at all


def test_no_rbac_wildcards(render):
    for values in VALUE_SETS.values():
        for role in by_kind(render(values), "ClusterRole") + by_kind(render(values), "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]


def test_values_schema_rejects_typos_and_wrong_types(helm):
    for flag in ("server.max_modles=3", "server.port=http", "rbac.clusterwide=false"):
        done = subprocess.run(
            [helm, "template", "x", str(CHART), "--set", flag],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode != 0, flag
        assert "values don't meet the specifications of the schema" in done.stderr, done.stderr


def test_service_monitor_needs_the_metrics_service(helm):
    done = subprocess.run(
        [helm, "template", "x", str(CHART), "--set", "metrics.serviceMonitor.enabled=true",
         "--set", "server.enable_monitoring=false"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and "needs metrics.service.enabled" in done.stderr


# ---------------------------------------------------------------------------- plain manifests


def _identity(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def test_install_yaml_is_the_chart_rendered_with_defaults(render):
    installed = [d for d in yaml.safe_load_all((REPO / "deploy" / "install.yaml").read_text()) if d]
    namespace, *rest = installed
    assert namespace["kind"] == "Namespace" and namespace["metadata"]["name"] == NAMESPACE
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    rendered = render({}, "--skip-tests")
    assert sorted(map(_identity, rest)) == sorted(map(_identity, rendered))
    assert sorted(rest, key=_identity) == sorted(rendered, key=_identity), (
        "deploy/install.yaml drifted from the chart: run `make manifests`"
    )


def test_dockerfile_entrypoints_match_what_pods_run(render):
    dockerfile = (REPO / "Dockerfile").read_text()
    cmd = json.loads(next(line for line in dockerfile.splitlines() if line.startswith("CMD "))[4:])
    (deployment,) = by_kind(render(), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert cmd == container["command"] + container["args"][:2]
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["splitcore"] == "splitcore.cli:main"  # what split and cleanup Jobs run
    assert "ENV PATH=/opt/splitlearn/bin:$PATH" in dockerfile
    assert 'pip install --constraint constraints.txt ".[operator]"' in dockerfile


def test_notes_render(helm):
    done = subprocess.run(
        [helm, "install", "x", str(CHART), "--dry-run=client", "-n", "ml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "kubectl get splitmodels" in done.stdout and "helm test x -n ml" in done.stdout


def test_the_chart_readme_explains_crd_upgrades_and_argocd():
    readme = (CHART / "README.md").read_text()
    assert "kubectl apply --server-side -f" in readme and "crds/" in readme
    assert "resource.customizations.health.splitlearn.io_SplitModel" in readme
    assert Path(CHART / "files" / "argocd-health.lua").is_file()
