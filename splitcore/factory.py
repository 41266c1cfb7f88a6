"""`ModelFactory.create_split_models`: the guide's entry point, returning runnable modules."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, cast

from splitcore.checkpoint import CheckpointError
from splitcore.formats import TensorData
from splitcore.models.base import BaseSplitModel, BottomModel, SplitContext, TopModel, TrunkModel
from splitcore.plan import SplitPlan, prepare_split
from splitcore.storage import COMPONENTS, Component, SaveReport, StorageManager

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedConfig


def hf_config(config: Mapping[str, Any], attn_implementation: str | None) -> PreTrainedConfig:
    """The transformers config for a `config.json` document; remote code is never trusted."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"config.json has an unknown model_type {model_type!r}")
    result: PreTrainedConfig = CONFIG_MAPPING[model_type].from_dict(dict(config))
    # The same default as `from_pretrained`: SDPA where torch has it.
    result._attn_implementation = attn_implementation or "sdpa"
    return result


def to_torch(tensor: TensorData) -> torch.Tensor:
    """A torch tensor over the same bytes (a copy-on-write view of the mapped checkpoint)."""
    import torch

    dtype = getattr(torch, tensor.dtype)
    if tensor.numel == 0:
        return torch.empty(tensor.shape, dtype=dtype)
    return torch.frombuffer(tensor.data, dtype=dtype).reshape(tensor.shape)


def instantiate(
    model_class: type[BaseSplitModel],
    config: PreTrainedConfig,
    layers: tuple[int, int],
    state: Mapping[str, torch.Tensor],
    context: SplitContext,
    available: Collection[str],
) -> BaseSplitModel:
    """Build a component's modules and load `state` into them, strictly: every key, every shape."""
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is loaded below; random init would be wasted work
        module = model_class(config, *layers, context=context, available_tensors=available)
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as error:
        raise CheckpointError(f"the weights do not fit a {model_class.__name__}: {error}") from None
    return module.eval()


def build_component(
    plan: SplitPlan,
    component: Component,
    config: PreTrainedConfig,
    context: SplitContext,
) -> BaseSplitModel:
    """One component with exactly its tensors from the checkpoint."""
    names = plan.tensors[component]
    source_tensors = plan.checkpoint.read(set(names.values()), private=True)
    state = {canonical: to_torch(source_tensors[source]) for canonical, source in names.items()}
    return instantiate(
        plan.adapter.component_class(component),
        config,
        plan.layer_range(component),
        state,
        context,
        plan.canonical_names(),
    )


class ModelFactory:
    """Creates the three components of a split model (the guide's API)."""

    @staticmethod
    def create_split_models(
        model_type: str,
        model_name_or_path: str,
        split_point_1: int,
        split_point_2: int,
        device: str = "cpu",
        storage_path: str | None = None,
        auto_save: bool = False,
        *,
        model_name: str | None = None,
        file_format: str = "pt",
        attn_implementation: str | None = None,
        allow_pickle: bool = False,
    ) -> tuple[BottomModel, TrunkModel, TopModel]:
        """Split `model_name_or_path` into `(bottom, trunk, top)` at the two split points.

        Layers are half-open ranges: bottom `[0, split_point_1)`, trunk
        `[split_point_1, split_point_2)`, top `[split_point_2, num_layers)`. With
        `auto_save=True` the components and their metadata are written under `storage_path`
        in the guide's layout; otherwise nothing is written anywhere.
        """
        if auto_save and storage_path is None:
            raise ValueError("auto_save=True needs a storage_path to save into")
        prepared = prepare_split(
            model_name_or_path, model_type, split_point_1, split_point_2,
            model_name=model_name, file_format=file_format, allow_pickle=allow_pickle,
            storage_path=storage_path if auto_save else None,
        )  # fmt: skip
        name, plan = prepared.model_name, prepared.plan
        config = hf_config(plan.config, attn_implementation)
        context = SplitContext(
            model_type=plan.model_type,
            source=str(model_name_or_path),
            split_config=plan.split_config,
            config=plan.config,
        )
        components = [build_component(plan, c, config, context).to(device) for c in COMPONENTS]
        if auto_save:
            report = SaveReport(cast(str, storage_path))
            for module in components:
                path = StorageManager.get_split_model_path(
                    cast(str, storage_path), name, module.component, plan.split_config, file_format
                )
                module.save_split_model(path)
                report.saved(module.component, path)
            report.done()
        bottom, trunk, top = components
        return cast(BottomModel, bottom), cast(TrunkModel, trunk), cast(TopModel, top)
