"""Operator benchmarks on the e2e harness's emulated API server (never timed tests).

`jobs` (default): N SplitModels at once, our operator against a minimal kopf operator
that only creates one Job per resource (the floor for "kopf + one Job"), as processes in the
same run on fresh stores: time until all N Jobs exist, the cost per object (that time / N),
and peak RSS, at each size given. A cost per object that grows with N means something scans
all objects per event; ours should stay flat and within 1.5x of the minimal one.

`serving`: N SplitModels with `spec.serving` whose split is already recorded (statuses made by
the operator's own transitions) are in the store before the operator starts, as after turning
serving on or a restart: time from the operator's first request for SplitModels (its initial
list; start-up before it is shown apart) until all N trunk Deployments exist, against a
minimal kopf operator that only creates one Deployment per resource (on resume and create),
same figures as `jobs`. Nothing runs the Deployments (they stay unready); no split Job may
appear. Also shown for ours, outside the ratio: how many `status.serving.endpoint` were
written by then, and after the run settles, each kind's API calls per SplitModel. The
operator's resync runs at its default period (30 s), not the e2e tests' 1 s.

`serving-on`: the same N recorded SplitModels with serving off; both operators start and go
idle, then serving is turned on for all N at once (`spec.serving.enabled: true`): time until
all N Deployments exist, the minimal one creating its Deployment on that update. This is the
serving path without kopf's start-up (which in `serving` holds every handler until its
indexes have seen every object).

`lifecycle`: 200 SplitModels created, updated (a new split) and deleted (half with
deletionPolicy: Delete, so cleanup Jobs run), with the test kubelet really running every Job,
for two rounds against one operator process: time per phase, the most Jobs ever running at
once (must not exceed max_models), errors, stuck finalizers, and the operator's RSS after
each round (flat is the target).

    python benchmarks/operator_bench.py [jobs] [--sizes 200,1000,2000] [--rounds 3]
    python benchmarks/operator_bench.py serving|serving-on [--sizes 200] [--rounds 3]
    python benchmarks/operator_bench.py lifecycle [--count 200] [--rounds 2] [--max-models 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "harness"))

import kmock  # noqa: E402
from kmock import Server  # noqa: E402

from support.cluster import JOBS, NAMESPACE, NAMESPACES, PVCS, splitmodel  # noqa: E402
from support.kubernetes import RealisticKubernetes, merge_patch  # noqa: E402
from support.operator import OperatorProcess, free_port, write_kubeconfig  # noqa: E402
from support.repo import CRD  # noqa: E402

SPLITMODELS_REF = kmock.resource("splitlearn.io", "v1alpha1", "splitmodels")
EVENTS_REF = kmock.resource("", "v1", "events")
DEPLOYMENTS_REF = kmock.resource("apps", "v1", "deployments")
#: What each mode waits for: one object of this resource per SplitModel.
TARGETS = {"jobs": JOBS, "serving": DEPLOYMENTS_REF, "serving-on": DEPLOYMENTS_REF}
SERVING_MODES = ("serving", "serving-on")
#: The spec of a served SplitModel beyond `splitmodel()`'s defaults (serving needs autoSave).
SERVED = {
    "splitStorageConfig": {"splitConfig": "2-10", "storagePath": "/models", "autoSave": True},
    "serving": {"enabled": True},
}

# The floor: kopf plus one object per SplitModel, posted with aiohttp; KIND (environment) is
# what it creates. kopf calls on.create for an object it never handled (no diff-base yet:
# all of them here, seeded ones included) and on.resume for one found at start-up that it
# handled before a restart, whose object may exist already (hence 409 allowed).
MINIMAL = """
import os, aiohttp, kopf

