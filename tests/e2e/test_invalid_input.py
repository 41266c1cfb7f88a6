"""Bad input never crash-loops: admission refuses what the CRD can check; the rest ends
Ready=False, Stalled=True with a reason, a message and a Warning Event, and is not retried."""

from __future__ import annotations

import json

import aiohttp

from support.cluster import NAMESPACE, PODS, put_checkpoint, splitmodel


async def test_the_crd_refuses_a_bad_split_config_at_admission(cluster):
    await cluster.operator()
    for split, message in [
        ("10-2", 'splitConfig must be \\"p1-p2\\" with 0 < p1 < p2'),
        ("0-5", "with 0 < p1 < p2"),
        ("2_10", "should match '^(0|[1-9][0-9]{0,8})-(0|[1-9][0-9]{0,8})$'"),
        ("02-10", "should match '^(0|[1-9][0-9]{0,8})-(0|[1-9][0-9]{0,8})$'"),  # one spelling
        ("2-10\n", "should match"),
    ]:
        manifest = splitmodel("bad-split")
        manifest["spec"]["splitStorageConfig"]["splitConfig"] = split
        code, body = await cluster.apply(manifest)
        assert code == 422, body
        assert body["reason"] == "Invalid"
        assert message.replace('\\"', '"') in body["message"]
    code, body = await cluster.apply(splitmodel("bad-type", modelType="t5"))
    assert code == 422 and "supported values" in body["message"]
    assert cluster.splitmodel("bad-split") is None and cluster.jobs() == []


async def test_invalid_input_stalls_with_a_reason_and_the_operator_stays_healthy(
    cluster, gpt2_source, tmp_path
):
    put_checkpoint(cluster, gpt2_source)
    t5 = cluster.claim("models-src") / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "num_layers": 6}))
    (t5 / "model.safetensors").write_bytes((gpt2_source / "model.safetensors").read_bytes())
    cluster.claim("models")
    operator = await cluster.operator()
    cases = {
        # name: (spec overrides, reason, ran a Job)
        "beyond": ({"splitStorageConfig": {"splitConfig": "2-20", "storagePath": "/models"}},
                   "InvalidSplitPoints", True),
        "family": ({"modelType": "auto", "modelPath": "t5"}, "UnsupportedModel", True),
        "escape": ({"modelPath": "../../etc"}, "InvalidPath", False),
        "no-source": ({"source": {"claimName": "nope"}}, "SourceClaimNotFound", False),
        "no-model": ({"modelPath": "missing-dir"}, "SourceNotFound", True),
    }  # fmt: skip
    for name, (spec, _, _) in cases.items():
        code, body = await cluster.apply(splitmodel(name, **spec))
        assert code in (200, 201), body
    await cluster.apply(splitmodel("fine"))

    for name, (_, reason, ran) in cases.items():
        await cluster.eventually(
            lambda name=name: cluster.condition(name, "Stalled").get("status") == "True",
            what=f"{name} Stalled",
        )  # fmt: skip
        stalled = cluster.condition(name, "Stalled")
        ready = cluster.condition(name, "Ready")
        assert (stalled["reason"], ready["status"], ready["reason"]) == (reason, "False", reason)
        assert stalled["message"]
        status = cluster.splitmodel(name)["status"]
        assert status["lastFailure"]["reason"] == reason
        await cluster.eventually(
            lambda name=name: [e for e in cluster.events(name) if e["type"] == "Warning"],
            what=f"{name}'s Warning Event",
        )  # fmt: skip
        warnings = [e for e in cluster.events(name) if e["type"] == "Warning"]
        assert [e["reason"] for e in warnings] == [reason], name
        assert warnings[0]["message"] == stalled["message"]
        jobs = [
            j for j in cluster.jobs() if j["metadata"]["labels"]["splitlearn.io/splitmodel"] == name
        ]
        assert len(jobs) == (1 if ran else 0), name
        pods = [
            p
            for p in cluster.api.objects(PODS, NAMESPACE)
            if p["metadata"]["labels"].get("splitlearn.io/splitmodel") == name
        ]
        assert len(pods) == (1 if ran else 0), f"{name}: exit code 2 is never retried"
    await cluster.eventually(lambda: cluster.condition("fine", "Ready").get("status") == "True")
    healthz = f"http://127.0.0.1:{operator.port}/healthz"
    async with aiohttp.ClientSession() as session, session.get(healthz) as response:
        assert response.status == 200
    assert operator.process.returncode is None


async def test_a_missing_claim_is_looked_for_again_and_then_used(cluster, gpt2_source):
    await cluster.operator()
    cluster.claim("models")
    await cluster.apply(splitmodel("late"))
    await cluster.eventually(
        lambda: cluster.condition("late", "Stalled").get("reason") == "SourceClaimNotFound"
    )
    put_checkpoint(cluster, gpt2_source)  # creates the claim models-src
    await cluster.eventually(lambda: cluster.condition("late", "Ready").get("status") == "True")
    assert cluster.condition("late", "Stalled")["status"] == "False"
