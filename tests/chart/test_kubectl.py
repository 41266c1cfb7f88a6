"""`kubectl apply -f crds/ -f deploy/install.yaml`, then the examples, with the real kubectl
against the emulated API server: what a user types, end to end."""

from __future__ import annotations

import asyncio

from kmock import Server, resource

from support.kubernetes import RealisticKubernetes
from support.operator import write_kubeconfig
from support.repo import REPO

DEPLOYMENTS = resource("apps", "v1", "deployments")
SPLITMODELS = resource("splitlearn.io", "v1alpha1", "splitmodels")
NAMESPACES = resource("", "v1", "namespaces")


async def kubectl_run(kubectl: str, kubeconfig, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        kubectl, "--kubeconfig", str(kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def test_kubectl_apply_installs_the_operator_then_the_examples(kubectl, tmp_path):
    api = RealisticKubernetes()
    async with api, Server(api):
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(api.url))
        apply = ("apply", "--validate=false")  # the emulator serves no OpenAPI documents
        code, output = await kubectl_run(
            kubectl, kubeconfig, *apply, "-f", str(REPO / "crds"), "-f",
            str(REPO / "deploy" / "install.yaml"),
        )  # fmt: skip
        assert code == 0, output
        assert (
            "customresourcedefinition.apiextensions.k8s.io/splitmodels.splitlearn.io created"
            in output
        )
        assert "deployment.apps/splitlearn-operator created" in output
        deployment = api.get(DEPLOYMENTS, "splitlearn-system", "splitlearn-operator")
        assert deployment is not None
        api.put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}})
        code, output = await kubectl_run(
            kubectl, kubeconfig, *apply, "-n", "ml", "-f", str(REPO / "examples"),
        )  # fmt: skip
        assert code == 0, output
        names = sorted(obj["metadata"]["name"] for obj in api.objects(SPLITMODELS, "ml"))
        assert names == ["gpt2", "gpt2-plan", "gpt2-scratch", "llama-3-2-1b"]
        plan = api.get(SPLITMODELS, "ml", "gpt2-plan")
        assert plan["spec"]["deletionPolicy"] == "Retain"  # CRD defaults applied
        assert plan["spec"]["format"] == "pt"
        # A second apply changes nothing: GitOps tools re-apply all the time.
        before = api.revision
        code, output = await kubectl_run(
            kubectl, kubeconfig, *apply, "-n", "ml", "-f", str(REPO / "examples")
        )
        assert code == 0 and "unchanged" in output, output
        assert api.revision == before
        bad = tmp_path / "bad.yaml"
        bad.write_text((REPO / "examples" / "plan-only.yaml").read_text().replace('"3-9"', '"9-3"'))
        code, output = await kubectl_run(kubectl, kubeconfig, *apply, "-n", "ml", "-f", str(bad))
        assert code != 0
        assert 'splitConfig must be "p1-p2" with 0 < p1 < p2' in output
