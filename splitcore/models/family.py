"""What a model family tells the shared split mechanism, without importing torch.

A family adapter (`FamilyAdapter`) says three things about a model family:

* where its tensors live (`TensorLayout`: embeddings, numbered layers, final norm, head), which
  is all the streaming split needs: it moves bytes and never imports torch;
* how to build its modules (embeddings, one layer, final modules), reusing the transformers
  classes of that family so the numerics are the family's own;
* how to run them (embed the inputs, build the masks and position inputs every layer needs,
  finish with the head).

`BottomModel`, `TrunkModel` and `TopModel` in `base` then work for every family. Adapters
import torch and transformers inside their methods, so the registry stays cheap to import.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from splitcore.storage import COMPONENTS, Component

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import Cache, PreTrainedConfig

    from splitcore.models.base import BaseSplitModel

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
    #: inputs the bottom takes besides input_ids, attention_mask and position_ids.
    embedding_inputs: ClassVar[tuple[str, ...]] = ()
    #: encoders (BERT) pad on the right and are compared with `AutoModel`; decoders pad on
    #: the left and are compared with `AutoModelForCausalLM`.
    is_encoder: ClassVar[bool] = False
    #: whether the layers keep a KV cache (`Cache`) for generation; encoders do not.
    supports_cache: ClassVar[bool] = True

    def __init__(self, model_type: str, class_prefix: str) -> None:
        self.model_type = model_type
        self.class_prefix = class_prefix

    def class_name(self, component: Component) -> str:
        """`GPT2BottomModel`: the component classes' names, also written in metadata."""
        return f"{self.class_prefix}{component.capitalize()}Model"

    @cached_property
    def _component_classes(self) -> dict[Component, type[BaseSplitModel]]:
        from splitcore.models.base import component_class

        return {component: component_class(self, component) for component in COMPONENTS}

    def component_class(self, component: Component) -> type[BaseSplitModel]:
        """The `nn.Module` class of one component (created on first use; imports torch)."""
        return self._component_classes[component]

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
        position_ids: torch.Tensor,
        **inputs: Any,
    ) -> torch.Tensor:
        raise NotImplementedError

    def layer_kwargs(
        self,
        component: BaseSplitModel,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: Cache | None,
    ) -> LayerKwargs:
        """Keyword arguments for layer `index`: masks, positions and cache, as the full model.

        With a cache, masks are sized against the cache layers of this component (its first
        layer of each attention kind), which are the only ones it fills.
        """
        raise NotImplementedError

    def finish(self, top: BaseSplitModel, hidden_states: torch.Tensor) -> Any:
        raise NotImplementedError


def _first_int(config: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
