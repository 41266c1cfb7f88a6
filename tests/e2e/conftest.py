"""e2e fixtures: a fresh emulated cluster (API server + kubelet) per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from kmock import Server

from support.cluster import NAMESPACE, NAMESPACES, Cluster
from support.kubelet import Kubelet
from support.kubernetes import RealisticKubernetes
from support.repo import CRD


@pytest_asyncio.fixture
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    root.chmod(0o755)
    api = RealisticKubernetes()
    async with api, Server(api):
        api.install_crd(CRD)
        for namespace in ("default", NAMESPACE):
            api.put(
                NAMESPACES,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
        kubelet = Kubelet(api, root / "node")
        await kubelet.start()
        cluster = Cluster(api, kubelet, str(api.url), root)
        try:
            yield cluster
        finally:
            for operator in cluster.operators:
                await operator.stop()
            await kubelet.stop()


@pytest.fixture(scope="session")
def gpt2_source(gpt2_checkpoint: Path) -> Path:
    """The tiny GPT-2, to be copied into a source volume as `gpt2/`."""
    return gpt2_checkpoint
