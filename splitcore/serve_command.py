"""`splitcore serve --config server_config.yaml [--storage DIR]`: the command's arguments.

Importing this module costs nothing (no torch, no grpc), so the CLI can build its parser
cheaply; `run` imports the server. `python -m splitcore.serve_command` runs the same command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SUMMARY = "serve the trunks of a storage folder over gRPC (split learning and inference)"
EXAMPLE = "splitcore serve --config server_config.yaml --storage ./models"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add `--config` and `--storage` to the `serve` subcommand's parser."""
    parser.add_argument(
        "--config", required=True, type=Path, help="server_config.yaml (a ServerConfig)"
    )
    parser.add_argument(
        "--storage",
        type=Path,
        default=None,
        help="the storage folder to serve (default: the config's model_storage_dir)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT, drain the calls in flight, return 0 (2: bad config)."""
    from splitcore.serve import serve_until_stopped

    return serve_until_stopped(args.config, args.storage)
