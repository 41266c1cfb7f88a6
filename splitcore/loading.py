"""Load saved components back: `load_component(path)` and `load_split(storage, name, split)`.

A component file holds only tensors; its `_metadata.json` holds what rebuilds the module around
them (family, config, layer range). Files are checked against the sha256 their metadata
records before anything is deserialized, and `.pt` files load with `weights_only=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from splitcore.models.base import BaseSplitModel, BottomModel, SplitContext, TopModel, TrunkModel
from splitcore.storage import (
    COMPONENTS,
    CorruptComponentError,
    StorageManager,
    load_weights,
    validate_component,
    validate_model_name,
    verified_metadata,
)

if TYPE_CHECKING:
    import torch

#: Formats tried, in order, when `load_split` is not told which one the files use.
FORMAT_PREFERENCE = ("pt", "safetensors")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A component's tensors. A `.pt` file is memory-mapped (`weights_only`): the weights are
    the file's pages, one copy shared with the page cache, not a second one in the heap."""
    if path.suffix != ".pt":
        return load_weights(path)
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(loaded, dict):
        raise CorruptComponentError(f"{path} does not hold a state_dict")
    return loaded


def load_component(
    path: str | Path, *, device: str = "cpu", attn_implementation: str | None = None
) -> BaseSplitModel:
    """The component module (bottom, trunk or top) saved at `path`, in eval mode on `device`.

    The family, config and layer range come from the metadata beside the file; the weights
    load strictly (every tensor, every shape).
    """
    from splitcore.factory import hf_config, instantiate
    from splitcore.models import get_adapter

    metadata = verified_metadata(path)
    component = validate_component(str(metadata["component"]))
    config_document = metadata["config"]
    adapter = get_adapter(str(metadata.get("model_type", "auto")), config_document)
    weights = read_tensors(Path(path))
    context = SplitContext(
        model_type=adapter.model_type,
        source=str(metadata.get("source", "")),
        split_config=str(metadata["split_config"]),
        config=config_document,
    )
    module = instantiate(
        adapter.component_class(component),
        hf_config(config_document, attn_implementation),
        (int(metadata["start_layer"]), int(metadata["end_layer"])),
        weights,
        context,
        set(weights),
    )
    return module.to(device)


def find_component_file(
    storage: str | Path, model_name: str, component: str, split_config: str
) -> Path:
    """The saved file of one component in the guide's layout, whichever format it was saved in."""
    candidates = [
        StorageManager.get_split_model_path(storage, model_name, component, split_config, fmt)
        for fmt in FORMAT_PREFERENCE
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no {component} of {model_name!r} split {split_config} in {storage}: "
        f"looked for {', '.join(str(c) for c in candidates)}"
    )


def load_split(
    storage: str | Path,
    model_name: str,
    split_config: str,
    *,
    device: str = "cpu",
    attn_implementation: str | None = None,
) -> tuple[BottomModel, TrunkModel, TopModel]:
    """`(bottom, trunk, top)` of `model_name` split at `split_config`, from `storage`.

    The three must describe one model: the same config, and layer ranges that follow each
    other; the chain `top(trunk(bottom(ids)))` then computes what the full model computes.
    """
    validate_model_name(model_name)
    modules = [
        load_component(
            find_component_file(storage, model_name, component, split_config),
            device=device,
            attn_implementation=attn_implementation,
        )
        for component in COMPONENTS
    ]
    bottom, trunk, top = modules
    if not bottom.context.config == trunk.context.config == top.context.config:
        raise CorruptComponentError(
            f"the components of {model_name!r} {split_config} describe different model configs"
        )
    ranges = [(m.start_layer, m.end_layer) for m in modules]
    if ranges[0][1] != ranges[1][0] or ranges[1][1] != ranges[2][0] or ranges[0][0] != 0:
        raise CorruptComponentError(
            f"the layer ranges {ranges} of {model_name!r} {split_config} do not follow each other"
        )
    return cast(BottomModel, bottom), cast(TrunkModel, trunk), cast(TopModel, top)
