"""A split plan: which checkpoint tensors go into which component, checked before any write.

The plan is computed from tensor names and header shapes only, so both the library and the
streaming split (which never builds modules) share it, and bad input is refused before a
single byte reaches the storage volume.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitcore.checkpoint import Checkpoint, CheckpointError, resolve_checkpoint_dir
from splitcore.inputs import shown
from splitcore.models import check_model_type, get_adapter
from splitcore.models.family import FamilyAdapter, TensorLayout
from splitcore.points import SplitPoints, check_integers
from splitcore.storage import (
    COMPONENTS,
    Component,
    check_outputs_replaceable,
    check_storage_writable,
    output_paths,
    resolve_model_name,
)
from splitcore.weights import check_format


@dataclass
class SplitPlan:
    """For each component, its layer range and its tensors (canonical name -> source name)."""

    adapter: FamilyAdapter
    checkpoint: Checkpoint
    split: SplitPoints
    num_layers: int
    tensors: dict[Component, dict[str, str]] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.adapter.model_type

    @property
    def split_config(self) -> str:
        return str(self.split)

    @property
    def config(self) -> dict[str, Any]:
        return self.checkpoint.config

    def layer_range(self, component: Component) -> tuple[int, int]:
        return self.split.layer_ranges(self.num_layers)[COMPONENTS.index(component)]

    def canonical_names(self) -> set[str]:
        return {name for names in self.tensors.values() for name in names}

    @classmethod
    def build(
        cls, model_type: str, checkpoint: Checkpoint, split_point_1: int, split_point_2: int
    ) -> SplitPlan:
        adapter = get_adapter(model_type, checkpoint.config)
        num_layers = adapter.num_layers(checkpoint.config)
        split = SplitPoints.for_model(split_point_1, split_point_2, num_layers)
        plan = cls(adapter, checkpoint, split, num_layers)
        plan._assign_tensors()
        plan._check_structure()
        return plan

    def _assign_tensors(self) -> None:
        layout = self.adapter.layout
        tensors: dict[Component, dict[str, str]] = {c: {} for c in COMPONENTS}
        seen: set[str] = set()
        sources = {source: layout.canonical(source) for source in self.checkpoint.names}
        check_layer_names(layout, filter(None, sources.values()))
        for source, canonical in sources.items():
            if canonical is None:
                continue
            if canonical in seen:
                raise CheckpointError(f"the checkpoint holds {canonical} twice")
            seen.add(canonical)
            component = layout.component_of(canonical, self.split.first, self.split.second)
            tensors[component][canonical] = source
        if layout.head is not None and layout.head not in tensors["top"]:
            if not self.adapter.ties_head(self.config) or layout.tied_to is None:
                raise CheckpointError(
                    f"the checkpoint has no {layout.head} and its config does not tie it to "
                    "the input embeddings (tie_word_embeddings is false)"
                )
            if layout.tied_to not in tensors["bottom"]:
                raise CheckpointError(f"the checkpoint has no {layout.tied_to}")
            tensors["top"][layout.head] = tensors["bottom"][layout.tied_to]
        self.tensors = tensors

    def _check_structure(self) -> None:
        """The checkpoint's tensors against its config: see `check_structure`."""
        shapes = self.checkpoint.shapes()
        canonical = {
            name: shapes[source]
            for names in self.tensors.values()
            for name, source in names.items()
        }
        check_structure(self.adapter, self.config, self.num_layers, canonical)


Shapes = Mapping[str, tuple[tuple[int, ...], str]]


def check_layer_names(layout: TensorLayout, names: Iterable[str]) -> None:
    """Every numbered-layer name spells its index one way (`h.3.`, never `h.03.` or `h.x.`)."""
    prefix = layout.root + layout.layers
    for name in names:
        if name.startswith(prefix) and not _LAYER_INDEX.match(name, len(prefix)):
            raise CheckpointError(
                f"{shown(name)} is not a layer tensor name: a layer index is a plain number "
                f"after {prefix!r} (no sign, no leading zero) followed by '.'"
            )


_LAYER_INDEX = re.compile(r"(0|[1-9][0-9]{0,8})\.")


def check_structure(
    adapter: FamilyAdapter, config: Mapping[str, Any], num_layers: int, shapes: Shapes
) -> None:
    """One structural check for the library, the streaming split and `verify`.

    `shapes` maps canonical names to (shape, dtype). Every layer must be present and shaped
    like layer 0, every size must be one `config.json` describes, and the embeddings and final
    modules must be there. Counts from the config are compared with what the checkpoint
    holds, never used to allocate anything.
    """
    layout = adapter.layout
    check_layer_names(layout, shapes)
    per_layer: dict[int, dict[str, tuple[tuple[int, ...], str]]] = defaultdict(dict)
    seen_prefixes = set()
    for canonical, shape in shapes.items():
        index = layout.layer_index(canonical)
        if index is None:
            relative = canonical.removeprefix(layout.root)
            seen_prefixes.add(relative.split(".", 1)[0] + ".")
            continue
        suffix = canonical.split(f"{layout.layers}{index}.", 1)[1]
        per_layer[index][suffix] = shape
    present = sorted(per_layer)
    extra = [index for index in present if index >= num_layers]
    if extra:
        raise CheckpointError(
            f"the checkpoint has layer {extra[0]} but its config says {num_layers} layers"
        )
    if len(present) < num_layers:
        missing = next((i for i, layer in enumerate(present) if i != layer), len(present))
        raise CheckpointError(
            f"the checkpoint has no tensors for layer {missing} "
            f"(its config says {num_layers} layers)"
        )
    reference = per_layer[0]
    for index in present[1:]:
        layer = per_layer[index]
        for suffix in sorted(set(reference) | set(layer)):
            if reference.get(suffix) != layer.get(suffix):
                name = f"{layout.root}{layout.layers}{index}.{suffix}"
                raise CheckpointError(
                    f"{name}: {_describe(layer.get(suffix))} in the checkpoint, but layer 0 "
                    f"has {_describe(reference.get(suffix))}; the checkpoint does not match "
                    "its config"
                )
    for prefix in (*layout.embeddings, *layout.final):
        if prefix.split(".", 1)[0] + "." not in seen_prefixes:
            raise CheckpointError(f"the checkpoint has no {layout.root}{prefix}* tensors")
    _check_sizes(adapter, config, shapes)
    _check_vocabulary(adapter, config, shapes)


