"""`python -m splitlearn_operator`: run the operator (kopf, standalone, one replica)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import kopf

from splitcore.config import ConfigError
from splitlearn_operator.api import Client
from splitlearn_operator.config import OperatorConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m splitlearn_operator",
        description="Run the splitlearn operator: reconcile SplitModels (splitlearn.io/v1alpha1) "
        "into split Jobs and record their components in status.",
        epilog="The configuration file is a splitcore ServerConfig (YAML); see the chart's "
        "values.yaml. Without --namespace the operator watches all namespaces.",
    )
    parser.add_argument("--config", metavar="FILE", help="ServerConfig YAML (default: defaults)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", metavar="NS", help="watch this namespace (repeat)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    return parser


class WaitingIsNotAnError(logging.Filter):
    """kopf logs every `TemporaryError` as ERROR; the operator raises it to wait (a queue
    slot, a claim being created), which is INFO for whoever reads the log."""

    WAITING = ("queued:", "waiting for", "conflict:")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.levelno == logging.ERROR and "failed temporarily: " in message:
            reason = message.split("failed temporarily: ", 1)[1]
            if reason.startswith(self.WAITING):
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging(config: OperatorConfig) -> None:
    """kopf's formatters: every line about a resource names its namespace/name."""
    json_lines = config.extras.log_format == "json"
    kopf.configure(
        log_format=kopf.LogFormat.JSON if json_lines else kopf.LogFormat.FULL,
        log_prefix=not json_lines,
        log_refkey="object",
    )
    logging.getLogger().setLevel(config.server.log_level.upper())
    for handler in logging.getLogger().handlers:
        handler.addFilter(WaitingIsNotAnError())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = OperatorConfig.load(args.config)
    except (ConfigError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging(config)
    namespaces = list(args.namespace) if args.namespace else None
    from splitlearn_operator import handlers  # noqa: F401  (registers the handlers)

    memo = kopf.Memo(config=config, client=Client(), namespaced=namespaces is not None)
    server = config.server
    kopf.run(
        standalone=True,
        clusterwide=namespaces is None,
        namespaces=namespaces or (),
        liveness_endpoint=f"http://{server.host}:{server.port}/healthz",
        memo=memo,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
