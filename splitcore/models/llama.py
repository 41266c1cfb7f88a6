"""The Llama layout: `model.embed_tokens`, `model.layers`, `model.norm`, `lm_head`, rotary.

One adapter serves every family with that layout (Llama, Mistral, Qwen2, Qwen3). It builds the
family's own decoder layer, RMSNorm and rotary classes, so grouped-query attention, attention
biases, RoPE scaling (`rope_parameters`) and sliding windows behave as in the full model.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from splitcore.models.family import FamilyAdapter, LayerKwargs, TensorLayout

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import Cache, PreTrainedConfig

    from splitcore.models.base import BaseSplitModel

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


def layer_type(config: PreTrainedConfig, index: int) -> str:
    """The attention type of layer `index`, decided as the family's own model decides it.

    Qwen2/Qwen3 list it per layer in `layer_types`; Mistral slides on every layer whenever
    `sliding_window` is set; Llama never slides.
    """
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return str(layer_types[index])
    return SLIDING_ATTENTION if getattr(config, "sliding_window", None) else FULL_ATTENTION


class LlamaLayoutAdapter(FamilyAdapter):
    layout = TensorLayout(
        root="model.",
        embeddings=("embed_tokens.",),
        layers="layers.",
        final=("norm.",),
        head="lm_head.weight",
        tied_to="model.embed_tokens.weight",
    )
    tie_default = False

    def _class(self, suffix: str) -> Any:
        module = importlib.import_module(
            f"transformers.models.{self.model_type}.modeling_{self.model_type}"
        )
        return getattr(module, f"{self.class_prefix}{suffix}")

    def embedding_modules(self, config: PreTrainedConfig) -> dict[str, nn.Module]:
        from torch import nn

        return {
            "embed_tokens": nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        }

    def shared_modules(self, config: PreTrainedConfig) -> dict[str, nn.Module]:
        # `inv_freq` is in no state_dict: every component rebuilds it from the config.
        rotary: nn.Module = self._class("RotaryEmbedding")(config=config)
        return {"rotary_emb": rotary}

    def make_layer(self, config: PreTrainedConfig, index: int) -> nn.Module:
        layer: nn.Module = self._class("DecoderLayer")(config, index)
        return layer

    def final_modules(
        self, config: PreTrainedConfig, available: Collection[str] | None
    ) -> dict[str, nn.Module]:
        norm: nn.Module = self._class("RMSNorm")(config.hidden_size, eps=config.rms_norm_eps)
        return {"norm": norm}

    def embed(
        self,
        bottom: BaseSplitModel,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        **inputs: Any,
    ) -> torch.Tensor:
        embeds: torch.Tensor = bottom.part("embed_tokens")(input_ids)
        return embeds

    def layer_kwargs(
        self,
        component: BaseSplitModel,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: Cache | None,
    ) -> LayerKwargs:
        from transformers.masking_utils import (
            create_causal_mask,
            create_sliding_window_causal_mask,
        )

        config = component.config
        builders = {
            FULL_ATTENTION: create_causal_mask,
            SLIDING_ATTENTION: create_sliding_window_causal_mask,
        }
        types = {index: layer_type(config, index) for index in map(int, component.split_layers)}
        first_of_kind = {
            kind: min(i for i, k in types.items() if k == kind) for kind in types.values()
        }
        # Positional arguments: the cache argument was renamed across transformers 5.x.
        masks = {
            kind: builders[kind](
                config, hidden_states, attention_mask, cache, position_ids, layer_idx=first
            )
            for kind, first in first_of_kind.items()
        }
        rotary = component.part("rotary_emb")(hidden_states, position_ids)
        return lambda index: {
            "attention_mask": masks[types[index]],
            "position_embeddings": rotary,
            "position_ids": position_ids,
            "cache": cache,
        }

    def finish(self, top: BaseSplitModel, hidden_states: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = top.get_submodule("lm_head")(top.part("norm")(hidden_states))
        return logits


LLAMA = LlamaLayoutAdapter("llama", "Llama")
MISTRAL = LlamaLayoutAdapter("mistral", "Mistral")
QWEN2 = LlamaLayoutAdapter("qwen2", "Qwen2")
QWEN3 = LlamaLayoutAdapter("qwen3", "Qwen3")
