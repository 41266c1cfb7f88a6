"""A SplitModel from a hub repository and from an S3 bucket: the Job fetches the checkpoint
(credentials only from Secrets), splits it, and status records the source's revision."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from support.cluster import NAMESPACE, PODS, Cluster, splitmodel
from support.hub import HubRepo, HubServer
from support.kubelet import SECRETS

REPO_ID, TOKEN = "splitlearn/tiny-gpt2", "hf_e2e_token_0123456789"
COMPONENT_FILES = sorted(
    f"{c}/gpt2_2-10_{c}{s}" for c in ("bottom", "trunk", "top") for s in (".pt", "_metadata.json")
)


@pytest.fixture
def checkpoint_files(gpt2_source: Path) -> dict[str, bytes]:
    return {f"gpt2/{p.name}": p.read_bytes() for p in gpt2_source.iterdir() if p.is_file()}


@pytest.fixture
def hub(checkpoint_files: dict[str, bytes]) -> Iterator[HubServer]:
    with HubServer({REPO_ID: HubRepo(dict(checkpoint_files))}, token=TOKEN) as server:
        yield server


def put_secret(cluster: Cluster, name: str, values: dict[str, str]) -> None:
    """The source's credentials, and the storage claim the components go to."""
    cluster.claim("models")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
              "type": "Opaque", "stringData": values}  # fmt: skip
    cluster.api.put(SECRETS, secret, NAMESPACE)


def components(cluster: Cluster) -> list[str]:
    storage = cluster.claim("models")
    return sorted(
        str(p.relative_to(storage))
        for p in storage.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    )


def hub_model(name: str, hub: HubServer, secret: str) -> dict[str, Any]:
    source = {"hub": {"repoId": REPO_ID, "endpoint": hub.url,
                      "tokenSecretRef": {"name": secret, "key": "token"}}}  # fmt: skip
    return splitmodel(name, modelId="gpt2", modelPath="gpt2", source=source)


async def test_a_hub_source_is_fetched_split_and_its_commit_recorded(cluster, hub):
    put_secret(cluster, "hf-token", {"token": TOKEN})
    await cluster.operator()
    code, _ = await cluster.apply(hub_model("from-hub", hub, "hf-token"))
    assert code == 201
    await cluster.eventually(
        lambda: cluster.condition("from-hub", "Ready").get("status") == "True",
        what="Ready from the hub",
    )
    assert components(cluster) == COMPONENT_FILES
    status = cluster.splitmodel("from-hub")["status"]
    assert status["source"]["revision"] == hub.repos[REPO_ID].commit
    assert [f["path"] for f in status["source"]["files"]] == ["gpt2/config.json",
                                                             "gpt2/model.safetensors"]  # fmt: skip
    job = cluster.jobs()[0]["spec"]["template"]["spec"]["containers"][0]
    assert TOKEN not in str(job) and TOKEN not in str(cluster.splitmodel("from-hub"))
    assert all(TOKEN not in str(event) for event in cluster.events("from-hub"))


async def test_a_bad_token_is_source_unauthorized_and_not_retried(cluster, hub):
    put_secret(cluster, "wrong-token", {"token": "hf_not_the_token"})
    await cluster.operator()
    await cluster.apply(hub_model("bad-token", hub, "wrong-token"))
    await cluster.eventually(
        lambda: cluster.condition("bad-token", "Stalled").get("reason") == "SourceUnauthorized",
        what="Stalled SourceUnauthorized",
    )
    assert "hf_not_the_token" not in str(cluster.splitmodel("bad-token"))
    assert len(cluster.api.objects(SECRETS, NAMESPACE)) == 1
    pods = [p for p in cluster.api.objects(PODS, NAMESPACE)
            if p["metadata"]["name"].startswith("bad-token")]  # fmt: skip
    assert len(pods) == 1  # exit 2: the podFailurePolicy fails the Job without a retry


async def test_an_s3_source_is_fetched_and_split(cluster, checkpoint_files, monkeypatch):
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    keys = {"AWS_ACCESS_KEY_ID": "e2e-access-key", "AWS_SECRET_ACCESS_KEY": "e2e-secret-key"}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        client.create_bucket(Bucket="models")
        for path, content in checkpoint_files.items():
            client.put_object(Bucket="models", Key=f"team/{path}", Body=content)
        put_secret(cluster, "s3-keys", keys)
        await cluster.operator()
        source = {"s3": {"uri": "s3://models/team", "endpointURL": url, "region": "us-east-1",
                         "credentialsSecretRef": {"name": "s3-keys"}}}  # fmt: skip
        code, _ = await cluster.apply(
            splitmodel("from-s3", modelId="gpt2", modelPath="gpt2", source=source)
        )
        assert code == 201
        await cluster.eventually(
            lambda: cluster.condition("from-s3", "Ready").get("status") == "True",
            what="Ready from S3",
        )
    finally:
        server.stop()
    assert components(cluster) == COMPONENT_FILES
    assert len(cluster.splitmodel("from-s3")["status"]["source"]["revision"]) == 64
