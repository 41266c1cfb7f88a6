"""A split plan: which checkpoint tensors go into which component, checked before any write.

The plan is computed from tensor names and header shapes only, so both the library and the
streaming split (which never builds modules) share it, and bad input is refused before a
single byte reaches the storage volume.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitcore.checkpoint import Checkpoint, CheckpointError, resolve_checkpoint_dir
from splitcore.models import check_model_type, get_adapter
from splitcore.models.family import FamilyAdapter
from splitcore.points import SplitPoints, check_integers
from splitcore.storage import (
    COMPONENTS,
    Component,
    check_storage_writable,
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
        for source in self.checkpoint.names:
            canonical = layout.canonical(source)
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
        """Every layer present and shaped like the others; embeddings and final present."""
        layout = self.adapter.layout
        shapes = self.checkpoint.shapes()
        per_layer: dict[int, dict[str, Any]] = defaultdict(dict)
        seen_prefixes = set()
        for names in self.tensors.values():
            for canonical, source in names.items():
                index = layout.layer_index(canonical)
                if index is None:
                    relative = canonical.removeprefix(layout.root)
                    seen_prefixes.add(relative.split(".", 1)[0] + ".")
                    continue
                suffix = canonical.split(f"{layout.layers}{index}.", 1)[1]
                per_layer[index][suffix] = shapes[source]
        extra = sorted(i for i in per_layer if i >= self.num_layers)
        if extra:
            raise CheckpointError(
                f"the checkpoint has layer {extra[0]} but its config says {self.num_layers} layers"
            )
        missing = [i for i in range(self.num_layers) if i not in per_layer]
        if missing:
            raise CheckpointError(
                f"the checkpoint has no tensors for layer {missing[0]} "
                f"(its config says {self.num_layers} layers)"
            )
        reference = per_layer[0]
        for index in range(1, self.num_layers):
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
        self._check_vocabulary(shapes)

    def _check_vocabulary(self, shapes: dict[str, tuple[tuple[int, ...], str]]) -> None:
        """The input embedding and the head must both be `[vocab_size, hidden_size]`."""
        layout = self.adapter.layout
        vocab, hidden = self.config.get("vocab_size"), self.adapter.hidden_size(self.config)
        for canonical in filter(None, (layout.tied_to, layout.head)):
            source = self.tensors["bottom" if canonical == layout.tied_to else "top"].get(canonical)
            if source is None or vocab is None or hidden is None:
                continue
            if shapes[source][0] != (vocab, hidden):
                raise CheckpointError(
                    f"{canonical} has shape {list(shapes[source][0])}, but config.json says "
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
        check_storage_writable(storage_path)
    return PreparedSplit(name, plan)
