"""`splitcore` command line: `split` (the Job's entrypoint), `fetch`, `verify`, `inspect`,
`clean`, `manifest`.

Exit codes: 0 success; 2 invalid input, which retrying cannot fix (the operator's Job does not
retry it); 1 anything else. On failure the result file gets `{"error": {"reason", "message"}}`
so the operator can report why without parsing logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import io
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from splitcore import __version__
from splitcore.inputs import clip, load_yaml, printable
from splitcore.points import SplitPointError, SplitPoints
from splitcore.result import ErrorDocument, ExitCode, Reason

EPILOG = """\
exit codes:
  0  success
  2  invalid input (bad split points, unreadable checkpoint, unwritable storage, ...);
     retrying will not help
  1  any other failure (for example a failed hub download); may be retried
"""


def _classify(error: BaseException) -> Reason:
    """The reason an exception stands for; its exit code follows from the reason."""
    from splitcore.atomic import OutputLockedError, StorageError
    from splitcore.checkpoint import CheckpointError, HubDownloadError
    from splitcore.config import ConfigError
    from splitcore.formats import SourceChangedError
    from splitcore.models import UnsupportedModelError
    from splitcore.sources import SourceError

    if isinstance(error, SourceError):
        return error.reason
    if isinstance(error, OutputLockedError):
        return Reason.OUTPUT_LOCKED
    if isinstance(error, SourceChangedError):
        return Reason.SOURCE_CHANGED
    if isinstance(error, VerificationFailed):
        return Reason.VERIFICATION_FAILED
    if isinstance(error, SplitPointError):
        return Reason.INVALID_SPLIT_POINTS
    if isinstance(error, CheckpointError):
        return Reason.INVALID_CHECKPOINT
    if isinstance(error, UnsupportedModelError):
        return Reason.UNSUPPORTED_MODEL
    if isinstance(error, ConfigError | ValueError):
        return Reason.INVALID_INPUT
    if isinstance(error, FileNotFoundError):
        return Reason.SOURCE_NOT_FOUND
    if isinstance(error, HubDownloadError):
        return Reason.HUB_DOWNLOAD_FAILED
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return Reason.STORAGE_FULL
    if isinstance(error, StorageError | PermissionError):
        return Reason.STORAGE_NOT_WRITABLE
    return Reason.INTERNAL_ERROR


class ResultFileError(ValueError):
    """`--result-file` names a file that cannot be written."""


def _write_result(result_file: str | None, document: Mapping[str, Any]) -> None:
    """The compact JSON result: to --result-file (the Job's termination message) or stdout."""
    text = json.dumps(document, separators=(",", ":"))
    if not result_file or result_file == "-":
        print(text, flush=True)
        return
    try:
        Path(result_file).write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        raise ResultFileError(
            f"cannot write the result file {result_file}: {error.strerror or error}"
        ) from None


def _one_line(message: str, limit: int = 3000) -> str:
    """An error message as one printable line (never a terminal escape sequence)."""
    return clip(printable(" ".join(message.split())), limit)


def _split(text: str) -> SplitPoints:
    """`--split`: any spelling `SplitPoints.parse` accepts, normalised (`02-10` is `2-10`)."""
    try:
        return SplitPoints.parse(text)
    except SplitPointError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class VerificationFailed(ValueError):
    """The saved components do not match their metadata or the source model."""


def cmd_split(args: argparse.Namespace) -> int:
    from splitcore.progress import Progress
    from splitcore.result import Verification
    from splitcore.split import split_checkpoint

    if args.verify and args.no_save:
        raise ValueError("--verify checks the written files; it cannot go with --no-save")
    if args.verify:
        from splitcore.verify import check_device

        check_device(args.device)  # before the split, not after its files are written
    model, model_name, fetched = _split_source(args)
    # The guide's block goes to stdout, unless stdout is for the JSON result (--json or
    # --result-file -): then every human line goes to stderr. --quiet silences them.
    human: IO[str] = io.StringIO() if args.quiet else sys.stdout
    if not args.quiet and (args.json or args.result_file == "-"):
        human = sys.stderr
    result = split_checkpoint(
        model,
        args.model_type,
        args.split.first,
        args.split.second,
        args.storage,
        model_name=model_name,
        file_format=args.format,
        save=not args.no_save,
        allow_pickle=args.allow_pickle,
        progress=None if args.quiet else Progress(),
        source_label=fetched[0] if fetched else None,
        out=human,
    )
    if fetched:
        result = dataclasses.replace(result, source=fetched[1])
    if args.no_save:
        print(f"Plan only (--no-save): nothing was written under {args.storage}", file=human)
    if args.verify:
        from splitcore.verify import print_report, verify_split

        verdict = verify_split(
            args.storage,
            result.model_name,
            result.split_config,
            source=str(model),
            file_format=args.format,
            device=args.device,
            allow_pickle=args.allow_pickle,
        )
        print_report(verdict, human)
        if not verdict.ok:
            raise VerificationFailed("; ".join(verdict.problems))
        result = dataclasses.replace(result, verification=Verification(True, verdict.max_abs_diff))
    _write_result(None if args.json else args.result_file, result.to_json())
    return ExitCode.OK


def _split_source(args: argparse.Namespace) -> tuple[str, str | None, Any]:
    """`--model`, or a `--hub` / `--s3` source fetched into the cache first: the folder to
    split, the model name, and (for a fetched source) its label and `SourceRevision`."""
    from splitcore import sources

    given = [flag for flag, value in (("--model", args.model), ("--hub", args.hub),
                                      ("--s3", args.s3)) if value is not None]  # fmt: skip
    if len(given) != 1:
        raise ValueError(f"give exactly one of --model, --hub, --s3 (got {len(given)})")
    if args.model is not None:
        return args.model, args.model_name, None
    cache = args.cache or str(Path(args.storage) / ".cache" / "sources")
    fetched = sources.fetch_from_args(args, cache)
    origin = f"hub:{args.hub}" if args.hub else args.s3.rstrip("/")
    path = f"/{args.model_path.strip('/')}" if args.model_path.strip("/") else ""
    label = f"{origin}@{fetched.revision}{path}"
    default_name = (args.model_path.strip("/") or args.hub or args.s3).rstrip("/").split("/")[-1]
    return str(fetched.directory), args.model_name or default_name, (label, fetched.source_revision)


def cmd_verify(args: argparse.Namespace) -> int:
    from splitcore.verify import print_report, verify_split

    verdict = verify_split(
        args.storage,
        args.model_name,
        args.split,
        source=args.source,
        file_format=args.format,
        device=args.device,
        tolerance=args.tolerance,
        allow_pickle=args.allow_pickle,
    )
    print_report(verdict)
    _write_result(args.result_file, verdict.to_json())
    return ExitCode.OK if verdict.ok else ExitCode.INVALID


def cmd_clean(args: argparse.Namespace) -> int:
    from splitcore.storage import remove_components, validate_model_name

    validate_model_name(args.model_name)
    removed = remove_components(args.storage, args.model_name, args.split, args.format)
    for path in removed:
        print(f"  removed {path}")
    print(f"Removed {len(removed)} files of {args.model_name} {args.split} from {args.storage}")
    _write_result(args.result_file, {"removed": [str(p) for p in removed]})
    return ExitCode.OK


def cmd_manifest(args: argparse.Namespace) -> int:
    """ModelConfig YAML -> SplitModel manifest, and back (the kind of the input decides)."""
    import yaml

    from splitcore.config import (
        ConfigError,
        ModelConfig,
        model_config_to_split_model,
        split_model_to_model_config,
    )
    from splitcore.models import check_model_type

    document = load_yaml(Path(args.file), ConfigError)
    if not isinstance(document, dict):
        raise ConfigError(f"{args.file}: expected a YAML mapping")
    split = (document.get("split_storage_config") or {}).get("split_config")
    if isinstance(split, int) and not isinstance(split, bool):
        raise ConfigError(
            f"{args.file}: split_storage_config.split_config: YAML read it as the number {split} "
            '(an unquoted 2:10 is base 60); write the split as a quoted string, e.g. "2-10"'
        )
    try:
        if document.get("kind") == "SplitModel":
            config = split_model_to_model_config(document)
            check_model_type(config.model_type)
            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return ExitCode.OK
        config = ModelConfig.from_dict(document)
    except ConfigError as error:
        raise ConfigError(f"{args.file}: {error}") from None
    check_model_type(config.model_type)
    storage = config.split_storage_config
    if storage is not None and storage.auto_save and not args.storage_claim:
        print(
            "warning: auto_save is on but no --storage-claim was given: the SplitModel gets the "
            "operator's default storage, or is refused if it has none",
            file=sys.stderr,
        )
    manifest = model_config_to_split_model(
        config,
        namespace=args.namespace,
        storage_claim=args.storage_claim,
        source_claim=args.source_claim,
    )
    print(yaml.safe_dump(manifest, sort_keys=False), end="")
    return ExitCode.OK


def _format_metadata(path: Path, metadata: dict[str, Any]) -> str:
    rows = [
        ("model_class", metadata.get("model_class")),
        ("component", metadata.get("component")),
        (
            "layers",
            f"[{metadata.get('start_layer')}, {metadata.get('end_layer')}) "
            f"({metadata.get('num_layers')} layers)",
        ),
        ("num_parameters", f"{metadata.get('num_parameters', 0):,}"),
        ("memory_mb", metadata.get("memory_mb")),
        ("dtype", metadata.get("dtype")),
        ("model_type", metadata.get("model_type")),
        ("split_config", metadata.get("split_config")),
        ("format", metadata.get("format")),
        ("sha256", metadata.get("sha256")),
        ("saved_at", metadata.get("saved_at")),
        ("source", metadata.get("source")),
    ]
    lines = [str(path), *(f"  {key:<15} {value}" for key, value in rows)]
    return "\n".join(printable(line) for line in lines)


def _metadata_files(typed: str) -> list[Path]:
    """The metadata files of a component or a storage folder; errors name the path as typed."""
    from splitcore.storage import COMPONENTS, METADATA_SUFFIX, StorageManager

    target = Path(typed)
    if target.is_dir():
        found = [
            path
            for component in COMPONENTS
            for path in sorted((target / component).glob(f"*{METADATA_SUFFIX}"))
        ]
        if not found:
            found = sorted(target.glob(f"*{METADATA_SUFFIX}"))
        if not found:
            raise FileNotFoundError(f"no *{METADATA_SUFFIX} files under {typed}")
        return found
    if not os.path.lexists(target):
        raise FileNotFoundError(f"{typed} does not exist")
    if target.name.endswith(METADATA_SUFFIX):
        return [target]
    return [StorageManager.get_model_metadata_path(target)]


def cmd_inspect(args: argparse.Namespace) -> int:
    from splitcore.storage import read_metadata

    files = _metadata_files(args.target)
    documents = [read_metadata(path) for path in files]
    if args.json:  # always a list, one document per component, whatever the target
        print(json.dumps(documents, indent=2))
    else:
        print("\n\n".join(_format_metadata(p, d) for p, d in zip(files, documents, strict=True)))
    return ExitCode.OK


def _add_split_location(parser: argparse.ArgumentParser) -> None:
    """Where one split's files are: storage folder, model name, split and format."""
    from splitcore.weights import FORMATS

    parser.add_argument("--storage", default="./models", metavar="DIR", help="storage folder")
    parser.add_argument("--model-name", required=True, metavar="NAME", help="model name in files")
    parser.add_argument("--split", required=True, type=_split, metavar="P1-P2", help="e.g. 2-10")
    parser.add_argument("--format", choices=FORMATS, default="pt", help="component file format")


def _add_result_file(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--result-file",
        metavar="FILE",
        help="write the compact JSON result here instead of stdout "
        "(the Job uses its termination-message path)",
    )


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and every option's default shown (unless it has none)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    example: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with its example (if any) and the exit codes."""
    epilog = f"example:\n  {example}\n\n{EPILOG}" if example else EPILOG
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=epilog,
        formatter_class=_HelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    from splitcore import serve_command, sources
    from splitcore.models import SUPPORTED_MODEL_TYPES
    from splitcore.weights import FORMATS

    parser = argparse.ArgumentParser(
        prog="splitcore",
        description="Split transformer checkpoints into bottom / trunk / top components.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"splitcore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    split = _add_command(
        commands,
        "split",
        "split a checkpoint into component files (the operator's Job runs this)",
        "Split a checkpoint into {storage}/{bottom,trunk,top}/{name}_{split}_{component}.pt "
        "plus *_metadata.json, streaming one component at a time without building the "
        "model. Layers are half-open: bottom [0,p1), trunk [p1,p2), top [p2,L).",
        "splitcore split --model-type gpt2 --model ./gpt2 --split 2-10 --storage ./models",
    )
    split.add_argument(
        "--model-type",
        default="auto",
        choices=SUPPORTED_MODEL_TYPES,
        help="model family; 'auto' reads config.json",
    )
    split.add_argument(
        "--model",
        metavar="PATH",
        help="checkpoint directory (config.json + *.safetensors) or a hub id (needs network); "
        "or give --hub / --s3 instead",
    )
    sources.add_source_arguments(split, required=False)
    split.add_argument(
        "--cache",
        metavar="DIR",
        help="download cache of --hub / --s3 (default: {storage}/.cache/sources)",
    )
    split.add_argument(
        "--split",
        required=True,
        type=_split,
        metavar="P1-P2",
        help="split points, e.g. 2-10: 0 < P1 < P2 < number of layers",
    )
    split.add_argument("--storage", default="./models", metavar="DIR", help="storage folder")
    split.add_argument(
        "--model-name",
        metavar="NAME",
        help="name used in file names (default: last component of --model)",
    )
    split.add_argument("--format", choices=FORMATS, default="pt", help="component file format")
    split.add_argument(
        "--no-save",
        action="store_true",
        help="plan only: report components (layers, parameters, bytes) without writing files",
    )
    split.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept pickled .bin checkpoints (loaded with weights_only=True)",
    )
    split.add_argument(
        "--quiet", action="store_true", help="no progress lines and no save report; only the result"
    )
    split.add_argument(
        "--json",
        action="store_true",
        help="only the JSON result on stdout (human lines go to stderr); same as --result-file -",
    )
    split.add_argument(
        "--verify",
        action="store_true",
        help="after writing, reload the files and run a probe through the chain and the full "
        "model (loads the whole model: needs its memory)",
    )
    split.add_argument(
        "--device", default="cpu", help="device for --verify's probe, e.g. cpu, cuda:0"
    )
    _add_result_file(split)
    split.set_defaults(handler=cmd_split)

    verify = _add_command(
        commands,
        "verify",
        "check saved components against their metadata (and the source model)",
        "Reload the three components, check each file's sha256 and metadata, and "
        "with --source run a fixed probe through the chain and the full model (float32). "
        "Exits 0 when everything matches, 2 on any mismatch.",
        "splitcore verify --storage ./models --model-name gpt2 --split 2-10 --source ./gpt2",
    )
    _add_split_location(verify)
    verify.add_argument("--source", metavar="CHECKPOINT", help="source checkpoint to compare with")
    verify.add_argument("--device", default="cpu", help="device for the probe")
    verify.add_argument("--tolerance", type=float, default=1e-5, help="max abs diff allowed")
    verify.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept a pickled .bin --source (loaded with weights_only=True)",
    )
    _add_result_file(verify)
    verify.set_defaults(handler=cmd_verify)

    clean = _add_command(
        commands,
        "clean",
        "remove the files of one split (the operator's cleanup Job runs this)",
        "Remove exactly the six files of one split: the three components and their "
        "metadata. Nothing else under the storage folder is touched.",
    )
    _add_split_location(clean)
    _add_result_file(clean)
    clean.set_defaults(handler=cmd_clean)

    manifest = _add_command(
        commands,
        "manifest",
        "convert a ModelConfig YAML to a SplitModel manifest, or back",
        "Print the SplitModel manifest for a ModelConfig YAML file (or, given a "
        "SplitModel manifest, the ModelConfig it stands for).",
        "splitcore manifest model_config.yaml --storage-claim models "
        "--source-claim checkpoints | kubectl apply -f -",
    )
    manifest.add_argument("file", metavar="FILE", help="model_config.yaml or a SplitModel")
    manifest.add_argument("--namespace", help="metadata.namespace of the SplitModel")
    manifest.add_argument("--storage-claim", help="spec.storage.claimName (the output volume)")
    manifest.add_argument("--source-claim", help="spec.source.claimName (the checkpoint volume)")
    manifest.set_defaults(handler=cmd_manifest, result_file=None)

    fetch = _add_command(
        commands,
        "fetch",
        "download a checkpoint from a hub repository or S3 into a cache folder",
        "Download config.json, the safetensors index and the weights it names (never pickles "
        "or code) into {cache}/hub/{owner}--{name}/{commit}/ or {cache}/s3/{bucket}/{prefix}/"
        "{etags digest}/, resuming partial downloads and checking each file's digest. The "
        "result names the folder, the resolved revision and each file's sha256. The hub token "
        "is read from $HF_TOKEN, S3 keys from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY.",
        "splitcore fetch --hub openai-community/gpt2 --cache ./cache",
    )
    sources.configure_parser(fetch)

    serve = _add_command(
        commands, "serve", serve_command.SUMMARY, serve_command.SUMMARY, serve_command.EXAMPLE
    )
    serve_command.configure_parser(serve)
    serve.set_defaults(handler=serve_command.run, result_file=None)

    inspect = _add_command(
        commands,
        "inspect",
        "print the metadata of a component file or of a storage folder",
        "Print the metadata of a component (its .pt, .safetensors or "
        "*_metadata.json) or of every component under a storage folder.",
        "splitcore inspect ./models --json | jq '.[] | {component, num_parameters}'",
    )
    inspect.add_argument("target", metavar="FILE_OR_DIR", help="component file or storage folder")
    inspect.add_argument(
        "--json", action="store_true", help="print the metadata as a JSON list (one per component)"
    )
    inspect.set_defaults(handler=cmd_inspect, result_file=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `splitcore inspect ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return ExitCode.OK
    except Exception as error:
        reason = _classify(error)
        message = _one_line(str(error))
        print(f"error ({reason}): {message}", file=sys.stderr, flush=True)
        if getattr(args, "result_file", None) and not isinstance(error, ResultFileError):
            try:
                _write_result(args.result_file, ErrorDocument(reason, message).to_json())
            except ResultFileError as unwritable:
                print(f"error ({reason}): {unwritable}", file=sys.stderr)
        if reason is Reason.INTERNAL_ERROR:
            import traceback

            traceback.print_exc()
        return reason.exit_code or ExitCode.FAILURE


if __name__ == "__main__":
    sys.exit(main())
