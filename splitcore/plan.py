"""A split plan: which checkpoint tensors go into which component, checked before any write.

The plan is computed from tensor names and header shapes only, so both the library and the
streaming split (which never builds modules) share it, and bad input is refused before a
single byte reaches the storage volume.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from splitcore.checkpoint import Checkpoint, CheckpointError
from splitcore.models import get_adapter
from splitcore.models.family import FamilyAdapter
from splitcore.storage import COMPONENTS, Component


class SplitPointError(ValueError):
    """The split points do not cut the model into three non-empty parts."""


def check_split_points(split_point_1: int, split_point_2: int, num_layers: int) -> None:
    """Half-open ranges need `0 < split_point_1 < split_point_2 < num_layers`."""
    if not 0 < split_point_1 < split_point_2 < num_layers:
        raise SplitPointError(
            f"split points must satisfy 0 < split_point_1 < split_point_2 < {num_layers} "
            f"(the model has {num_layers} layers, so split_point_1 in 1..{num_layers - 2} and "
            f"split_point_2 in split_point_1+1..{num_layers - 1}); "
            f"got split_point_1={split_point_1}, split_point_2={split_point_2}"
        )


@dataclass
class SplitPlan:
    """For each component, its layer range and its tensors (canonical name -> source name)."""

    adapter: FamilyAdapter
    checkpoint: Checkpoint
    split_point_1: int
    split_point_2: int
    num_layers: int
    tensors: dict[Component, dict[str, str]] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.adapter.model_type

    @property
    def split_config(self) -> str:
        return f"{self.split_point_1}-{self.split_point_2}"

    @property
    def config(self) -> dict[str, Any]:
        return self.checkpoint.config

    def layer_range(self, component: Component) -> tuple[int, int]:
        bounds = (0, self.split_point_1, self.split_point_2, self.num_layers)
        index = COMPONENTS.index(component)
        return bounds[index], bounds[index + 1]

    def canonical_names(self) -> set[str]:
        return {name for names in self.tensors.values() for name in names}

    @classmethod
    def build(
        cls, model_type: str, checkpoint: Checkpoint, split_point_1: int, split_point_2: int
    ) -> SplitPlan:
        adapter = get_adapter(model_type, checkpoint.config)
        num_layers = adapter.num_layers(checkpoint.config)
        check_split_points(split_point_1, split_point_2, num_layers)
        plan = cls(adapter, checkpoint, split_point_1, split_point_2, num_layers)
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
            component = layout.component_of(canonical, self.split_point_1, self.split_point_2)
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
