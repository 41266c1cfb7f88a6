"""Operator benchmark: 200 SplitModels at once, our operator against a minimal kopf operator.

Both run as processes against the same in-memory API server (the e2e harness's realistic
layer over kmock), in the same run, one after the other on a fresh store: the time from
creating 200 SplitModels to seeing 200 Jobs, and the operator's peak RSS. The minimal
operator only creates one Job per resource: it is the floor for "kopf + one Job".

    python benchmarks/operator_bench.py [--count 200] [--rounds 3]

Never a timed test: it prints numbers, it asserts nothing.
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


async def one_round(kind: str, count: int, directory: Path) -> tuple[float, int]:
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
        process.terminate()
        await process.wait()
        return elapsed, peak


def resource_of(api: RealisticKubernetes):  # the SplitModel resource as installed
    return next(ref for ref in api.schemas)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, int]]] = {"minimal": [], "splitlearn": []}
    with tempfile.TemporaryDirectory() as temp:
        for round_number in range(1, args.rounds + 1):
            for kind in results:
                directory = Path(temp) / f"{kind}-{round_number}"
                directory.mkdir()
                elapsed, peak = await one_round(kind, args.count, directory)
                results[kind].append((elapsed, peak))
                print(
                    f"  round {round_number} {kind:<10} {elapsed:6.2f} s to {args.count} Jobs, "
                    f"peak RSS {peak / 2**20:5.0f} MiB",
                    flush=True,
                )
    minimal = statistics.median(r[0] for r in results["minimal"])
    ours = statistics.median(r[0] for r in results["splitlearn"])
    print(f"\n{args.count} SplitModels, medians of {args.rounds}:")
    print("| operator | seconds to all Jobs | x minimal | peak RSS MiB |")
    print("|---|---|---|---|")
    for kind, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        print(
            f"| {kind} | {seconds:.2f} | {seconds / minimal:.2f} | "
            f"{statistics.median(r[1] for r in runs) / 2**20:.0f} |"
        )
    print(f"\nours / minimal = {ours / minimal:.2f} (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
