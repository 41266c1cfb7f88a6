"""Split benchmark: our streaming split against a plain copy of the same bytes, side by side.

Each variant runs in a fresh process (imports included), alternating, for several rounds;
the report gives medians of wall time, peak RSS and peak private memory (RssAnon), and the
ratios the project tracks:

  (a) floor  copy the checkpoint's safetensors bytes to the output disk, fsync
  (b) split  `splitcore split` (streaming, atomic, fsync)
  (c) naive  `from_pretrained`, `copy.deepcopy` of the submodules, `torch.save`, fsync

Targets (see README): b/a <= 1.5 and b's peak RSS <= largest component + 512 MiB on
GPT-2 medium; b/a <= 1.5 and b's RssAnon <= 1 GiB on a Llama-2-7B-shaped bf16 checkpoint.
Never a timed test: this reports numbers, it asserts nothing.

    python benchmarks/split_bench.py                   # GPT-2 medium, fp32, 1.42 GB
    python benchmarks/split_bench.py --model llama-7b  # 13.5 GB bf16 in 7 shards (~15 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MODELS = {
    # GPT-2 medium: 24 layers, hidden 1024, tied head; 355M parameters, fp32.
    "gpt2-medium": {
        "config": {
            "model_type": "gpt2",
            "n_layer": 24,
            "n_embd": 1024,
            "n_head": 16,
            "n_positions": 1024,
            "vocab_size": 50257,
            "dtype": "float32",
        },
        "dtype": "float32",
        "split": "2-22",
        "shard_bytes": 10 * 2**30,
    },
    # Llama-2-7B's shapes: 32 layers, hidden 4096, untied head; 6.7B parameters, bf16.
    "llama-7b": {
        "config": {
            "model_type": "llama",
            "num_hidden_layers": 32,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 32000,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False,
            "dtype": "bfloat16",
        },
        "dtype": "bfloat16",
        "split": "2-30",
        "shard_bytes": 2 * 10**9,
    },
}

FLOOR = """
import os, shutil, sys
from pathlib import Path
source, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for path in sorted(source.glob("*.safetensors")):
    target = out / path.name
    shutil.copyfile(path, target)
    fd = os.open(target, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
fd = os.open(out, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
"""

NAIVE = """
import copy, os, sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
source, out, split = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
p1, p2 = map(int, split.split("-"))
model = AutoModelForCausalLM.from_pretrained(source)
base = model.base_model
layers = base.h if hasattr(base, "h") else base.layers
parts = {
    "bottom": [*(m for n, m in base.named_children() if n in ("wte", "wpe", "embed_tokens")),
               *layers[:p1]],
    "trunk": list(layers[p1:p2]),
    "top": [*layers[p2:], *(m for n, m in base.named_children() if n in ("ln_f", "norm")),
            model.lm_head],
}
for name, modules in parts.items():
    module = torch.nn.ModuleList(copy.deepcopy(m) for m in modules)
    (out / name).mkdir(parents=True, exist_ok=True)
    path = out / name / f"{name}.pt"
    with open(path, "wb") as handle:
        torch.save(module.state_dict(), handle)
        handle.flush()
        os.fsync(handle.fileno())
    del module
"""


@dataclass
class Run:
    seconds: float
    peak_rss: int
    peak_anon: int


def _sample_memory(pid: int, peaks: dict[str, int], done: threading.Event) -> None:
    while not done.is_set():
        try:
            with Path(f"/proc/{pid}/status").open() as status:
                for line in status:
                    if line.startswith(("VmHWM:", "RssAnon:")):
                        key, value = line.split()[:2]
                        peaks[key] = max(peaks.get(key, 0), int(value) * 1024)
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.01)


def measure(command: list[str]) -> Run:
    """Wall time, peak RSS (VmHWM) and peak RssAnon (sampled every 10 ms) of a fresh process.

    `ru_maxrss` is useless here: a child inherits its parent's high-water mark at fork.
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[str, int] = {}
    done = threading.Event()
    sampler = threading.Thread(target=_sample_memory, args=(process.pid, peaks, done))
    sampler.start()
    _, status = os.waitpid(process.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if status != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()[-2000:]}")
    return Run(seconds, peaks.get("VmHWM:", 0), peaks.get("RssAnon:", 0))


def settle(seconds: float = 3.0) -> None:
    """Let the disk finish the previous variant's writeback and discards before the next one
    starts, so no variant pays for another's deleted output."""
    subprocess.run(["sync"], check=True)
    time.sleep(seconds)


def build_checkpoint(name: str, directory: Path) -> Path:
    """Random weights with the model's exact shapes, written shard by shard (never whole)."""
    if (directory / "config.json").is_file():
        return directory
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = MODELS[name]
    options = dict(spec["config"])
    config = AutoConfig.for_model(options.pop("model_type"), **options)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    dtype = getattr(torch, spec["dtype"])
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shards: list[list[str]] = [[]]
    size = 0
    for key, shape in shapes.items():
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        if shards[-1] and size + nbytes > spec["shard_bytes"]:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    generator = torch.Generator().manual_seed(0)
    weight_map = {}
    for number, keys in enumerate(shards, 1):
        file_name = (
            f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            if len(shards) > 1
            else "model.safetensors"
        )
        tensors = {k: (torch.randn(shapes[k], generator=generator) * 0.02).to(dtype) for k in keys}
        save_file(tensors, partial / file_name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, file_name))
        print(
            f"  wrote {file_name} ({sum(t.nbytes for t in tensors.values()) / 1e9:.2f} GB)",
            flush=True,
        )
        del tensors
    if len(shards) > 1:
        total = sum(torch.Size(s).numel() * dtype.itemsize for s in shapes.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (partial / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(partial)
    partial.rename(directory)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="gpt2-medium")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(
            os.environ.get("SPLITCORE_BENCH_DIR", Path.home() / ".cache" / "splitcore-bench")
        ),
        help="where the generated checkpoint is kept between runs (not the repo)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder on the disk to measure (default: a temp folder)",
    )
    parser.add_argument(
        "--skip-naive",
        action="store_true",
        help="leave out (c); it needs the whole model's memory several times",
    )
    parser.add_argument("--format", choices=("pt", "safetensors"), default="pt")
    args = parser.parse_args()

    spec = MODELS[args.model]
    print(f"Checkpoint: {args.model} (random weights) in {args.cache}", flush=True)
    checkpoint = build_checkpoint(args.model, args.cache / args.model)
    source_bytes = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    out_root = Path(tempfile.mkdtemp(prefix="split-bench-", dir=args.out))
    splitcore = shutil.which("splitcore", path=str(Path(sys.executable).parent)) or "splitcore"
    variants = {
        "floor": lambda out: [sys.executable, "-P", "-c", FLOOR, str(checkpoint), str(out)],
        "split": lambda out: [
            splitcore,
            "split",
            "--model",
            str(checkpoint),
            "--split",
            spec["split"],
            "--storage",
            str(out),
            "--format",
            args.format,
        ],
        "naive": lambda out: [
            sys.executable,
            "-P",
            "-c",
            NAIVE,
            str(checkpoint),
            str(out),
            spec["split"],
        ],
    }
    if args.skip_naive:
        variants.pop("naive")
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    largest_component = 0
    try:
        for round_number in range(1, args.rounds + 1):
            for name, command in variants.items():
                out = out_root / name
                settle()
                run = measure(command(out))
                runs[name].append(run)
                if name == "split":
                    largest_component = max(p.stat().st_size for p in out.rglob(f"*.{args.format}"))
                print(
                    f"  round {round_number} {name:<5} {run.seconds:7.2f} s  "
                    f"peak RSS {run.peak_rss / 2**20:7.0f} MiB  "
                    f"RssAnon {run.peak_anon / 2**20:7.0f} MiB",
                    flush=True,
                )
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)

    def median(name: str, field: str) -> float:
        return statistics.median(getattr(run, field) for run in runs[name])

    floor = median("floor", "seconds")
    print(
        f"\n{args.model}: {source_bytes / 1e9:.2f} GB source, largest component "
        f"{largest_component / 2**20:.0f} MiB, medians of {args.rounds}, format {args.format}"
    )
    print("| variant | wall s | x floor | peak RSS MiB | peak RssAnon MiB |")
    print("|---|---|---|---|---|")
    for name in runs:
        seconds = median(name, "seconds")
        print(
            f"| {name} | {seconds:.2f} | {seconds / floor:.2f} | "
            f"{median(name, 'peak_rss') / 2**20:.0f} | {median(name, 'peak_anon') / 2**20:.0f} |"
        )
    split_rss = median("split", "peak_rss")
    print(f"\nb/a = {median('split', 'seconds') / floor:.2f} (target <= 1.5)")
    if "naive" in runs:
        print(f"c/a = {median('naive', 'seconds') / floor:.2f}")
    print(
        f"split peak RSS {split_rss / 2**20:.0f} MiB vs largest component "
        f"{largest_component / 2**20:.0f} MiB (target: at most component + 512 MiB)"
    )
    print(f"split peak RssAnon = {median('split', 'peak_anon') / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
