"""BERT (encoder): embeddings, `BertLayer`s, an optional pooler; bidirectional attention.

The top returns what `AutoModel` returns: the last hidden states and, where the checkpoint
has a pooler, the pooled output.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from splitcore.models.family import FamilyAdapter, LayerKwargs, TensorLayout

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import Cache, PreTrainedConfig
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    from splitcore.models.base import BaseSplitModel

POOLER_WEIGHT = "pooler.dense.weight"


class BertAdapter(FamilyAdapter):
    is_encoder = True
    supports_cache = False
    embedding_inputs = ("token_type_ids",)
    layout = TensorLayout(
        root="",
        embeddings=("embeddings.",),
        layers="encoder.layer.",
        final=(),
        optional_final=("pooler.",),
        # `BertFor*` checkpoints keep the encoder under `bert.`; their task heads are ignored.
        foreign_roots=("bert.",),
        # Old checkpoints persist these index buffers; they are not weights.
        ignored=r"embeddings\.(position_ids|token_type_ids)$",
    )

    def embedding_modules(self, config: PreTrainedConfig) -> dict[str, nn.Module]:
        from transformers.models.bert.modeling_bert import BertEmbeddings

        return {"embeddings": BertEmbeddings(config)}

    def make_layer(self, config: PreTrainedConfig, index: int) -> nn.Module:
        from transformers.models.bert.modeling_bert import BertLayer

        return BertLayer(config, layer_idx=index)

    def final_modules(
        self, config: PreTrainedConfig, available: Collection[str] | None
    ) -> dict[str, nn.Module]:
        from transformers.models.bert.modeling_bert import BertPooler

        has_pooler = available is None or POOLER_WEIGHT in available
        return {"pooler": BertPooler(config)} if has_pooler else {}

    def embed(
        self,
        bottom: BaseSplitModel,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        **inputs: Any,
    ) -> torch.Tensor:
        embeddings: torch.Tensor = bottom.part("embeddings")(
            input_ids=input_ids,
            token_type_ids=inputs.get("token_type_ids"),
            position_ids=position_ids,
        )
        return embeddings

    def layer_kwargs(
        self,
        component: BaseSplitModel,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: Cache | None,
    ) -> LayerKwargs:
        from transformers.masking_utils import create_bidirectional_mask

        mask = create_bidirectional_mask(component.config, hidden_states, attention_mask)
        return lambda index: {"attention_mask": mask}

    def finish(
        self, top: BaseSplitModel, hidden_states: torch.Tensor
    ) -> BaseModelOutputWithPooling:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        pooled = top.part("pooler")(hidden_states) if top.has_part("pooler") else None
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=pooled)


BERT = BertAdapter("bert", "Bert")
