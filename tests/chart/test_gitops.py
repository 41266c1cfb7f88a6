"""GitOps: Argo CD's health.lua (run in Lua 5.1, as gopher-lua) and the README's install
snippets, judged on statuses the operator's own builders make."""

from __future__ import annotations

import re

import lupa.lua51 as lua51
import pytest
import yaml

from support.repo import CHART, REPO
from support.status_fixtures import fixtures

HEALTH = {
    "no-status": "Progressing",
    "queued": "Progressing",
    "in-progress": "Progressing",
    "ready": "Healthy",
    "failed": "Degraded",
    "spec-changed": "Progressing",
    "reconciling-new-generation": "Progressing",
    "terminating": "Progressing",
    "serving-rolling-out": "Progressing",
    "served": "Healthy",
    "serving-scaled-to-zero": "Healthy",
    "serving-stalled": "Degraded",
}


def run_health(obj):
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return runtime.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return runtime.table_from([to_lua(v) for v in value])
        return value

    runtime.globals().obj = to_lua(obj)
    result = runtime.execute((CHART / "files" / "argocd-health.lua").read_text())
    return result["status"], result["message"]


@pytest.mark.parametrize("name", list(HEALTH))
def test_argocd_health_of_every_state(name):
    status, message = run_health(fixtures()[name])
    assert status == HEALTH[name]
    assert isinstance(message, str) and message


def test_degraded_shows_the_reason_and_message():
    assert run_health(fixtures()["failed"]) == ("Degraded", "OOMKilled: out of memory")


def test_the_trunk_server_shows_in_the_health_message():
    assert run_health(fixtures()["serving-stalled"]) == (
        "Degraded", "ServingCrashLoop: pod x-trunk-1 keeps exiting: corrupt trunk"
    )  # fmt: skip
    assert run_health(fixtures()["served"]) == (
        "Healthy",
        "3 components written and recorded; trunk served at x-trunk.ml.svc:50051",
    )
    assert run_health(fixtures()["serving-scaled-to-zero"]) == (
        "Healthy",
        "3 components written and recorded; trunk served at x-trunk.ml.svc:50051 "
        "(Serving: ScaledToZero)",
    )


def test_it_runs_on_lua_5_1():
    assert lua51.LuaRuntime().eval("_VERSION") == "Lua 5.1"


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_readme_install_section_has_every_path():
    readme = (REPO / "README.md").read_text()
    shell = "\n".join(_code_blocks(readme, "bash"))
    assert "helm install splitlearn-operator charts/splitlearn-operator" in shell
    assert "kubectl apply -f crds/ -f deploy/install.yaml" in shell
    manifests = [
        doc for block in _code_blocks(readme, "yaml") for doc in yaml.safe_load_all(block) if doc
    ]
    kinds = {doc["kind"]: doc for doc in manifests}
    application = kinds["Application"]
    assert application["apiVersion"] == "argoproj.io/v1alpha1"
    assert application["spec"]["source"]["path"] == "charts/splitlearn-operator"
    assert "ServerSideApply=true" in application["spec"]["syncPolicy"]["syncOptions"]
    release = kinds["HelmRelease"]
    assert release["apiVersion"].startswith("helm.toolkit.fluxcd.io/")
    assert release["spec"]["install"]["crds"] == "CreateReplace"
    assert release["spec"]["upgrade"]["crds"] == "CreateReplace"
