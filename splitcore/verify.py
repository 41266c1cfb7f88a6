"""`splitcore verify`: reload the three components and check them against their metadata.

Checks, in order: each file and its metadata exist; the file's sha256 is the one recorded;
the metadata agree with each other (one model, one split, contiguous layer ranges) and with
the file (parameters, bytes); the components load strictly into their classes. Given the
source checkpoint, a fixed probe then runs through the chain and through the full model
(both in float32), and the largest difference is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from splitcore.atomic import sha256_file
from splitcore.inputs import InputError, shown
from splitcore.points import SplitPoints
from splitcore.result import camel_document
from splitcore.storage import (
    COMPONENTS,
    Component,
    StorageManager,
    TensorSummary,
    load_weights,
    read_metadata,
    validate_model_name,
)

DEFAULT_TOLERANCE = 1e-5
PROBE_SHAPE = (2, 16)
PROBE_SEED = 1234


@dataclass
class ComponentCheck:
    name: Component
    path: str
    sha256: str | None = None
    sha256_ok: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyResult:
    """The verdict; `maxAbsDiff` is a string because Kubernetes status takes no floats."""

    ok: bool
    model_name: str
    split_config: str
    storage_path: str
    components: list[ComponentCheck]
    source: str | None = None
    max_abs_diff: str | None = None
    tolerance: str = f"{DEFAULT_TOLERANCE:g}"
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = camel_document(asdict(self))
        return document


def _check_files(
    storage: Path, model_name: str, split_config: str, file_format: str
) -> tuple[list[ComponentCheck], dict[Component, dict[str, Any]], dict[Component, Any]]:
    checks, metadata, weights = [], {}, {}
    for component in COMPONENTS:
        path = StorageManager.get_split_model_path(
            storage, model_name, component, split_config, file_format
        )
        check = ComponentCheck(component, str(path))
        checks.append(check)
        metadata_path = StorageManager.get_model_metadata_path(path)
        try:
            document = read_metadata(metadata_path)
            check.sha256 = sha256_file(path)
        except FileNotFoundError as missing:
            check.problems.append(f"{missing.filename} is missing")
            continue
        except InputError as error:
            check.problems.append(str(error))
            continue
        check.sha256_ok = check.sha256 == document.get("sha256")
        if not check.sha256_ok:
            check.problems.append(
                f"sha256 {check.sha256} differs from the metadata's {document.get('sha256')}"
            )
            continue
        try:
            tensors = load_weights(path)
        except InputError as error:
            check.problems.append(str(error))
            continue
        summary = TensorSummary.of(tensors)
        for key, actual in (
            ("component", component),
            ("split_config", split_config),
            ("num_parameters", summary.num_parameters),
            ("memory_bytes", summary.memory_bytes),
        ):
            if document.get(key) != actual:
                check.problems.append(
                    f"metadata {key}={shown(document.get(key))}, file has {actual!r}"
                )
        metadata[component], weights[component] = document, tensors
    return checks, metadata, weights


def _check_consistency(metadata: Mapping[Component, Mapping[str, Any]]) -> list[str]:
    """One model, contiguous half-open layer ranges that cover it."""
    if len(metadata) != len(COMPONENTS):
        return []
    bottom, trunk, top = (metadata[c] for c in COMPONENTS)
    problems = []
    if not bottom["config"] == trunk["config"] == top["config"]:
        problems.append("the components' metadata describe different model configs")
    ranges = [(m["start_layer"], m["end_layer"]) for m in (bottom, trunk, top)]
    split = SplitPoints.parse(bottom["split_config"])
    if ranges != list(split.layer_ranges(ranges[2][1])):
        problems.append(f"layer ranges {ranges} do not follow split {bottom['split_config']}")
    return problems


def _check_structure(
    metadata: Mapping[Component, Mapping[str, Any]],
    weights: Mapping[Component, Mapping[str, torch.Tensor]],
) -> list[str]:
    """The chain's tensors against the config its metadata carry: the very check a split
    makes of its checkpoint (`plan.check_structure`), so `verify` without `--source` refuses
    what the library and the streaming split refuse."""
    from splitcore.models import get_adapter
    from splitcore.plan import check_structure

    top = metadata["top"]
    shapes = {
        name: (tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        for tensors in weights.values()
        for name, tensor in tensors.items()
    }
    try:
        adapter = get_adapter(top["model_type"], top["config"])
        check_structure(adapter, top["config"], top["end_layer"], shapes)
    except ValueError as error:  # CheckpointError, UnsupportedModelError
        return [f"the components do not match their config: {error}"]
    return []


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before any work (and not with torch's
    raw error from deep inside the probe)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(
            f"device {shown(device)} is not a torch device (cpu, cuda:0, ...)"
        ) from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (parsed.index or 0) >= count:
            raise InputError(
                f"device {shown(device)} is not available: this machine has {count} CUDA "
                "device(s); use --device cpu"
            )
    elif parsed.type != "cpu":
        raise InputError(f"device {shown(device)} is not supported; use cpu or cuda[:N]")


def _as_tensors(output: Any) -> list[torch.Tensor]:
    """Comparable tensors of an output: logits for LMs, hidden and pooled states for encoders."""
    if isinstance(output, torch.Tensor):
        return [output]
    if getattr(output, "logits", None) is not None:
        return [output.logits]
    pooled = getattr(output, "pooler_output", None)
    return [output.last_hidden_state, *([pooled] if pooled is not None else [])]


def probe_chain(
    source: str,
    metadata: Mapping[Component, Mapping[str, Any]],
    weights: Mapping[Component, Mapping[str, torch.Tensor]],
    device: str = "cpu",
    allow_pickle: bool = False,
) -> float:
    """Run a fixed probe through the saved chain and the full source model; max abs diff."""
    import transformers

    from splitcore.checkpoint import Checkpoint, resolve_checkpoint_dir
    from splitcore.factory import hf_config, instantiate
    from splitcore.models import get_adapter
    from splitcore.models.base import SplitContext

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    directory = resolve_checkpoint_dir(source, allow_pickle)
    checkpoint = Checkpoint.open(directory, allow_pickle)
    adapter = get_adapter(metadata["bottom"]["model_type"], checkpoint.config)
    config = hf_config(checkpoint.config, "eager")
    available = {name for tensors in weights.values() for name in tensors}
    context = SplitContext(adapter.model_type, source, metadata["bottom"]["split_config"])
    chain = [
        instantiate(
            adapter.component_class(component),
            config,
            (metadata[component]["start_layer"], metadata[component]["end_layer"]),
            weights[component],
            context,
            available,
        )
        .float()
        .to(device)
        for component in COMPONENTS
    ]
    reference_class = (
        transformers.AutoModel if adapter.is_encoder else transformers.AutoModelForCausalLM
    )
    reference = reference_class.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager"
    )
    reference = reference.eval().to(device)
    generator = torch.Generator().manual_seed(PROBE_SEED)
    ids = torch.randint(0, int(config.vocab_size), PROBE_SHAPE, generator=generator)
    mask = torch.ones_like(ids)
    padding = slice(-3, None) if adapter.is_encoder else slice(0, 3)
    mask[0, padding] = 0
    ids, mask = ids.to(device), mask.to(device)
    bottom, trunk, top = chain
    with torch.no_grad():
        expected = _as_tensors(reference(ids, attention_mask=mask))
        actual = _as_tensors(top(trunk(bottom(ids, mask), mask), mask))
    keep = mask.bool()
    diffs = [(actual[0] - expected[0]).abs()[keep].max()]
    diffs += [(a - e).abs().max() for a, e in zip(actual[1:], expected[1:], strict=True)]
    return float(max(diffs).item())


def verify_split(
    storage_path: str | Path,
    model_name: str,
    split_config: str | SplitPoints,
    *,
    source: str | None = None,
    file_format: str = "pt",
    device: str = "cpu",
    tolerance: float = DEFAULT_TOLERANCE,
    allow_pickle: bool = False,
) -> VerifyResult:
    """Check the three saved components of `model_name` / `split_config`; see the module doc.

    `allow_pickle` opts in to a pickled `.bin` source, as it does for the split itself.
    """
    validate_model_name(model_name)
    if source is not None:
        check_device(device)
    split_config = str(SplitPoints.parse(split_config))
    checks, metadata, weights = _check_files(
        Path(storage_path), model_name, split_config, file_format
    )
    problems = [f"{c.name}: {p}" for c in checks for p in c.problems]
    problems += _check_consistency(metadata)
    if not problems:
        problems += _check_structure(metadata, weights)
    result = VerifyResult(
        ok=False,
        model_name=model_name,
        split_config=split_config,
        storage_path=str(storage_path),
        components=checks,
        source=source,
        tolerance=f"{tolerance:g}",
        problems=problems,
    )
    if source is not None and not problems:
        difference = probe_chain(source, metadata, weights, device, allow_pickle)
        result.max_abs_diff = f"{difference:.3g}"
        if not difference <= tolerance:
            problems.append(
                f"chain and full model differ by {difference:.3g} (tolerance {tolerance:g})"
            )
    result.ok = not problems
    return result


def print_report(result: VerifyResult, out: IO[str] | None = None) -> None:
    """The human-readable verdict."""
    print(f"Verifying {result.model_name} {result.split_config} in {result.storage_path}", file=out)
    for check in result.components:
        status = "sha256 ok" if check.sha256_ok else "FAILED"
        print(f"  {check.name:<6} {check.path}  {status}", file=out)
    if result.max_abs_diff is not None:
        print(
            f"  chain vs full model ({result.source}): max abs diff {result.max_abs_diff} "
            f"(tolerance {result.tolerance})",
            file=out,
        )
    for problem in result.problems:
        print(f"  problem: {problem}", file=out)
    print(f"Verdict: {'OK' if result.ok else 'FAILED'}", file=out, flush=True)