KIND = os.environ["KIND"]
POD = {"containers": [{"name": "c", "image": "x", "command": ["true"]}]}
OBJECTS = {  # kind: apiVersion, plural, name suffix, the least valid spec
    "Job": ("batch/v1", "jobs", "-job",
            lambda name: {"template": {"spec": {"restartPolicy": "Never", **POD}}}),
    "Deployment": ("apps/v1", "deployments", "-trunk",
                   lambda name: {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                                 "template": {"metadata": {"labels": {"app": name}},
                                              "spec": POD}}),
}

@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)

@kopf.on.startup()
async def startup(settings, **_):
    settings.posting.enabled = False
    settings.persistence.finalizer = "splitlearn.io/finalizer"

@kopf.on.resume("splitlearn.io", "v1alpha1", "splitmodels", id="resume")
@kopf.on.create("splitlearn.io", "v1alpha1", "splitmodels", id="create")
@kopf.on.update("splitlearn.io", "v1alpha1", "splitmodels", id="update", field="spec.serving")
async def create(namespace, name, spec, **_):
    if KIND == "Deployment" and not (spec.get("serving") or {}).get("enabled"):
        return
    api_version, plural, suffix, least_spec = OBJECTS[KIND]
    body = {"apiVersion": api_version, "kind": KIND,
            "metadata": {"name": name + suffix, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "minimal"}},
            "spec": least_spec(name)}
    async with aiohttp.ClientSession() as session:
        url = os.environ["API"] + f"/apis/{api_version}/namespaces/{namespace}/{plural}"
        async with session.post(url, json=body) as response:
            if response.status != 409:
                response.raise_for_status()
