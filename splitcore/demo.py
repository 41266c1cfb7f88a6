"""Build a small GPT-2 checkpoint with random weights for `make demo` (no download)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def build_demo_checkpoint(directory: Path, seed: int = 0) -> Path:
    """GPT-2's vocabulary and layer count, narrower layers, random weights, safetensors."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=12, n_embd=256, n_head=8, n_positions=1024)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m splitcore.demo",
        description="Write a small GPT-2 checkpoint with RANDOM weights (nothing is downloaded).",
    )
    parser.add_argument("directory", type=Path, help="where to write config.json + safetensors")
    args = parser.parse_args(argv)
    if (args.directory / "config.json").is_file():
        print(f"Demo checkpoint already at {args.directory} (random weights, GPT-2 layout)")
        return 0
    print(
        f"Building a small GPT-2 checkpoint with RANDOM weights at {args.directory} "
        "(12 layers, hidden 256, GPT-2 vocabulary; not pretrained, nothing downloaded)..."
    )
    build_demo_checkpoint(args.directory)
    print("Done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
