"""Operator benchmarks on the e2e harness's emulated API server (never timed tests).

`jobs` (default): N SplitModels at once, our operator against a minimal kopf operator
that only creates one Job per resource (the floor for "kopf + one Job"), as processes in the
same run on fresh stores: time until all N Jobs exist, the cost per object (that time / N),
and peak RSS, at each size given. A cost per object that grows with N means something scans
all objects per event; ours should stay flat and within 1.5x of the minimal one.

`lifecycle`: 200 SplitModels created, updated (a new split) and deleted (half with
deletionPolicy: Delete, so cleanup Jobs run), with the test kubelet really running every Job,
for two rounds against one operator process: time per phase, the most Jobs ever running at
once (must not exceed max_models), errors, stuck finalizers, and the operator's RSS after
each round (flat is the target).

    python benchmarks/operator_bench.py [jobs] [--sizes 200,1000,2000] [--rounds 3]
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "harness"))

from kmock import Server  # noqa: E402

from support.cluster import JOBS, NAMESPACE, NAMESPACES, PVCS, splitmodel  # noqa: E402
from support.kubernetes import RealisticKubernetes  # noqa: E402

SPLITMODELS_REF = __import__("kmock").resource("splitlearn.io", "v1alpha1", "splitmodels")
EVENTS_REF = __import__("kmock").resource("", "v1", "events")
from support.operator import OperatorProcess, free_port, write_kubeconfig  # noqa: E402
from support.repo import CRD  # noqa: E402

MINIMAL = """
import os, aiohttp, kopf

@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_kubeconfig(**kwargs)

@kopf.on.startup()
async def startup(settings, **_):
    settings.posting.enabled = False
    settings.persistence.finalizer = "splitlearn.io/finalizer"

@kopf.on.create("splitlearn.io", "v1alpha1", "splitmodels")
async def create(body, namespace, name, **_):
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": f"{name}-job", "namespace": namespace,
                        "labels": {"app.kubernetes.io/managed-by": "minimal"}},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "x", "command": ["true"]}]}}}}
    async with aiohttp.ClientSession() as session:
        url = os.environ["API"] + f"/apis/batch/v1/namespaces/{namespace}/jobs"
        async with session.post(url, json=job) as response:
            response.raise_for_status()
"""


async def one_round(kind: str, count: int, directory: Path) -> tuple[float, int, float]:
    """Seconds until every Job exists, the operator's peak RSS, and the CPU seconds it spent
    meanwhile (a figure that other load on the machine disturbs less than the wall time)."""
    api = RealisticKubernetes()
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
        kubeconfig = write_kubeconfig(directory / f"kubeconfig-{kind}", str(api.url))
        if kind == "splitlearn":
            # No throttling: max_models and max_workers above the count (the minimal
            # operator has no limits either); what remains is the operator's own cost.
            settings = {"max_models": 10 * count, "max_workers": count, "log_level": "WARNING"}
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
                env={**os.environ, "KUBECONFIG": str(kubeconfig), "API": str(api.url).rstrip("/")},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            while not any(
                r.url.path.startswith("/apis/splitlearn.io") and r.params.get("watch")
                for r in api._requests
            ):
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # both are watching; start the clock
        peak = 0
        cpu_before = cpu_seconds(process.pid)
        start = time.perf_counter()
        for index in range(count):
            api.put(
                resource_of(api),
                splitmodel(f"sm-{index:04d}"),
            )
        while sum(1 for key in api.store if key[0] == JOBS) < count:  # no copies: cheap
            peak = max(peak, rss(process.pid))
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - start
        peak = max(peak, rss(process.pid))
        cpu = cpu_seconds(process.pid) - cpu_before
        process.terminate()
        await process.wait()
        return elapsed, peak, cpu


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


async def compare(sizes: list[int], rounds: int) -> int:
    """Both operators at each size, interleaved round by round; medians per size."""
    kinds = ("minimal", "splitlearn")
    results: dict[tuple[str, int], list[tuple[float, int, float]]] = {}
    with tempfile.TemporaryDirectory() as temp:
        for count in sizes:
            for round_number in range(1, rounds + 1):
                for kind in kinds:
                    directory = Path(temp) / f"{kind}-{count}-{round_number}"
                    directory.mkdir()
                    elapsed, peak, cpu = await one_round(kind, count, directory)
                    results.setdefault((kind, count), []).append((elapsed, peak, cpu))
                    print(
                        f"  {count:>5} SplitModels, round {round_number}, {kind:<10} "
                        f"{elapsed:6.2f} s ({elapsed / count * 1000:5.2f} ms/object, CPU "
                        f"{cpu / count * 1000:5.2f} ms/object), peak RSS {peak / 2**20:4.0f} MiB",
                        flush=True,
                    )
    print(f"\nmedians of {rounds} rounds; wall: seconds until every Job exists, per object in ms;")
    print("CPU: the operator process's CPU time meanwhile, per object in ms")
    print(
        "| SplitModels | minimal wall s | minimal ms/obj | ours wall s | ours ms/obj "
        "| ours / minimal | CPU ms/obj minimal / ours (ratio) | peak RSS MiB minimal / ours |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for count in sizes:
        wall, peak, cpu = (
            [statistics.median(r[field] for r in results[(kind, count)]) for kind in kinds]
            for field in range(3)
        )
        cpu_ms = [seconds / count * 1000 for seconds in cpu]
        print(f"| {count} | {wall[0]:.2f} | {wall[0] / count * 1000:.2f} | {wall[1]:.2f} | "
              f"{wall[1] / count * 1000:.2f} | {wall[1] / wall[0]:.2f} | {cpu_ms[0]:.2f} / "
              f"{cpu_ms[1]:.2f} ({cpu_ms[1] / cpu_ms[0]:.2f}) | {peak[0] / 2**20:.0f} / "
              f"{peak[1] / 2**20:.0f} |")  # fmt: skip
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
    parser.add_argument("mode", nargs="?", choices=("jobs", "lifecycle"), default="jobs")
    parser.add_argument("--sizes", type=sizes_of, default=[200], help="jobs: SplitModel counts")
    parser.add_argument("--count", type=int, default=200, help="lifecycle: SplitModel count")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--max-models", type=int, default=5)
    args = parser.parse_args()
    if args.mode == "lifecycle":
        return await lifecycle(args.count, args.rounds or 2, args.max_models)
    return await compare(args.sizes, args.rounds or 3)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