"""


@dataclass
class Round:
    """One operator process on one fresh store."""

    elapsed: float  # seconds until every target object exists
    peak: int  # peak RSS meanwhile, bytes
    cpu: float  # the process's CPU seconds meanwhile
    startup: float = 0.0  # serving: from the spawn to its first request for SplitModels
    endpoints: int = 0  # serving: SplitModels with status.serving.endpoint at `elapsed`
    endpoints_at: float | None = None  # serving: seconds until all had one (None: never)
    calls: Counter[str] = field(default_factory=Counter)  # API calls until settled


def operator_settings(mode: str, count: int) -> dict[str, Any]:
    # No throttling: max_models and max_workers above the count (the minimal operator has no
    # limits either); what remains is the operator's own cost.
    settings: dict[str, Any] = {
        "max_models": 10 * count, "max_workers": count, "log_level": "WARNING",
    }  # fmt: skip
    if mode in SERVING_MODES:
        from splitlearn_operator.config import OperatorExtras

        # What the seeded statuses are resolved against (`seed_served`); resync at its
        # default period, as in a cluster (the e2e tests' 1 s would re-read every unready
        # server each second, and never let the run settle).
        settings |= {"model_storage_dir": "/models", "auto_save_split_models": True,
                     "config": {"resync_seconds": OperatorExtras().resync_seconds}}  # fmt: skip
    return settings


def seed_served(
    api: RealisticKubernetes, count: int, settings: dict[str, Any], enabled: bool = True
) -> None:
    """`count` SplitModels whose split is recorded, served or not (`enabled`): created, then
    the status the operator itself writes when the split Job succeeded (reconciling, ready)."""
    from splitcore.config import ServerConfig
    from splitlearn_operator import builders
    from splitlearn_operator import status as states
    from splitlearn_operator.config import OperatorConfig
    from splitlearn_operator.spec import resolve_spec
    from splitlearn_operator.status import SplitModelStatus
    from support.status_fixtures import COMPONENTS, T0, T1

    config = OperatorConfig.from_server_config(ServerConfig.from_dict(settings))
    for index in range(count):
        name = f"sm-{index:04d}"
        served = {**SERVED, "serving": {"enabled": enabled}}
        stored = api.put(SPLITMODELS_REF, splitmodel(name, **served))  # defaults applied
        spec = resolve_spec(stored, config)
        assert spec.storage is not None and (spec.serving is not None) == enabled
        generation, spec_hash = stored["metadata"]["generation"], spec.spec_hash
        job = builders.job_name(name, spec_hash)
        running = states.reconciling(
            SplitModelStatus(), generation, job, spec_hash, spec.storage.name, T0
        )
        done = states.ready(running, generation, COMPONENTS, True, None, T1, None, spec_hash)
        written = {key: value for key, value in done.to_dict().items() if value is not None}
        api.write_status(SPLITMODELS_REF, NAMESPACE, name, written)  # as a merge patch leaves it


def check_recorded(api: RealisticKubernetes, config_path: Path) -> None:
    """The operator, with the config it ran with, sees every split as recorded (else the
    run measured split Jobs, not serving)."""
    from splitlearn_operator import status as states
    from splitlearn_operator.config import OperatorConfig
    from splitlearn_operator.spec import resolve_spec
    from splitlearn_operator.status import SplitModelStatus

    config = OperatorConfig.load(config_path)
    for body in api.objects(SPLITMODELS_REF, NAMESPACE):
        status = SplitModelStatus.from_dict(body.get("status"))
        if not states.split_recorded(status, resolve_spec(body, config).spec_hash):
            raise AssertionError(f"{body['metadata']['name']}: the seeded split is not recorded")


def call_of(request: Any) -> str:
    """`VERB resource[/subresource]` of one request to the emulator; LIST and WATCH apart."""
    what = request.resource.plural if request.resource is not None else request.url.path
    if request.subresource:
        what += f"/{request.subresource}"
    verb = str(request.method.value if hasattr(request.method, "value") else request.method)
    if verb == "GET" and request.name is None and request.resource is not None:
        verb = "WATCH" if request.params.get("watch") in ("true", "1", "True") else "LIST"
    return f"{verb} {what}"


async def first_splitmodels_request(api: RealisticKubernetes, pid: Any) -> tuple[float, float, int]:
    """When the operator first asks for SplitModels (its initial list): the clock's start,
    its CPU seconds then, and the index of that request. `pid()` is None until spawned."""
    seen = 0
    while True:
        requests = api._requests
        for index in range(seen, len(requests)):
            if requests[index].url.path.endswith("/splitmodels") and pid() is not None:
                return time.perf_counter(), cpu_seconds(pid()), index
        seen = len(requests)
        await asyncio.sleep(0.002)


def served_endpoints(api: RealisticKubernetes) -> int:
    return sum(
        1 for key, obj in api.store.items()  # no copies: cheap
        if key[0] == SPLITMODELS_REF and ((obj.get("status") or {}).get("serving") or {}).get(
            "endpoint")
    )  # fmt: skip


async def settle(api: RealisticKubernetes, quiet: float = 1.0, limit: float = 20.0) -> None:
    """Until no request but watches has come for `quiet` seconds (at most `limit`)."""
    deadline = time.perf_counter() + limit
    seen, last = len(api._requests), time.perf_counter()
    while time.perf_counter() < deadline and time.perf_counter() - last < quiet:
        await asyncio.sleep(0.05)
        new = api._requests[seen:]
        seen += len(new)
        if any(not call_of(request).startswith("WATCH") for request in new):
            last = time.perf_counter()


async def one_round(mode: str, kind: str, count: int, directory: Path) -> Round:
    """Seconds until every target object exists, the operator's peak RSS, and the CPU seconds
    it spent meanwhile (a figure that other load on the machine disturbs less than the wall
    time); in `serving` mode also what `Round` lists beyond."""
    api = RealisticKubernetes()
    target = TARGETS[mode]
    async with api, Server(api):
        api.install_crd(CRD)
        api.put(
            NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        )
        for claim in ("models", "models-src"):
            api.put(
                PVCS,
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {"name": claim, "namespace": NAMESPACE},
                    "spec": {},
                },
            )
        settings = operator_settings(mode, count)
        if mode in SERVING_MODES:
            seed_served(api, count, settings, enabled=mode == "serving")
        kubeconfig = write_kubeconfig(directory / f"kubeconfig-{kind}", str(api.url))
        process: asyncio.subprocess.Process | None = None
        operator: OperatorProcess | None = None

        def pid() -> int | None:
            started = process or (operator.process if operator else None)
            return started.pid if started is not None else None

        clock = (
            asyncio.create_task(first_splitmodels_request(api, pid)) if mode == "serving" else None
        )
        spawned = time.perf_counter()
        if kind == "splitlearn":
            operator = OperatorProcess(directory, kubeconfig, [NAMESPACE], settings)
            await operator.start()
            process = operator.process
        else:
            script = directory / "minimal.py"
            script.write_text(MINIMAL)
            port = free_port()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-P", "-m", "kopf", "run", "--standalone", "-n", NAMESPACE,
                "--liveness", f"http://127.0.0.1:{port}/healthz", "--quiet", str(script),
                env={**os.environ, "KUBECONFIG": str(kubeconfig),
                     "API": str(api.url).rstrip("/"), "KIND": api.kind_of(target)},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        assert process is not None
        if mode == "serving-on":  # both idle over the seeded SplitModels; then turn serving on
            await settle(api, quiet=2.0, limit=120.0)
            first = len(api._requests)
            cpu_before = cpu_seconds(process.pid)
            start = time.perf_counter()
            patch = {"spec": {"serving": {"enabled": True}}}
            for index in range(count):
                api._update(SPLITMODELS_REF, NAMESPACE, f"sm-{index:04d}",
                            lambda old: merge_patch(old, patch), None, None)  # fmt: skip
        elif clock is None:  # jobs
            while kind != "splitlearn" and not any(
                r.url.path.startswith("/apis/splitlearn.io") and r.params.get("watch")
                for r in api._requests
            ):
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # both are watching; start the clock
            first = len(api._requests)
            cpu_before = cpu_seconds(process.pid)
            start = time.perf_counter()
            for index in range(count):
                api.put(resource_of(api), splitmodel(f"sm-{index:04d}"))
        else:
            assert clock is not None
            start, cpu_before, first = await clock
        peak = 0
        while sum(1 for key in api.store if key[0] == target) < count:  # no copies: cheap
            peak = max(peak, rss(process.pid))
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
        peak = max(peak, rss(process.pid))
        cpu = cpu_seconds(process.pid) - cpu_before
        result = Round(elapsed, peak, cpu)
        if mode in SERVING_MODES:
            result.startup = start - spawned
            result.endpoints = served_endpoints(api)
            if kind == "splitlearn":
                deadline = time.perf_counter() + 60
                while served_endpoints(api) < count and time.perf_counter() < deadline:
                    await asyncio.sleep(0.02)
                if served_endpoints(api) == count:
                    result.endpoints_at = time.perf_counter() - start
            await settle(api)
            result.calls = Counter(call_of(request) for request in api._requests[first:])
        process.terminate()
        await process.wait()
        if mode in SERVING_MODES:
            if any(key[0] == JOBS for key in api.store):
                raise AssertionError(f"{kind}: split Jobs were created: not the serving path")
            if operator is not None:
                check_recorded(api, directory / "server_config.yaml")
        return result


def resource_of(api: RealisticKubernetes):  # the SplitModel resource as installed
    return next(ref for ref in api.schemas)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def lifecycle(count: int, rounds: int, max_models: int) -> int:
    """Create, update, delete `count` SplitModels per round against one operator."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from support.cluster import Cluster, put_checkpoint
    from support.kubelet import Kubelet

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        root.chmod(0o755)
        torch.manual_seed(0)
        config = GPT2Config(n_layer=12, n_embd=32, n_head=4, n_positions=64, vocab_size=96,
                            bos_token_id=0, eos_token_id=0)  # fmt: skip
        GPT2LMHeadModel(config).save_pretrained(root / "gpt2")
        api = RealisticKubernetes()
        async with api, Server(api):
            api.install_crd(CRD)
            api.put(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": NAMESPACE}})  # fmt: skip
            kubelet = Kubelet(api, root / "node")
            await kubelet.start()
            cluster = Cluster(api, kubelet, str(api.url), root)
            put_checkpoint(cluster, root / "gpt2")
            cluster.claim("models")
            operator = await cluster.operator(max_models=max_models, max_workers=50,
                                              log_level="WARNING")  # fmt: skip
            names = [f"sm-{index:04d}" for index in range(count)]
            rss_after: list[int] = []
            errors = 0
            try:
                for round_number in range(1, rounds + 1):
                    timings = {}
                    start = time.perf_counter()
                    for index, name in enumerate(names):
                        policy = "Delete" if index % 2 else "Retain"
                        code, _ = await cluster.apply(splitmodel(name, deletionPolicy=policy))
                        errors += code not in (200, 201)
                    await cluster.eventually(
                        lambda: all(cluster.condition(n, "Ready").get("status") == "True"
                                    for n in names), timeout=1800, what="all Ready",
                    )  # fmt: skip
                    timings["create"] = time.perf_counter() - start
                    start = time.perf_counter()
                    for name in names:
                        spec = cluster.splitmodel(name)["spec"]
                        spec["splitStorageConfig"]["splitConfig"] = "3-9"
                        errors += await cluster.patch_spec(name, spec) != 200
                    await cluster.eventually(
                        lambda: all(
                            cluster.condition(n, "Ready").get("status") == "True"
                            and cluster.splitmodel(n)["status"].get("observedGeneration") == 2
                            for n in names), timeout=1800, what="all updated",
                    )  # fmt: skip
                    timings["update"] = time.perf_counter() - start
                    start = time.perf_counter()
                    for name in names:
                        errors += await cluster.delete(name) != 200
                    await cluster.eventually(
                        lambda: not api.objects(SPLITMODELS_REF, NAMESPACE), timeout=1800,
                        what="all deleted (no stuck finalizer)",
                    )  # fmt: skip
                    timings["delete"] = time.perf_counter() - start
                    warnings = sum(1 for event in api.objects(EVENTS_REF, NAMESPACE)
                                   if event["type"] == "Warning")  # fmt: skip
                    rss_after.append(operator.rss_bytes())
                    phases = ", ".join(f"{phase} {sec:.1f} s" for phase, sec in timings.items())
                    print(f"  round {round_number}: {phases}; most Jobs at once "
                          f"{kubelet.max_parallel_seen} (max_models {max_models}); Warning "
                          f"Events {warnings}; API errors {errors}; operator RSS "
                          f"{rss_after[-1] / 2**20:.0f} MiB", flush=True)  # fmt: skip
            finally:
                await operator.stop()
                await kubelet.stop()
    growth = (rss_after[-1] - rss_after[0]) / 2**20 if len(rss_after) > 1 else 0.0
    print(f"\n{count} SplitModels x {rounds} rounds: most Jobs at once "
          f"{kubelet.max_parallel_seen} (max_models {max_models}); RSS growth between rounds "
          f"{growth:+.1f} MiB")  # fmt: skip
    return 0


async def compare(mode: str, sizes: list[int], rounds: int) -> int:
    """Both operators at each size, interleaved round by round; medians per size."""
    kinds = ("minimal", "splitlearn")
    what = "Job" if mode == "jobs" else "Deployment"
    results: dict[tuple[str, int], list[Round]] = {}
    with tempfile.TemporaryDirectory() as temp:
        for count in sizes:
            for round_number in range(1, rounds + 1):
                for kind in kinds:
                    directory = Path(temp) / f"{kind}-{count}-{round_number}"
                    directory.mkdir()
                    one = await one_round(mode, kind, count, directory)
                    results.setdefault((kind, count), []).append(one)
                    extra = ""
                    if mode in SERVING_MODES:
                        extra = f"; start-up {one.startup:.2f} s (not timed)"
                        if kind == "splitlearn":
                            after = "never" if one.endpoints_at is None else (
                                f"{one.endpoints_at:.2f} s")  # fmt: skip
                            extra += (f"; endpoints written by then {one.endpoints}/{count}, "
                                      f"all after {after}")  # fmt: skip
                    print(
                        f"  {count:>5} SplitModels, round {round_number}, {kind:<10} "
                        f"{one.elapsed:6.2f} s ({one.elapsed / count * 1000:5.2f} ms/object, CPU "
                        f"{one.cpu / count * 1000:5.2f} ms/object), peak RSS "
                        f"{one.peak / 2**20:4.0f} MiB{extra}",
                        flush=True,
                    )
    clock = {"jobs": "", "serving": " from the first request for SplitModels",
             "serving-on": " from turning serving on"}[mode]  # fmt: skip
    print(f"\nmedians of {rounds} rounds; wall: seconds{clock} until every {what} exists, per "
          "object in ms;")  # fmt: skip
    print("CPU: the operator process's CPU time meanwhile, per object in ms")
    print(
        "| SplitModels | minimal wall s | minimal ms/obj | ours wall s | ours ms/obj "
        "| ours / minimal | CPU ms/obj minimal / ours (ratio) | peak RSS MiB minimal / ours |"
        + (" ours: endpoints by then |" if mode in SERVING_MODES else "")
    )
    print("|---|---|---|---|---|---|---|---|" + ("---|" if mode in SERVING_MODES else ""))
    for count in sizes:
        wall, peak, cpu = (
            [statistics.median(getattr(r, name) for r in results[(kind, count)]) for kind in kinds]
            for name in ("elapsed", "peak", "cpu")
        )
        cpu_ms = [seconds / count * 1000 for seconds in cpu]
        endpoints = ""
        if mode in SERVING_MODES:
            written = statistics.median(r.endpoints for r in results[("splitlearn", count)])
            endpoints = f" {written:.0f}/{count} |"
        print(f"| {count} | {wall[0]:.2f} | {wall[0] / count * 1000:.2f} | {wall[1]:.2f} | "
              f"{wall[1] / count * 1000:.2f} | {wall[1] / wall[0]:.2f} | {cpu_ms[0]:.2f} / "
              f"{cpu_ms[1]:.2f} ({cpu_ms[1] / cpu_ms[0]:.2f}) | {peak[0] / 2**20:.0f} / "
              f"{peak[1] / 2**20:.0f} |{endpoints}")  # fmt: skip
    if mode in SERVING_MODES:
        for count in sizes:
            print(f"\nAPI calls per SplitModel at {count}, from the first request for "
                  "SplitModels until the run settled (last round; WATCH and LIST are per "
                  "process):")  # fmt: skip
            last = {kind: results[(kind, count)][-1].calls for kind in kinds}
            print("| call | minimal | ours |\n|---|---|---|")
            for call in sorted(set(last["minimal"]) | set(last["splitlearn"])):
                print(f"| {call} | {last['minimal'][call] / count:.2f} | "
                      f"{last['splitlearn'][call] / count:.2f} |")  # fmt: skip
            totals = [sum(last[kind].values()) / count for kind in kinds]
            print(f"| all | {totals[0]:.2f} | {totals[1]:.2f} |")
    print("\ntarget: ours / minimal <= 1.5 at every size, and a flat cost per object")
    return 0


def sizes_of(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected sizes such as 200,1000,2000, got {text!r}")
    return sizes


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "mode", nargs="?", choices=("jobs", *SERVING_MODES, "lifecycle"), default="jobs"
    )
    parser.add_argument(
        "--sizes", type=sizes_of, default=[200], help="jobs, serving: SplitModel counts"
    )
    parser.add_argument("--count", type=int, default=200, help="lifecycle: SplitModel count")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--max-models", type=int, default=5)
    args = parser.parse_args()
    if args.mode == "lifecycle":
        return await lifecycle(args.count, args.rounds or 2, args.max_models)
    return await compare(args.mode, args.sizes, args.rounds or 3)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
