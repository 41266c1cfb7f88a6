"""The operator runs under exactly the chart's RBAC: the emulated API server enforces the
rendered Role or ClusterRole on every call the operator makes, through a whole lifecycle."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from support.cluster import NAMESPACE, PVCS, put_checkpoint, splitmodel
from support.kubernetes import Authorizer
from support.repo import CHART, tool


def chart_rules(cluster_wide: bool) -> list[dict]:
    done = subprocess.run(
        [tool("helm"), "template", "splitlearn-operator", str(CHART), "--namespace", NAMESPACE,
         "--set", f"rbac.clusterWide={str(cluster_wide).lower()}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    kind = "ClusterRole" if cluster_wide else "Role"
    (role,) = [doc for doc in yaml.safe_load_all(done.stdout) if doc and doc["kind"] == kind]
    return role["rules"]


@pytest.mark.parametrize("cluster_wide", [False, True], ids=["namespaced", "cluster-wide"])
async def test_a_whole_lifecycle_under_the_charts_rbac(cluster, gpt2_source, cluster_wide):
    rules = chart_rules(cluster_wide)
    cluster.api.authorizer = (
        Authorizer("test-token", cluster_rules=rules) if cluster_wide
        else Authorizer("test-token", role_rules=rules, role_namespace=NAMESPACE)
    )  # fmt: skip
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    await cluster.operator(namespaces=[] if cluster_wide else [NAMESPACE])
    await cluster.apply(splitmodel("kept"))
    await cluster.apply(splitmodel("owned", storage={"size": "1Gi"}, deletionPolicy="Delete"))
    await cluster.apply(splitmodel("broken", splitStorageConfig={"splitConfig": "2-20"}))
    served = {"splitConfig": "2-10", "storagePath": "/models", "autoSave": True}
    await cluster.apply(splitmodel("served", splitStorageConfig=served,
                                   serving={"enabled": True}, deletionPolicy="Delete"))  # fmt: skip
    for name in ("kept", "owned", "served"):
        await cluster.eventually(
            lambda n=name: cluster.condition(n, "Ready").get("status") == "True"
        )
    await cluster.eventually(lambda: cluster.condition("broken", "Stalled").get("status") == "True")
    spec = cluster.splitmodel("kept")["spec"]
    spec["splitStorageConfig"]["splitConfig"] = "3-9"
    await cluster.patch_spec("kept", spec)
    await cluster.eventually(
        lambda: (
            cluster.splitmodel("kept")["status"]["observedGeneration"] == 2
            and cluster.condition("kept", "Ready").get("status") == "True"
        )
    )
    assert cluster.condition("served", "Serving")["status"] == "True"
    await cluster.patch_spec("served", {"serving": {"replicas": 0}})
    await cluster.eventually(
        lambda: (
            not cluster.pods("splitlearn.io/splitmodel=served,app.kubernetes.io/component=serving")
        )
    )
    await cluster.delete("served")  # the server goes first, then the files
    await cluster.eventually(lambda: cluster.splitmodel("served") is None, what="served deleted")
    await cluster.delete("owned")
    await cluster.eventually(lambda: cluster.splitmodel("owned") is None, what="owned deleted")
    assert cluster.api.get(PVCS, NAMESPACE, "owned-storage") is None  # owned: collected
    assert cluster.api.authorizer.denied == []
    assert "CleanedUp" in [e["reason"] for e in cluster.events("owned")]