def _config_int(config: Mapping[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _check_sizes(adapter: FamilyAdapter, config: Mapping[str, Any], shapes: Shapes) -> None:
    """Every dimension of every tensor is a size `config.json` describes.

    Sizes come from the hidden size, the intermediate size and the attention heads; tensors
    outside the layers may also use the vocabulary, position and token-type counts. A config
    that disagrees with its tensors is refused here, before the library builds a module from
    it, and identically in the streaming split, which never builds one.
    """
    hidden = adapter.hidden_size(config)
    if hidden is None:
        return
    heads = _config_int(config, "num_attention_heads", "n_head")
    explicit_head_dim = _config_int(config, "head_dim")
    if heads is not None and (heads <= 0 or (explicit_head_dim is None and hidden % heads)):
        raise CheckpointError(
            f"config.json says hidden size {hidden} with {heads} attention heads: "
            "the hidden size must be a positive multiple of the number of heads"
        )
    intermediate = _config_int(config, "intermediate_size", "n_inner") or 4 * hidden
    sizes = {hidden, intermediate, 3 * hidden}
    if heads:
        head_dim = explicit_head_dim or hidden // heads
        kv_heads = _config_int(config, "num_key_value_heads") or heads
        sizes |= {head_dim, heads * head_dim, kv_heads * head_dim}
        sizes.add((heads + 2 * kv_heads) * head_dim)
    counts = {_config_int(config, key) for key in _COUNT_KEYS} - {None}
    layers = adapter.layout.root + adapter.layout.layers
    for name, (shape, _) in shapes.items():
        allowed = sizes if name.startswith(layers) else sizes | counts
        odd = [dim for dim in shape if dim not in allowed]
        if odd:
            raise CheckpointError(
                f"{shown(name)} has shape {list(shape)}, but config.json describes no size "
                f"{odd[0]} (hidden size {hidden}, intermediate size {intermediate}, "
                f"{heads} attention heads); the checkpoint does not match its config"
            )


#: config.json counts that size tensors outside the layers (embedding tables).
_COUNT_KEYS = ("vocab_size", "n_positions", "max_position_embeddings", "type_vocab_size")


def _check_vocabulary(adapter: FamilyAdapter, config: Mapping[str, Any], shapes: Shapes) -> None:
    """The input embedding and the head must both be `[vocab_size, hidden_size]`."""
    layout = adapter.layout
    vocab, hidden = config.get("vocab_size"), adapter.hidden_size(config)
    for canonical in filter(None, (layout.tied_to, layout.head)):
        if canonical not in shapes or vocab is None or hidden is None:
            continue
        if shapes[canonical][0] != (vocab, hidden):
            raise CheckpointError(
                f"{canonical} has shape {list(shapes[canonical][0])}, but config.json says "
                f"vocab_size={vocab}, hidden size={hidden}"
            )


def _describe(shape_and_dtype: Any) -> str:
    if shape_and_dtype is None:
        return "missing"
    shape, dtype = shape_and_dtype
    return f"shape {list(shape)} ({dtype})"


@dataclass(frozen=True)
class PreparedSplit:
    """A split checked end to end before any byte is written: the model name its files
    carry and the plan of which tensor goes where."""

    model_name: str
    plan: SplitPlan


def prepare_split(
    model_name_or_path: str | Path,
    model_type: str,
    split_point_1: int,
    split_point_2: int,
    *,
    model_name: str | None,
    file_format: str,
    allow_pickle: bool,
    storage_path: str | Path | None,
) -> PreparedSplit:
    """The checks the library and the streaming split share, cheapest first: arguments,
    then the checkpoint's structure, then (when saving) the storage folder."""
    check_integers(split_point_1, split_point_2)
    check_model_type(model_type)
    check_format(file_format)
    name = resolve_model_name(model_name, model_name_or_path)
    directory = resolve_checkpoint_dir(model_name_or_path, allow_pickle)
    plan = SplitPlan.build(
        model_type, Checkpoint.open(directory, allow_pickle), split_point_1, split_point_2
    )
    if storage_path is not None:
        check_outputs_replaceable(output_paths(storage_path, name, plan.split_config, file_format))
        check_storage_writable(storage_path)
    return PreparedSplit(name, plan)
