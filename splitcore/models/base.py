"""The one split mechanism every model family shares.

A family adapter (`FamilyAdapter`) says three things about a model family:

* where its tensors live (`TensorLayout`: embeddings, numbered layers, final norm, head), which
  is all the streaming split needs;
* how to build its modules (embeddings, one layer, final modules), reusing the transformers
  classes of that family so the numerics are the family's own;
* how to run them (embed the inputs, build the masks and position inputs every layer needs,
  finish with the head).

`BottomModel`, `TrunkModel` and `TopModel` then work for every family. Components keep the
full model's tensor names (`transformer.h.7.attn.c_attn.weight`), so the three state_dicts
together are the full model's state_dict, and a layer keeps its global index.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from splitcore.storage import Component, TensorSummary, build_metadata, save_component

if TYPE_CHECKING:
    from transformers import PreTrainedConfig

LayerKwargs = Callable[[int], dict[str, Any]]


@dataclass(frozen=True)
class TensorLayout:
    """Where a family's tensors live, in the names of its full `*For*` model.

    `root` is the base-model prefix (`transformer.`, `model.`, or empty for BERT); the
    `embeddings`, `layers` and `final` prefixes are relative to it. `head` is the absolute name
    of the output head's weight, `tied_to` the tensor it falls back to when the checkpoint ties
    it (a tied checkpoint stores no head). `foreign_roots` are other prefixes checkpoints use
    for the same tensors (a `BertForMaskedLM` stores `bert.encoder...`).
    """

    root: str
    embeddings: tuple[str, ...]
    layers: str
    final: tuple[str, ...]
    optional_final: tuple[str, ...] = ()
    head: str | None = None
    tied_to: str | None = None
    foreign_roots: tuple[str, ...] = ()
    ignored: str | None = None

    def canonical(self, source_name: str) -> str | None:
        """Map a checkpoint tensor name to its canonical name, or None for non-weights."""
        if self.head is not None and source_name == self.head:
            return source_name
        if self.ignored is not None and re.search(self.ignored, source_name):
            return None
        relative = source_name
        for prefix in (self.root, *self.foreign_roots):
            if prefix and source_name.startswith(prefix):
                relative = source_name[len(prefix) :]
                break
        known = (*self.embeddings, self.layers, *self.final, *self.optional_final)
        return self.root + relative if relative.startswith(known) else None

    def layer_index(self, canonical_name: str) -> int | None:
        """The layer a canonical tensor belongs to, or None outside the numbered layers."""
        prefix = self.root + self.layers
        if not canonical_name.startswith(prefix):
            return None
        index = canonical_name[len(prefix) :].split(".", 1)[0]
        return int(index) if index.isdigit() else None

    def component_of(self, canonical_name: str, split_1: int, split_2: int) -> Component:
        """Which component owns a canonical tensor for the split points `split_1`, `split_2`."""
        index = self.layer_index(canonical_name)
        if index is not None:
            return "bottom" if index < split_1 else "trunk" if index < split_2 else "top"
        relative = canonical_name[len(self.root) :]
        return "bottom" if relative.startswith(self.embeddings) else "top"


class FamilyAdapter:
    """What one model family tells the shared mechanism; see the module docstring."""

    layout: ClassVar[TensorLayout]
    #: config.json keys holding the number of layers, first match wins.
    num_layers_keys: ClassVar[tuple[str, ...]] = ("num_hidden_layers",)
    #: config.json keys holding the hidden size, first match wins.
    hidden_size_keys: ClassVar[tuple[str, ...]] = ("hidden_size",)
    #: whether a checkpoint whose config omits `tie_word_embeddings` ties its head.
    tie_default: ClassVar[bool] = False
    #: encoders (BERT) pad on the right and are compared with `AutoModel`; decoders pad on
    #: the left and are compared with `AutoModelForCausalLM`.
    is_encoder: ClassVar[bool] = False

    def __init__(self, model_type: str, class_prefix: str) -> None:
        self.model_type = model_type
        self.class_prefix = class_prefix
        self.bottom_class, self.trunk_class, self.top_class = (
            _component_class(self, base) for base in (BottomModel, TrunkModel, TopModel)
        )

    def class_name(self, component: Component) -> str:
        return f"{self.class_prefix}{component.capitalize()}Model"

    def component_class(self, component: Component) -> type[BaseSplitModel]:
        return {"bottom": self.bottom_class, "trunk": self.trunk_class, "top": self.top_class}[
            component
        ]

    def num_layers(self, config: Mapping[str, Any]) -> int:
        layers = _first_int(config, self.num_layers_keys)
        if layers is None:
            raise ValueError(
                f"config.json of this {self.model_type} checkpoint has no layer count "
                f"({' or '.join(self.num_layers_keys)})"
            )
        return layers

    def hidden_size(self, config: Mapping[str, Any]) -> int | None:
        return _first_int(config, self.hidden_size_keys)

    def ties_head(self, config: Mapping[str, Any]) -> bool:
        return bool(config.get("tie_word_embeddings", self.tie_default))

    # Module construction: names are relative to `layout.root`.
    def embedding_modules(self, config: PreTrainedConfig) -> dict[str, nn.Module]:
        raise NotImplementedError

    def shared_modules(self, config: PreTrainedConfig) -> dict[str, nn.Module]:
        """Parameter-free modules every component needs (a rotary embedding, say)."""
        return {}

    def make_layer(self, config: PreTrainedConfig, index: int) -> nn.Module:
        raise NotImplementedError

    def final_modules(
        self, config: PreTrainedConfig, available: Collection[str] | None
    ) -> dict[str, nn.Module]:
        """The top's modules after the last layer, given the checkpoint's canonical names."""
        raise NotImplementedError

    # Forward pieces.
    def embed(
        self,
        bottom: BaseSplitModel,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None,
        **inputs: Any,
    ) -> torch.Tensor:
        raise NotImplementedError

    def layer_kwargs(
        self,
        component: BaseSplitModel,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> LayerKwargs:
        """Keyword arguments for layer `index`: masks and positions, as the full model builds."""
        raise NotImplementedError

    def finish(self, top: BaseSplitModel, hidden_states: torch.Tensor) -> Any:
        raise NotImplementedError


def _first_int(config: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def default_positions(hidden_states: torch.Tensor) -> torch.Tensor:
    """Positions as transformers 5 computes them without a cache: `arange(T)`, batch-broadcast."""
    return torch.arange(hidden_states.shape[1], device=hidden_states.device).unsqueeze(0)


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

    def run_layers(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        kwargs_for = self.adapter.layer_kwargs(self, hidden_states, attention_mask, position_ids)
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
        **inputs: Any,
    ) -> torch.Tensor:
        """`input_ids [B, T]` -> hidden states `[B, T, H]`."""
        hidden_states = self.adapter.embed(self, input_ids, position_ids, **inputs)
        return self.run_layers(hidden_states, attention_mask, position_ids)


class TrunkModel(BaseSplitModel):
    """Layers `[split_point_1, split_point_2)`: hidden states in, hidden states out."""

    component: ClassVar[Component] = "trunk"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states `[B, T, H]` -> hidden states `[B, T, H]`."""
        return self.run_layers(hidden_states, attention_mask, position_ids)


class TopModel(BaseSplitModel):
    """Layers `[split_point_2, L)`, the final norm and the head."""

    component: ClassVar[Component] = "top"

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> Any:
        """Hidden states `[B, T, H]` -> the family's output (logits `[B, T, V]` for LMs)."""
        hidden_states = self.run_layers(hidden_states, attention_mask, position_ids)
        return self.adapter.finish(self, hidden_states)


def _component_class(adapter: FamilyAdapter, base: type[BaseSplitModel]) -> type[BaseSplitModel]:
    """Create `GPT2BottomModel` and friends: the shared class bound to one adapter."""
    name = adapter.class_name(base.component)
    module = type(adapter).__module__
    return type(name, (base,), {"adapter": adapter, "__module__": module, "__qualname__": name})
