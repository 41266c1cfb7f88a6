"""The component modules every model family shares: `BottomModel`, `TrunkModel`, `TopModel`.

Components keep the full model's tensor names (`transformer.h.7.attn.c_attn.weight`), so the
three state_dicts together are the full model's state_dict, and a layer keeps its global
index. What differs between families comes from their adapter (`family.FamilyAdapter`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from splitcore.storage import Component, TensorSummary, build_metadata, save_component

if TYPE_CHECKING:
    from transformers import Cache, PreTrainedConfig

    from splitcore.models.family import FamilyAdapter


def default_positions(inputs: torch.Tensor, past_length: int = 0) -> torch.Tensor:
    """Positions as transformers 5 computes them when none are given: `past + arange(T)`.

    `inputs` is `[B, T]` ids or `[B, T, H]` hidden states; the result broadcasts over the batch.
    With left padding, pass positions that follow the attention mask instead (as `generate` does).
    """
    positions = torch.arange(past_length, past_length + inputs.shape[1], device=inputs.device)
    return positions.unsqueeze(0)


@dataclass(frozen=True)
class SplitContext:
    """Where a component came from; recorded in its metadata when it is saved."""

    model_type: str
    source: str
    split_config: str
    config: Mapping[str, Any] = field(default_factory=dict)


class BaseSplitModel(nn.Module):
    """One component of a split model: a contiguous range of layers plus its ends."""

    adapter: ClassVar[FamilyAdapter]
    component: ClassVar[Component]

    def __init__(
        self,
        config: PreTrainedConfig,
        start_layer: int,
        end_layer: int,
        *,
        context: SplitContext | None = None,
        available_tensors: Collection[str] | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= start_layer < end_layer:
            raise ValueError(f"layer range [{start_layer}, {end_layer}) is empty")
        self.config = config
        self.start_layer = start_layer
        self.end_layer = end_layer
        self.context = context or SplitContext(
            model_type=str(config.model_type),
            source="",
            split_config=f"{start_layer}-{end_layer}",
            config=config.to_dict(),
        )
        layout = self.adapter.layout
        if self.component == "bottom":
            self._attach_all(self.adapter.embedding_modules(config))
        self._attach_all(self.adapter.shared_modules(config))
        layers = nn.ModuleDict(
            {str(i): self.adapter.make_layer(config, i) for i in range(start_layer, end_layer)}
        )
        self._attach(layout.root + layout.layers.rstrip("."), layers)
        if self.component == "top":
            self._attach_all(self.adapter.final_modules(config, available_tensors))
            if layout.head is not None:
                head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
                self._attach(layout.head.removesuffix(".weight"), head)

    def _attach_all(self, modules: Mapping[str, nn.Module]) -> None:
        for name, module in modules.items():
            self._attach(self.adapter.layout.root + name, module)

    def _attach(self, dotted_name: str, module: nn.Module) -> None:
        *parents, leaf = dotted_name.split(".")
        node: nn.Module = self
        for parent in parents:
            if not hasattr(node, parent):
                node.add_module(parent, nn.Module())
            node = getattr(node, parent)
        node.add_module(leaf, module)

    def part(self, name: str) -> nn.Module:
        """A submodule by its name relative to the family's root (`wte`, `norm`, ...)."""
        return self.get_submodule(self.adapter.layout.root + name)

    def has_part(self, name: str) -> bool:
        try:
            self.part(name)
        except AttributeError:
            return False
        return True

    @property
    def split_layers(self) -> nn.ModuleDict:
        """This component's layers, keyed by their global index."""
        layout = self.adapter.layout
        layers = self.get_submodule(layout.root + layout.layers.rstrip("."))
        assert isinstance(layers, nn.ModuleDict)
        return layers

    @property
    def num_layers(self) -> int:
        return self.end_layer - self.start_layer

    def new_cache(self) -> Cache:
        """An empty KV cache for this component's layers (decoder families only).

        The cache is indexed by global layer index, like the layers, so the cache of a trunk
        holds keys and values of the trunk's layers only.
        """
        if not self.adapter.supports_cache:
            raise TypeError(f"{type(self).__name__} is an encoder: it has no KV cache")
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    def positions(
        self, inputs: torch.Tensor, position_ids: torch.Tensor | None, cache: Cache | None
    ) -> torch.Tensor:
        """`position_ids` if given, else the next positions after what `cache` holds."""
        if position_ids is not None:
            return position_ids
        past_length = 0 if cache is None else cache.get_seq_length(self.start_layer)
        return default_positions(inputs, past_length)

    def run_layers(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """Run this component's layers; with `cache`, append their keys and values to it.

        With a cache, `attention_mask` covers the cached positions and the new ones
        (`[B, past + T]`), as in transformers' generation loop.
        """
        if cache is not None and not self.adapter.supports_cache:
            raise TypeError(f"{type(self).__name__} is an encoder: it takes no KV cache")
        positions = self.positions(hidden_states, position_ids, cache)
        kwargs_for = self.adapter.layer_kwargs(
            self, hidden_states, attention_mask, positions, cache
        )
        for index, layer in self.split_layers.items():
            output = layer(hidden_states, **kwargs_for(int(index)))
            hidden_states = output[0] if isinstance(output, tuple) else output
        return hidden_states

    def tensors(self) -> dict[str, torch.Tensor]:
        """The component's weights by their full-model names (its `state_dict`)."""
        return dict(self.state_dict())

    def save_split_model(self, save_path: str | Path, save_metadata: bool = True) -> None:
        """Write the component's `state_dict` (and `{stem}_metadata.json` beside it).

        The file is written atomically; a `.safetensors` suffix writes safetensors, anything
        else a `torch.save` state_dict that `torch.load(path, weights_only=True)` reads.
        """
        path = Path(save_path)
        file_format = "safetensors" if path.suffix == ".safetensors" else "pt"
        tensors = self.tensors()
        metadata = build_metadata(
            model_class=type(self).__name__,
            component=self.component,
            start_layer=self.start_layer,
            end_layer=self.end_layer,
            summary=TensorSummary.of(tensors),
            config=self.context.config,
            model_type=self.context.model_type,
            split_config=self.context.split_config,
            source=self.context.source,
            file_format=file_format,
        )
        save_component(tensors, path, metadata, save_metadata)


class BottomModel(BaseSplitModel):
    """Embeddings and layers `[0, split_point_1)`: `input_ids` in, hidden states out."""

    component: ClassVar[Component] = "bottom"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        **inputs: Any,
    ) -> torch.Tensor:
        """`input_ids [B, T]` -> hidden states `[B, T, H]` (see `run_layers` for `cache`)."""
        unexpected = set(inputs) - set(self.adapter.embedding_inputs)
        if unexpected:
            raise TypeError(
                f"{type(self).__name__} takes no {', '.join(sorted(unexpected))}; its extra "
                f"inputs are: {', '.join(self.adapter.embedding_inputs) or 'none'}"
            )
        positions = self.positions(input_ids, position_ids, cache)
        hidden_states = self.adapter.embed(self, input_ids, positions, **inputs)
        return self.run_layers(hidden_states, attention_mask, positions, cache)


class TrunkModel(BaseSplitModel):
    """Layers `[split_point_1, split_point_2)`: hidden states in, hidden states out."""

    component: ClassVar[Component] = "trunk"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """Hidden states `[B, T, H]` -> hidden states `[B, T, H]`."""
        return self.run_layers(hidden_states, attention_mask, position_ids, cache)


class TopModel(BaseSplitModel):
    """Layers `[split_point_2, L)`, the final norm and the head."""

    component: ClassVar[Component] = "top"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> Any:
        """Hidden states `[B, T, H]` -> the family's output (logits `[B, T, V]` for LMs)."""
        hidden_states = self.run_layers(hidden_states, attention_mask, position_ids, cache)
        return self.adapter.finish(self, hidden_states)


def component_class(adapter: FamilyAdapter, component: Component) -> type[BaseSplitModel]:
    """Create `GPT2BottomModel` and friends: the shared class bound to one adapter."""
    base = {"bottom": BottomModel, "trunk": TrunkModel, "top": TopModel}[component]
    name = adapter.class_name(component)
    return type(
        name, (base,), {"adapter": adapter, "__module__": "splitcore.models", "__qualname__": name}
    )
