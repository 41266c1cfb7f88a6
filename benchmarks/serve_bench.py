"""Serving benchmark: the chain in one process against the trunk served on loopback, side by side.

  (a) local   bottom, trunk and top in this process
  (b) remote  bottom and top in this process, the trunk in a `splitcore serve` process on
              127.0.0.1, both processes with the same torch thread count

Random weights, no download. Reported, never asserted (medians of a few rounds):

  forward     a batch of 8 x 128 tokens through the chain, no gradients: b/a (target <= 1.25)
  generation  greedy, batch 1, KV caches on both sides: tokens/s of b / of a (target >= 0.8)
              (wall time, and CPU seconds of both processes, steadier on a busy machine)
  server RSS  the serving process's RSS (and peak) minus the trunk's bytes (target <= 300 MiB)
  wire        the cost of encoding and decoding one 8 x 128 hidden-state tensor

    python benchmarks/serve_bench.py                       # GPT-2-small and ~1B Llama shapes
    python benchmarks/serve_bench.py --models gpt2-small   # one of them
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

MODELS = {
    # GPT-2 small: 12 layers, hidden 768, tied head; 124M parameters, fp32.
    "gpt2-small": {
        "config": {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12,
                   "n_positions": 1024, "vocab_size": 50257},
        "split": (2, 10),
        "forward_rounds": 5,
        "new_tokens": 32,
    },
    # A ~1B Llama: 18 layers, hidden 2048, grouped-query attention (TinyLlama's widths); fp32.
    "llama-1b": {
        "config": {"model_type": "llama", "num_hidden_layers": 18, "hidden_size": 2048,
                   "intermediate_size": 5632, "num_attention_heads": 32,
                   "num_key_value_heads": 4, "vocab_size": 32000,
                   "max_position_embeddings": 2048},
        "split": (2, 16),
        "forward_rounds": 2,
        "new_tokens": 16,
    },
}  # fmt: skip
BATCH, TOKENS, PROMPT = 8, 128, 32


def build_storage(name: str, folder: Path) -> Path:
    """A random-weight checkpoint of `name`, split into `folder/models` in the guide's layout."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from splitcore import ModelFactory

    spec = MODELS[name]
    options = dict(spec["config"])
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    config.eos_token_id = None  # generate every requested token
    torch.manual_seed(0)
    checkpoint = folder / name
    AutoModelForCausalLM.from_config(config).save_pretrained(checkpoint)
    storage = folder / "models"
    ModelFactory.create_split_models(
        "auto", str(checkpoint), *spec["split"], storage_path=str(storage), auto_save=True
    )
    return storage


class LocalTrunkSteps:
    """The local trunk behind `generate`'s step interface, with its own KV cache."""

    def __init__(self, trunk) -> None:
        self.trunk = trunk
        self.cache = None

    def step(self, hidden, attention_mask, position_ids, *, reset_cache=False):
        if reset_cache or self.cache is None:
            self.cache = self.trunk.new_cache()
        return self.trunk(hidden, attention_mask, position_ids, self.cache)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(storage: Path, threads: int, folder: Path) -> tuple[subprocess.Popen, str]:
    from splitcore import ServerConfig

    port = free_port()
    config = folder / "server_config.yaml"
    ServerConfig(
        host="127.0.0.1", port=port, enable_monitoring=False, log_level="WARNING",
        model_storage_dir=str(storage), config={"max_message_bytes": 1024 * 2**20},
    ).to_yaml(config)  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen(
        [sys.executable, "-m", "splitcore", "serve", "--config", str(config)], env=environment
    )
    return server, f"127.0.0.1:{port}"


def wait_ready(endpoint: str) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(endpoint) as channel:
        request = health_pb2.HealthCheckRequest(service="")
        health_pb2_grpc.HealthStub(channel).Check(request, wait_for_ready=True, timeout=600)


def rss_bytes(pid: int, key: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak) of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} for process {pid}")


def timed(function, rounds: int) -> float:
    """Median seconds of `rounds` calls after one warm-up call."""
    function()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def side_by_side(local, remote, rounds: int, pids: list[int]) -> dict[str, float]:
    """Medians of `local` and `remote`, alternating: wall seconds, and CPU seconds of `pids`
    (this process and the server), which a busy machine disturbs less than wall time."""
    local(), remote()
    samples: dict[str, list[float]] = {"local": [], "remote": [], "local_cpu": [], "remote_cpu": []}
    for _ in range(rounds):
        for name, function in (("local", local), ("remote", remote)):
            cpu, started = cpu_seconds(pids), time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - started)
            samples[f"{name}_cpu"].append(cpu_seconds(pids) - cpu)
    return {name: statistics.median(values) for name, values in samples.items()}


