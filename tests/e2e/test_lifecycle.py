"""End to end: kubectl apply a SplitModel, the real operator runs a real Job, status follows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from support.cluster import NAMESPACE, put_checkpoint, splitmodel


async def test_happy_path_writes_the_guides_layout_and_records_it(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    storage = cluster.claim("models")
    await cluster.operator()
    code, _ = await cluster.apply(splitmodel("gpt2-a"))
    assert code in (200, 201)

    await cluster.eventually(lambda: cluster.condition("gpt2-a", "Ready").get("status") == "True",
                             what="Ready=True", timeout=20)
    assert sorted(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file()) == [
        f"{c}/gpt2-a_2-10_{c}{suffix}" for c in ("bottom", "top", "trunk")
        for suffix in (".pt", "_metadata.json")
    ]
    body = cluster.splitmodel("gpt2-a")
    status = body["status"]
    assert status["observedGeneration"] == body["metadata"]["generation"] == 1
    assert {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]} == {
        "Ready": ("True", "Succeeded"),
        "Reconciling": ("False", "Succeeded"),
        "Stalled": ("False", "Succeeded"),
    }
    assert status["jobName"] == cluster.jobs()[0]["metadata"]["name"]
    for component in status["components"]:
        name = component["name"]
        on_volume = storage / name / f"gpt2-a_2-10_{name}.pt"
        metadata = json.loads(on_volume.with_name(on_volume.stem + "_metadata.json").read_text())
        assert component == {
            "name": name,
            "path": f"/models/{name}/gpt2-a_2-10_{name}.pt",
            "metadataPath": f"/models/{name}/gpt2-a_2-10_{name}_metadata.json",
            "modelClass": metadata["model_class"],
            "startLayer": metadata["start_layer"],
            "endLayer": metadata["end_layer"],
            "numLayers": metadata["num_layers"],
            "numParameters": metadata["num_parameters"],
            "memoryBytes": metadata["memory_bytes"],
            "sha256": hashlib.sha256(on_volume.read_bytes()).hexdigest(),
            "savedAt": metadata["saved_at"],
        }
    assert [c["name"] for c in status["components"]] == ["bottom", "trunk", "top"]
    reasons = [event["reason"] for event in cluster.events("gpt2-a")]
    assert "JobCreated" in reasons and "Succeeded" in reasons
    assert NAMESPACE == body["metadata"]["namespace"]
    assert Path  # noqa: B018
