"""What a platform team sees: metrics that move, Events on transitions, logs that name things."""

from __future__ import annotations

import json

import aiohttp
import pytest

from support.cluster import put_checkpoint, splitmodel
from support.operator import scrape


async def test_metrics_move_as_resources_live(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.delay_seconds = 1.5
    operator = await cluster.operator(max_models=1)
    before = await scrape(operator.metrics_port)
    assert before[("splitlearn_jobs_running", ())] == 0
    assert before[("splitlearn_models_queued", ())] == 0

    await cluster.apply(splitmodel("m1"))
    await cluster.apply(splitmodel("m2", modelId="m2"))
    await cluster.eventually(lambda: cluster.condition("m2", "Ready").get("reason") == "Queued")
    during = await scrape(operator.metrics_port)
    assert during[("splitlearn_jobs_running", ())] == 1
    assert during[("splitlearn_models_queued", ())] == 1

    for name in ("m1", "m2"):
        await cluster.eventually(
            lambda n=name: cluster.condition(n, "Ready").get("status") == "True"
        )
    after = await scrape(operator.metrics_port)
    assert after[("splitlearn_reconciles_total", (("result", "created"),))] == 2
    assert after[("splitlearn_reconciles_total", (("result", "queued"),))] >= 1
    assert after[("splitlearn_job_duration_seconds_count", (("result", "succeeded"),))] == 2
    assert after[("splitlearn_jobs_running", ())] == 0
    assert after[("splitlearn_models_queued", ())] == 0
    trunk = next(
        c for c in cluster.splitmodel("m1")["status"]["components"] if c["name"] == "trunk"
    )
    written = after[("splitlearn_component_bytes_written_total", (("component", "trunk"),))]
    assert written == 2 * trunk["memoryBytes"]

    await cluster.apply(splitmodel("bad", splitStorageConfig={"splitConfig": "2-20"}))
    await cluster.eventually(lambda: cluster.condition("bad", "Stalled").get("status") == "True")
    failed = await scrape(operator.metrics_port)
    assert failed[("splitlearn_failures_total", (("reason", "InvalidSplitPoints"),))] == 1
    assert failed[("splitlearn_job_duration_seconds_count", (("result", "failed"),))] == 1


async def test_nothing_listens_when_monitoring_is_off(cluster):
    operator = await cluster.operator(enable_monitoring=False)
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(operator.metrics_port)


async def test_events_on_every_transition(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    cluster.kubelet.delay_seconds = 0.5
    await cluster.operator(max_models=1)
    await cluster.apply(splitmodel("e1", deletionPolicy="Delete"))
    await cluster.eventually(lambda: cluster.jobs(), what="e1's Job")
    await cluster.apply(splitmodel("e2", modelId="e2"))
    for name in ("e1", "e2"):
        await cluster.eventually(
            lambda n=name: cluster.condition(n, "Ready").get("status") == "True"
        )
    await cluster.delete("e1")
    await cluster.eventually(lambda: cluster.splitmodel("e1") is None)

    def story(name):
        return [(e["type"], e["reason"]) for e in sorted(
            cluster.events(name), key=lambda e: e["metadata"]["resourceVersion"])]  # fmt: skip

    assert story("e1") == [("Normal", "JobCreated"), ("Normal", "Succeeded"),
                           ("Normal", "CleanupStarted"), ("Normal", "CleanedUp")]  # fmt: skip
    assert story("e2") == [("Normal", "Queued"), ("Normal", "JobCreated"), ("Normal", "Succeeded")]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_logs_name_the_resource_in_both_formats(cluster, gpt2_source, log_format):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    operator = await cluster.operator(config={"log_format": log_format})
    await cluster.apply(splitmodel("logged"))
    await cluster.apply(splitmodel("broken", splitStorageConfig={"splitConfig": "2-20"}))
    await cluster.eventually(lambda: cluster.condition("logged", "Ready").get("status") == "True")
    await cluster.eventually(lambda: cluster.condition("broken", "Stalled").get("status") == "True")
    await cluster.eventually(lambda: "components recorded" in operator.logs())
    lines = [line for line in operator.logs().splitlines() if line.strip()]
    about = [line for line in lines if "logged" in line or "broken" in line]
    assert any("created Job logged-" in line for line in about)
    assert any("stalled: InvalidSplitPoints" in line for line in about)
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert len(records) >= len(lines) - 2  # everything but interpreter noise is JSON
        mine = [r for r in records if "logged" in r["message"] or "broken" in r["message"]]
        assert mine and all(r["object"]["namespace"] == "ml" for r in mine)
        assert {r["object"]["name"] for r in mine} >= {"logged", "broken"}
    else:
        assert all("[ml/logged" in line or "[ml/broken" in line for line in about)


async def test_log_level_is_honoured(cluster, gpt2_source):
    put_checkpoint(cluster, gpt2_source)
    cluster.claim("models")
    operator = await cluster.operator(log_level="WARNING")
    await cluster.apply(splitmodel("quiet"))
    await cluster.eventually(lambda: cluster.condition("quiet", "Ready").get("status") == "True")
    assert "created Job" not in operator.logs()
    assert "INFO" not in operator.logs()
