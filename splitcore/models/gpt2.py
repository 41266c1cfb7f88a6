"""GPT-2: token + learned position embeddings, `GPT2Block`s, `ln_f`, a head tied to `wte`."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from splitcore.models.family import FamilyAdapter, LayerKwargs, TensorLayout

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import Cache, PreTrainedConfig

    from splitcore.models.base import BaseSplitModel


class GPT2Adapter(FamilyAdapter):
    layout = TensorLayout(
        root="transformer.",
        embeddings=("wte.", "wpe."),
        layers="h.",
        final=("ln_f.",),
        head="lm_head.weight",
        tied_to="transformer.wte.weight",
        # Old checkpoints persist the causal-mask buffers; they are not weights.
        ignored=r"\.attn\.(masked_)?bias$",
    )
    num_layers_keys = ("n_layer", "num_hidden_layers")
    hidden_size_keys = ("n_embd", "hidden_size")
    tie_default = True
    embedding_inputs = ("token_type_ids",)

    def embedding_modules(self, config: PreTrainedConfig) -> dict[str, nn.Module]:
        from torch import nn

        return {
            "wte": nn.Embedding(config.vocab_size, config.hidden_size),
            "wpe": nn.Embedding(config.max_position_embeddings, config.hidden_size),
            "drop": nn.Dropout(config.embd_pdrop),
        }

    def make_layer(self, config: PreTrainedConfig, index: int) -> nn.Module:
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        return GPT2Block(config, layer_idx=index)

    def final_modules(
        self, config: PreTrainedConfig, available: Collection[str] | None
    ) -> dict[str, nn.Module]:
        from torch import nn

        return {"ln_f": nn.LayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)}

    def embed(
        self,
        bottom: BaseSplitModel,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        **inputs: Any,
    ) -> torch.Tensor:
        token_type_ids: torch.Tensor | None = inputs.get("token_type_ids")
        wte = bottom.part("wte")
        hidden_states = wte(input_ids) + bottom.part("wpe")(position_ids)
        if token_type_ids is not None:
            hidden_states = hidden_states + wte(token_type_ids)
        output: torch.Tensor = bottom.part("drop")(hidden_states)
        return output

    def layer_kwargs(
        self,
        component: BaseSplitModel,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: Cache | None,
    ) -> LayerKwargs:
        from transformers.masking_utils import create_causal_mask

        if attention_mask is not None and attention_mask.ndim < 4:
            attention_mask = attention_mask.view(hidden_states.shape[0], -1)
        # Eager GPT-2 attention has no causal mask of its own: build it as GPT2Model does.
        # Positional arguments: the cache argument was renamed across transformers 5.x.
        mask = create_causal_mask(
            component.config,
            hidden_states,
            attention_mask,
            cache,
            position_ids,
            layer_idx=component.start_layer,
        )
        kwargs = {"attention_mask": mask, "position_ids": position_ids, "cache": cache}
        return lambda index: kwargs

    def finish(self, top: BaseSplitModel, hidden_states: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = top.get_submodule("lm_head")(top.part("ln_f")(hidden_states))
        return logits


GPT2 = GPT2Adapter("gpt2", "GPT2")