def wire_seconds(hidden_size: int) -> tuple[float, float]:
    """Median seconds to encode one [8, 128, H] float32 tensor, and to decode it back."""
    from splitcore.proto import trunk_pb2
    from splitcore.proto.tensors import FLOAT_DTYPES, decode, encode

    tensor = torch.randn(BATCH, TOKENS, hidden_size)
    wire = encode(tensor).SerializeToString()
    encode_time = timed(lambda: encode(tensor).SerializeToString(), 20)
    decode_time = timed(lambda: decode(trunk_pb2.Tensor.FromString(wire), "h", FLOAT_DTYPES), 20)
    return encode_time, decode_time


def bench(name: str, threads: int) -> dict[str, float]:
    from splitcore import load_split
    from splitcore.remote import RemoteTrunk, generate

    spec = MODELS[name]
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as temp:
        folder = Path(temp)
        print(f"[{name}] building a random checkpoint and its split ...", flush=True)
        storage = build_storage(name, folder)
        split = "{}-{}".format(*spec["split"])
        bottom, trunk, top = load_split(storage, name, split)
        trunk_bytes = next((storage / "trunk").glob("*_trunk.pt")).stat().st_size
        vocab = int(top.config.vocab_size)
        ids = torch.randint(0, vocab, (BATCH, TOKENS), generator=torch.Generator().manual_seed(1))
        prompt = ids[:1, :PROMPT]
        new_tokens = spec["new_tokens"]
        server, endpoint = start_server(storage, threads, folder)
        try:
            wait_ready(endpoint)
            remote = RemoteTrunk(endpoint, name, split)
            local_steps = LocalTrunkSteps(trunk)
            with torch.no_grad():
                print(f"[{name}] forward {BATCH}x{TOKENS} ...", flush=True)
                pids = [os.getpid(), server.pid]
                forward = side_by_side(
                    lambda: top(trunk(bottom(ids))),
                    lambda: top(remote(bottom(ids))),
                    spec["forward_rounds"],
                    pids,
                )
                print(f"[{name}] generation of {new_tokens} tokens ...", flush=True)
                generation = side_by_side(
                    lambda: generate(bottom, local_steps, top, prompt, new_tokens),
                    lambda: generate(bottom, remote, top, prompt, new_tokens),
                    3,
                    pids,
                )
                same = torch.equal(
                    generate(bottom, local_steps, top, prompt, new_tokens),
                    generate(bottom, remote, top, prompt, new_tokens),
                )
            remote.close()
            server_rss = rss_bytes(server.pid, "VmRSS")
            server_peak = rss_bytes(server.pid, "VmHWM")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
        encode_time, decode_time = wire_seconds(int(top.config.hidden_size))
    return {
        "forward": forward,
        "generation": generation,
        "new_tokens": new_tokens,
        "same_tokens": same,
        "server_rss_mib": server_rss / 2**20,
        "server_peak_rss_mib": server_peak / 2**20,
        "trunk_mib": trunk_bytes / 2**20,
        "encode_ms": encode_time * 1e3,
        "decode_ms": decode_time * 1e3,
        "hidden_mib": BATCH * TOKENS * int(top.config.hidden_size) * 4 / 2**20,
    }


def report(results: dict[str, dict], threads: int) -> None:
    print(f"\n{threads} torch threads per process; medians; CPU = this process + the server\n")
    print("| model | forward 8x128 (a) local | (b) remote | b/a wall | b/a CPU "
          "| generation tok/s (a) | (b) | b/a wall | a/b CPU per token "
          "| server RSS - trunk (peak) | wire encode / decode |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        forward, generation, tokens = r["forward"], r["generation"], r["new_tokens"]
        print(
            f"| {name} | {forward['local']:.3f} s | {forward['remote']:.3f} s "
            f"| {forward['remote'] / forward['local']:.3f} "
            f"| {forward['remote_cpu'] / forward['local_cpu']:.3f} "
            f"| {tokens / generation['local']:.1f} | {tokens / generation['remote']:.1f} "
            f"| {generation['local'] / generation['remote']:.3f} "
            f"| {generation['local_cpu'] / generation['remote_cpu']:.3f} "
            f"| {r['server_rss_mib'] - r['trunk_mib']:.0f} MiB "
            f"({r['server_peak_rss_mib'] - r['trunk_mib']:.0f} MiB; "
            f"trunk {r['trunk_mib']:.0f} MiB) "
            f"| {r['encode_ms']:.2f} / {r['decode_ms']:.3f} ms for {r['hidden_mib']:.1f} MiB |"
        )
    for name, r in results.items():
        print(f"{name}: greedy tokens local == remote: {r['same_tokens']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: bench(name, args.threads) for name in args.models}
    report(results, args.threads)


if __name__ == "__main__":
    main()
